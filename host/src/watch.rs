//! Reloading files an operator may replace while the host runs (trusted
//! keys, ticket keys, the TLS certificate): their folders are watched
//! (renewals and Kubernetes secrets replace files, or whole symlinked
//! folders, rather than write them in place), and a burst of changes
//! leads to one reload once the folders are quiet.

use std::path::PathBuf;
use std::time::Duration;

/// How long the folders must be quiet before a reload.
const SETTLE: Duration = Duration::from_millis(200);

/// The longest a reload waits for quiet after the first change (a folder
/// may be written to all the time).
const SETTLE_MAX: Duration = Duration::from_secs(2);

/// Calls `reload` (off the async workers) after changes in `dirs`. `None`
/// if they cannot be watched (logged, naming `what`).
pub(crate) fn on_change(
    what: &'static str,
    dirs: Vec<PathBuf>,
    reload: impl Fn() + Send + Sync + 'static,
) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok_and(|event| !event.kind.is_access()) {
            let _ = tx.send(());
        }
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("cannot watch the {what}: {e}");
            return None;
        }
    };
    let mut dirs = dirs;
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        if let Err(e) = watcher.watch(dir, notify::RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), "cannot watch the {what}: {e}");
            return None;
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            let until = tokio::time::Instant::now() + SETTLE_MAX;
            while let Ok(Ok(Some(()))) = tokio::time::timeout_at(until, tokio::time::timeout(SETTLE, rx.recv())).await {
            }
            crate::blocking::blocking(&reload);
        }
    });
    Some(watcher)
}

/// The folder a file is in (`.` for a bare file name).
pub(crate) fn folder_of(file: &std::path::Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}
