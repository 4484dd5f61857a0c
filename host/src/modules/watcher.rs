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
        let mut debouncer = Debouncer::new(debounce);
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
            let next = if debouncer.is_idle() {
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
                    debouncer.forget(&p);
                    if !report(p, &mut reported).await {
                        return;
                    }
                }
                Some((p, false)) => debouncer.event(p, Instant::now()),
            }
            let size_of = |p: &Path| std::fs::metadata(p).ok().map(|m| m.len());
            for path in debouncer.due(Instant::now(), size_of) {
                if !report(path, &mut reported).await {
                    return;
                }
            }
        }
    });
    Ok((watcher, ready_rx))
}

/// The debounce of files written in place: a file is due once it has had
/// no event for the debounce period and its size is the same on two looks
/// that far apart. Pure (time and sizes come in), so it is tested without
/// sleeping.
#[derive(Debug)]
struct Debouncer {
    debounce: Duration,
    /// path -> (last event or size change, size at the last look)
    pending: HashMap<PathBuf, (Instant, Option<u64>)>,
}

impl Debouncer {
    fn new(debounce: Duration) -> Self {
        Self {
            debounce,
            pending: HashMap::new(),
        }
    }

    fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    /// The file changed at `now`.
    fn event(&mut self, path: PathBuf, now: Instant) {
        let size = self.pending.get(&path).and_then(|(_, s)| *s);
        self.pending.insert(path, (now, size));
    }

    /// A file reported by other means (renamed into place).
    fn forget(&mut self, path: &Path) {
        self.pending.remove(path);
    }

    /// The files complete at `now`; `size_of` looks at a file's size
    /// (`None`: gone). A file whose size moved is watched for another
    /// period.
    fn due(&mut self, now: Instant, size_of: impl Fn(&Path) -> Option<u64>) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        for (path, (last, size)) in self.pending.iter_mut() {
            if now.duration_since(*last) < self.debounce {
                continue;
            }
            let current = size_of(path);
            if current.is_none() || current == *size {
                ready.push(path.clone());
            } else {
                *size = current;
                *last = now;
            }
        }
        for path in &ready {
            self.pending.remove(path);
        }
        ready
    }
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

    #[test]
    fn a_file_is_due_only_after_a_quiet_period_and_a_stable_size() {
        let ms = Duration::from_millis;
        let t0 = Instant::now();
        let mut d = Debouncer::new(ms(100));
        let game = PathBuf::from("/m/game.wasm");
        let sizes = std::cell::RefCell::new(HashMap::from([(game.clone(), 10u64)]));
        let size_of = |p: &Path| sizes.borrow().get(p).copied();
        // Written every 40 ms: never due while the writes go on.
        for i in 0..4 {
            d.event(game.clone(), t0 + ms(40 * i));
            assert!(d.due(t0 + ms(40 * i + 39), size_of).is_empty());
        }
        // Quiet for the period: the first look only learns the size.
        assert!(d.due(t0 + ms(260), size_of).is_empty());
        // The size moved meanwhile (a write with no event yet): another
        // period.
        sizes.borrow_mut().insert(game.clone(), 20);
        assert!(d.due(t0 + ms(360), size_of).is_empty());
        assert!(d.due(t0 + ms(459), size_of).is_empty());
        // Same size a period later: due, once.
        assert_eq!(d.due(t0 + ms(460), size_of), vec![game.clone()]);
        assert!(d.due(t0 + ms(1000), size_of).is_empty());
        assert!(d.is_idle());
        // A file that vanished is due (the loader reports it missing), and
        // one renamed into place needs no debounce at all.
        d.event(PathBuf::from("/m/gone.wasm"), t0);
        d.event(game.clone(), t0);
        d.forget(&game);
        assert_eq!(d.due(t0 + ms(100), size_of), vec![PathBuf::from("/m/gone.wasm")]);
    }

    #[tokio::test]
    async fn a_file_renamed_into_place_is_reported_at_once_and_once() {
        let dir = tempfile::tempdir().unwrap();
        // A debounce far beyond the test: only a rename can report.
        let (_w, mut rx) = watch(dir.path(), Duration::from_secs(600)).unwrap();
        std::fs::write(dir.path().join(".hidden.wasm"), b"x").unwrap();
        std::fs::write(dir.path().join(".next.wasm.part"), b"complete").unwrap();
        std::fs::rename(dir.path().join(".next.wasm.part"), dir.path().join("next.wasm")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        assert_eq!(got.ok().flatten(), Some(dir.path().join("next.wasm")));
        // The hidden file was skipped and the publication reported once:
        // the next report is the next file.
        std::fs::write(dir.path().join(".other.wasm.part"), b"other").unwrap();
        std::fs::rename(dir.path().join(".other.wasm.part"), dir.path().join("other.wasm")).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
        assert_eq!(
            got.ok().flatten(),
            Some(dir.path().join("other.wasm")),
            "hidden files and repeats are skipped"
        );
    }
}
