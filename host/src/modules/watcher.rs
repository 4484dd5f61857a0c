//! Watches the modules folder and reports files once they are complete.
//!
//! A file renamed into place is reported at once: that is how to publish
//! (write `.game.wasm.part`, then rename it to `game.wasm`; names starting
//! with `.` and names not ending in `.wasm` are ignored). A file written in
//! place is reported after it has had no events for the debounce period
//! and its size is the same on two looks, so a file still being copied is
//! not read half-written.

use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Whether a path names a module the host should look at.
pub fn is_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    !name.starts_with('.') && name.ends_with(".wasm")
}

/// Starts watching `dir`. Complete files arrive on the returned channel;
/// keep the watcher alive as long as events are wanted.
pub fn watch(dir: &Path, debounce: Duration) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<PathBuf>)> {
    // (path, complete): a file renamed into place is complete at once.
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<(PathBuf, bool)>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_remove() || event.kind.is_access() {
            return;
        }
        let renamed = matches!(
            event.kind,
            EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Both))
        );
        // For a rename seen as one event, the destination is the last path.
        let paths = if renamed {
            event.paths.last().cloned().into_iter().collect()
        } else {
            event.paths
        };
        for path in paths {
            if is_candidate(&path) {
                let _ = raw_tx.send((path, renamed));
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;

    let (ready_tx, ready_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        // path -> (last event, size at the last look)
        let mut pending: HashMap<PathBuf, (Instant, Option<u64>)> = HashMap::new();
        // What was last reported per path, so the several events one
        // publication raises (rename, then create or close) report it once.
        let mut reported: HashMap<PathBuf, Stamp> = HashMap::new();
        let report = async |path: PathBuf, reported: &mut HashMap<PathBuf, Stamp>| -> bool {
            let now = stamp(&path);
            if now.is_none() || reported.get(&path) == now.as_ref() {
                return true;
            }
            if let Some(s) = now {
                reported.insert(path.clone(), s);
            }
            ready_tx.send(path).await.is_ok()
        };
        let step = (debounce / 2).max(Duration::from_millis(5));
        loop {
            let next = if pending.is_empty() {
                raw_rx.recv().await
            } else {
                match tokio::time::timeout(step, raw_rx.recv()).await {
                    Ok(p) => p,
                    Err(_) => Some((PathBuf::new(), false)),
                }
            };
            match next {
                None => return,
                Some((p, _)) if p.as_os_str().is_empty() => {}
                Some((p, true)) => {
                    pending.remove(&p);
                    if !report(p, &mut reported).await {
                        return;
                    }
                }
                Some((p, false)) => {
                    let size = pending.get(&p).and_then(|(_, s)| *s);
                    pending.insert(p, (Instant::now(), size));
                }
            }
            let now = Instant::now();
            let mut ready = Vec::new();
            for (path, (last, size)) in pending.iter_mut() {
                if now.duration_since(*last) < debounce {
                    continue;
                }
                let current = std::fs::metadata(path.as_path()).ok().map(|m| m.len());
                if current.is_none() || current == *size {
                    ready.push(path.clone());
                } else {
                    *size = current;
                    *last = now;
                }
            }
            for path in ready {
                pending.remove(&path);
                if !report(path, &mut reported).await {
                    return;
                }
            }
        }
    });
    Ok((watcher, ready_rx))
}

/// A file's identity for change detection: modification time and size.
type Stamp = (std::time::SystemTime, u64);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_visible_wasm_files_are_candidates() {
        assert!(is_candidate(Path::new("/m/chat.wasm")));
        assert!(!is_candidate(Path::new("/m/.chat.wasm")));
        assert!(!is_candidate(Path::new("/m/chat.wasm.part")));
        assert!(!is_candidate(Path::new("/m/notes.txt")));
    }

    #[tokio::test]
    async fn a_file_is_reported_once_it_stops_changing() {
        let dir = std::env::temp_dir().join(format!("respawn-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (_w, mut rx) = watch(&dir, Duration::from_millis(100)).unwrap();
        let path = dir.join("game.wasm");
        std::fs::write(&path, b"part one").unwrap();
        for i in 0..4 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            std::fs::write(&path, format!("still writing {i}")).unwrap();
            assert!(rx.try_recv().is_err(), "reported while still being written");
        }
        std::fs::write(dir.join(".hidden.wasm"), b"x").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        assert_eq!(got, Some(path));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(rx.try_recv().is_err(), "reported once, hidden files ignored");

        // Renamed into place: reported without waiting out the (here very
        // long) debounce period.
        let (_w2, mut rx2) = watch(&dir, Duration::from_secs(60)).unwrap();
        std::fs::write(dir.join(".next.wasm.part"), b"complete").unwrap();
        std::fs::rename(dir.join(".next.wasm.part"), dir.join("next.wasm")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), rx2.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(dir.join("next.wasm")),
            "a renamed file needs no debounce"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
