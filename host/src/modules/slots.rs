//! The versions of one game the host keeps compiled, and which is active.
//! Pure bookkeeping; the registry ([`super::Games`]) adds locking.

use semver::Version;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What offering a version to the slots would do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Offer {
    /// A version not seen before.
    New,
    /// These exact bytes are already loaded under this version.
    AlreadyLoaded,
    /// Not above the active version (only refused for updates).
    Downgrade {
        /// The active version.
        active: Version,
    },
    /// Same version, different bytes.
    Conflict {
        /// Digest of the loaded bytes.
        existing: String,
    },
}

/// The last versions of one game. `T` is the compiled module (generic so the
/// rules are testable without compiling anything).
#[derive(Debug)]
pub struct Slots<T> {
    keep: usize,
    versions: BTreeMap<Version, (String, Arc<T>)>,
    active: Option<Version>,
    pinned: bool,
}

impl<T> Slots<T> {
    /// Empty slots keeping at most `keep` versions (at least 1).
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(1),
            versions: BTreeMap::new(),
            active: None,
            pinned: false,
        }
    }

    /// What inserting `version` with `digest` would do. Updates (hot
    /// reload) must be newer than the active version; start-up loads may be
    /// any version.
    pub fn offer(&self, version: &Version, digest: &str, update: bool) -> Offer {
        if let Some((existing, _)) = self.versions.get(version) {
            return if existing == digest {
                Offer::AlreadyLoaded
            } else {
                Offer::Conflict {
                    existing: existing.clone(),
                }
            };
        }
        match &self.active {
            Some(active) if update && version <= active => Offer::Downgrade { active: active.clone() },
            _ => Offer::New,
        }
    }

    /// Adds a version; returns the versions (and digests) evicted to stay
    /// within `keep`. The active version is never evicted.
    pub fn insert(&mut self, version: Version, digest: String, module: Arc<T>) -> Vec<(Version, String)> {
        self.versions.insert(version, (digest, module));
        let mut evicted = Vec::new();
        while self.versions.len() > self.keep {
            let oldest = self.versions.keys().find(|v| Some(*v) != self.active.as_ref()).cloned();
            match oldest {
                Some(v) => {
                    if let Some((digest, _)) = self.versions.remove(&v) {
                        evicted.push((v, digest));
                    }
                }
                None => break,
            }
        }
        evicted
    }

    /// Makes a loaded version active; returns the one it replaces.
    pub fn activate(&mut self, version: &Version) -> Option<Option<Version>> {
        if !self.versions.contains_key(version) {
            return None;
        }
        Some(self.active.replace(version.clone()))
    }

    /// The active version and its module.
    pub fn active(&self) -> Option<(&Version, &Arc<T>)> {
        let v = self.active.as_ref()?;
        self.versions.get(v).map(|(_, m)| (v, m))
    }

    /// A loaded version's module.
    pub fn get(&self, version: &Version) -> Option<&Arc<T>> {
        self.versions.get(version).map(|(_, m)| m)
    }

    /// The newest loaded version below the active one: what a rollback
    /// without `--to` goes back to.
    pub fn previous(&self) -> Option<&Version> {
        let active = self.active.as_ref()?;
        self.versions.range(..active).next_back().map(|(v, _)| v)
    }

    /// The newest loaded version.
    pub fn newest(&self) -> Option<&Version> {
        self.versions.keys().next_back()
    }

    /// Loaded versions, oldest first, with their digests.
    pub fn versions(&self) -> impl Iterator<Item = (&Version, &str)> {
        self.versions.iter().map(|(v, (d, _))| (v, d.as_str()))
    }

    /// Whether updates are loaded without being promoted.
    pub fn pinned(&self) -> bool {
        self.pinned
    }

    /// Pins or unpins.
    pub fn set_pinned(&mut self, pinned: bool) {
        self.pinned = pinned;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    fn slots(keep: usize, versions: &[&str]) -> Slots<()> {
        let mut s = Slots::new(keep);
        for ver in versions {
            s.insert(v(ver), format!("d-{ver}"), Arc::new(()));
        }
        s
    }

    #[test]
    fn offers_are_classified() {
        let mut s = slots(5, &["1.0.0", "1.1.0"]);
        s.activate(&v("1.1.0")).unwrap();
        assert_eq!(s.offer(&v("1.2.0"), "x", true), Offer::New);
        assert_eq!(s.offer(&v("1.1.0"), "d-1.1.0", true), Offer::AlreadyLoaded);
        assert_eq!(
            s.offer(&v("1.1.0"), "other", true),
            Offer::Conflict {
                existing: "d-1.1.0".into()
            }
        );
        assert_eq!(s.offer(&v("1.0.5"), "x", true), Offer::Downgrade { active: v("1.1.0") });
        assert_eq!(
            s.offer(&v("1.0.5"), "x", false),
            Offer::New,
            "start-up may load older versions"
        );
        assert_eq!(
            s.offer(&v("1.1.0-rc.1"), "x", true),
            Offer::Downgrade { active: v("1.1.0") }
        );
    }

    #[test]
    fn eviction_keeps_the_newest_and_the_active() {
        let mut s = slots(3, &["1.0.0"]);
        s.activate(&v("1.0.0")).unwrap();
        for ver in ["2.0.0", "3.0.0", "4.0.0"] {
            s.insert(v(ver), ver.into(), Arc::new(()));
        }
        let kept: Vec<String> = s.versions().map(|(v, _)| v.to_string()).collect();
        assert_eq!(kept, ["1.0.0", "3.0.0", "4.0.0"], "the active 1.0.0 survives");
        assert_eq!(
            s.insert(v("5.0.0"), "5".into(), Arc::new(())),
            vec![(v("3.0.0"), "3.0.0".to_owned())]
        );
    }

    #[test]
    fn previous_is_the_newest_below_active() {
        let mut s = slots(5, &["1.0.0", "1.1.0", "2.0.0"]);
        assert_eq!(s.previous(), None);
        assert_eq!(s.activate(&v("2.0.0")), Some(None));
        assert_eq!(s.previous(), Some(&v("1.1.0")));
        assert_eq!(s.activate(&v("1.0.0")), Some(Some(v("2.0.0"))));
        assert_eq!(s.previous(), None);
        assert_eq!(s.activate(&v("9.9.9")), None, "only loaded versions can be active");
        assert_eq!(s.newest(), Some(&v("2.0.0")));
    }
}
