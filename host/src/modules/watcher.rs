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
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
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
    // Bounded: a flood of events marks the channel as overflowed instead,
    // and the folder is listed again once the flood has been read.
    let (raw_tx, mut raw_rx) = mpsc::channel::<(PathBuf, bool)>(RAW_EVENTS);
    let overflowed = Arc::new(AtomicBool::new(false));
    let flag = overflowed.clone();
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
            if is_candidate(&path) && raw_tx.try_send((path, renamed)).is_err() {
                flag.store(true, Ordering::Release);
            }
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let dir = dir.to_owned();
    // Files older than the watch were there at start-up, loaded (or
    // refused) then: a rescan after a flood looks only at newer ones.
    let since = std::time::SystemTime::now();

    let (ready_tx, ready_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut debouncer = Debouncer::new(debounce);
        // What was last reported per path, so the several events one
        // publication raises (rename, then create or close) report it once.
        let mut reported = Reported::default();
        let report = async |path: PathBuf, reported: &mut Reported| -> bool {
            if !reported.is_new(&path) {
                return true;
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
            // Events were dropped in a flood: every file counts as changed.
            if overflowed.swap(false, Ordering::AcqRel)
                && let Ok(entries) = std::fs::read_dir(&dir)
            {
                tracing::warn!(dir = %dir.display(), "too many file events at once; looking at the whole folder");
                let now = Instant::now();
                let changed = |p: &PathBuf| {
                    std::fs::metadata(p)
                        .and_then(|m| m.modified())
                        .is_ok_and(|t| t >= since)
                };
                for path in entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| is_candidate(p) && changed(p))
                {
                    debouncer.event(path, now);
                }
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

/// File events waiting to be looked at; beyond, the folder is rescanned.
const RAW_EVENTS: usize = 4096;

/// What was last reported per path, so the several events one publication
/// raises (rename, then create or close) report it once. Entries of files
/// that are gone are dropped whenever the map has doubled, so it holds
/// about as many entries as the folder has files.
#[derive(Default)]
struct Reported {
    stamps: HashMap<PathBuf, Stamp>,
    pruned_at: usize,
}

impl Reported {
    /// Whether `path` differs from what was last reported of it (and, if
    /// so, remembers it as reported).
    fn is_new(&mut self, path: &Path) -> bool {
        let Some(now) = stamp(path) else {
            return false;
        };
        if self.stamps.get(path) == Some(&now) {
            return false;
        }
        self.stamps.insert(path.to_owned(), now);
        if self.stamps.len() > (self.pruned_at * 2).max(256) {
            self.stamps.retain(|p, _| p.exists());
            self.pruned_at = self.stamps.len();
        }
        true
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

    #[test]
    fn the_map_of_reported_files_holds_about_the_files_that_exist() {
        let dir = tempfile::tempdir().unwrap();
        let mut reported = Reported::default();
        for i in 0..2000 {
            let path = dir.path().join(format!("g{i}.wasm"));
            std::fs::write(&path, b"x").unwrap();
            assert!(reported.is_new(&path));
            assert!(!reported.is_new(&path), "reported once");
            std::fs::remove_file(&path).unwrap();
        }
        assert!(
            reported.stamps.len() <= 512,
            "{} entries for no file",
            reported.stamps.len()
        );
    }

    #[tokio::test]
    async fn a_flood_of_files_is_bounded_in_events_and_every_file_is_still_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (_w, mut rx) = watch(dir.path(), Duration::from_millis(50)).unwrap();
        // Far more events than the channel holds: each file is written,
        // which raises create, modify and close events.
        let files = 3 * RAW_EVENTS;
        for i in 0..files {
            std::fs::write(dir.path().join(format!("m{i}.wasm")), b"module").unwrap();
        }
        let mut seen = std::collections::HashSet::new();
        while seen.len() < files {
            let got = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
            let path = got.ok().flatten().expect("every file is reported");
            assert!(seen.insert(path.clone()), "{} reported twice", path.display());
        }
    }
}
