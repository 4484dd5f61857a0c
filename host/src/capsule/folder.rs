//! `<state>/capsules/`: one capsule per game and crash signature, and an
//! index (`index.json`) that counts how often each struck. A crash loop
//! writes one file and a count, not thousands of files; past
//! `capsules.keep` signatures the oldest go.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One crash signature of one game.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    /// The capsule's file name in the folder.
    pub file: String,
    /// The game.
    pub game: String,
    /// The crash signature.
    pub signature: String,
    /// The fault kind.
    pub kind: String,
    /// Faults with this signature since it was first seen.
    pub count: u64,
    /// Versions it struck on.
    pub versions: BTreeSet<String>,
    /// First and last time, Unix milliseconds.
    pub first_at_ms: u64,
    /// The last time.
    pub last_at_ms: u64,
    /// Whether the capsule file was written (it is not when the room's
    /// state could not be captured).
    #[serde(default)]
    pub written: bool,
    /// Its capsule is being written (one at a time per signature).
    #[serde(skip)]
    pub writing: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Index {
    kept: Vec<Kept>,
}

/// What [`Folder::note`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Noted {
    /// A new signature: write its capsule to this path.
    New(PathBuf),
    /// Seen before: only counted.
    Seen,
}

/// The capsule folder.
pub struct Folder {
    dir: PathBuf,
    keep: usize,
    index: Mutex<Index>,
    /// Held while files are written: one writer at a time in the folder
    /// (crash storms in many rooms write concurrently otherwise).
    io: Mutex<()>,
}

/// The capsule file name for a game's signature.
fn file_name(game: &str, signature: &str) -> String {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(format!("{game}\n{signature}").as_bytes());
    format!("{game}-{}.capsule", crate::util::hex(&hash[..8]))
}

impl Folder {
    /// The folder under `state_dir` (created on the first write), keeping
    /// at most `keep` signatures.
    pub fn open(state_dir: &Path, keep: usize) -> Self {
        let dir = state_dir.join("capsules");
        let index = match std::fs::read(dir.join("index.json")) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(dir = %dir.display(), "the capsule index does not read ({e}); counting starts over");
                Index::default()
            }),
            Err(_) => Index::default(),
        };
        Self {
            dir,
            keep: keep.max(1),
            index: Mutex::new(index),
            io: Mutex::new(()),
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Counts a fault; says whether its capsule should be written.
    pub fn note(&self, game: &str, version: &str, signature: &str, kind: &str, at_ms: u64) -> Noted {
        let mut index = crate::lock(&self.index);
        if let Some(k) = index
            .kept
            .iter_mut()
            .find(|k| k.game == game && k.signature == signature)
        {
            k.count += 1;
            k.last_at_ms = k.last_at_ms.max(at_ms);
            k.versions.insert(version.to_owned());
            // A capsule that could not be written last time is tried again.
            return if k.written || k.writing {
                Noted::Seen
            } else {
                k.writing = true;
                Noted::New(self.dir.join(&k.file))
            };
        }
        let file = file_name(game, signature);
        index.kept.push(Kept {
            file: file.clone(),
            game: game.to_owned(),
            signature: signature.to_owned(),
            kind: kind.to_owned(),
            count: 1,
            versions: BTreeSet::from([version.to_owned()]),
            first_at_ms: at_ms,
            last_at_ms: at_ms,
            written: false,
            writing: true,
        });
        Noted::New(self.dir.join(file))
    }

    /// Creates the folder, readable by the host's user only: capsules
    /// hold player messages and identities.
    fn create(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }

    /// Writes a capsule's bytes to `path` (from [`Noted::New`]), drops the
    /// oldest signatures beyond `keep`, and saves the index. Blocking.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let written = {
            let _io = crate::lock(&self.io);
            self.create().and_then(|()| crate::util::write_atomic(path, bytes))
        };
        let gone = {
            let mut index = crate::lock(&self.index);
            if let Some(k) = index.kept.iter_mut().find(|k| Some(&k.file) == name.as_ref()) {
                k.writing = false;
                k.written = written.is_ok();
            }
            written?;
            let mut gone = Vec::new();
            if index.kept.len() > self.keep {
                index.kept.sort_by_key(|k| std::cmp::Reverse(k.last_at_ms));
                gone = index.kept.split_off(self.keep);
            }
            gone
        };
        let _io = crate::lock(&self.io);
        for k in gone {
            let _ = std::fs::remove_file(self.dir.join(k.file));
        }
        self.save_locked()
    }

    /// The capsule for `path` will not be written after all (its replay
    /// failed to start): the next fault with its signature tries again.
    pub fn abandon(&self, path: &Path) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(k) = crate::lock(&self.index)
            .kept
            .iter_mut()
            .find(|k| Some(&k.file) == name.as_ref())
        {
            k.writing = false;
        }
    }

    /// Saves the index (the counts). Blocking.
    pub fn save(&self) -> std::io::Result<()> {
        let _io = crate::lock(&self.io);
        self.save_locked()
    }

    fn save_locked(&self) -> std::io::Result<()> {
        let text = {
            let index = crate::lock(&self.index);
            serde_json::to_vec_pretty(&*index).map_err(std::io::Error::other)?
        };
        self.create()?;
        crate::util::write_atomic(&self.dir.join("index.json"), &text)
    }

    /// Every kept signature, newest first.
    pub fn list(&self) -> Vec<Kept> {
        let mut kept = crate::lock(&self.index).kept.clone();
        kept.sort_by_key(|k| std::cmp::Reverse(k.last_at_ms));
        kept
    }

    /// A game's written capsules that struck within `max_age_ms` of
    /// `now_ms`, newest first, at most `limit`: what the hot-fix gate
    /// replays.
    pub fn recent(&self, game: &str, limit: usize, max_age_ms: u64, now_ms: u64) -> Vec<(Kept, PathBuf)> {
        self.list()
            .into_iter()
            .filter(|k| k.game == game && k.written && now_ms.saturating_sub(k.last_at_ms) <= max_age_ms)
            .take(limit)
            .map(|k| {
                let path = self.dir.join(&k.file);
                (k, path)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_capsule_per_signature_with_a_count() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::open(dir.path(), 2);
        let Noted::New(path) = f.note("g", "1.0.0", "trap:a", "trap", 10) else {
            panic!("a new signature is written")
        };
        f.write(&path, b"x").unwrap();
        assert_eq!(f.note("g", "1.0.1", "trap:a", "trap", 20), Noted::Seen);
        let kept = f.list();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].count, 2);
        assert_eq!(kept[0].versions.len(), 2);
        // Read back by a new host: the count goes on.
        f.save().unwrap();
        let again = Folder::open(dir.path(), 2);
        assert_eq!(again.note("g", "1.0.1", "trap:a", "trap", 30), Noted::Seen);
        assert_eq!(again.list()[0].count, 3);
    }

    #[test]
    fn the_folder_keeps_the_newest_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let f = Folder::open(dir.path(), 2);
        let mut paths = Vec::new();
        for (i, sig) in ["trap:a", "trap:b", "trap:c"].iter().enumerate() {
            let Noted::New(path) = f.note("g", "1", sig, "trap", i as u64) else {
                panic!()
            };
            f.write(&path, b"x").unwrap();
            paths.push(path);
        }
        assert!(!paths[0].exists(), "the oldest capsule goes");
        assert!(paths[1].exists() && paths[2].exists());
        let recent = f.recent("g", 10, u64::MAX, 3);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].0.signature, "trap:c");
        assert!(f.recent("g", 10, 0, 100).is_empty(), "too old for the gate");
        assert!(f.recent("other", 10, u64::MAX, 3).is_empty());
    }
}
