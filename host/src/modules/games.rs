//! The registry: every game, its slots, and which version is active.
//! Promotion and rollback only move the active pointer here; rooms migrate
//! through [`crate::deploy`].

use super::slots::{Offer, Slots};
use super::{Rejection, VerifiedModule};
use crate::sandbox::GameCode;
use semver::Version;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One compiled, verified version of a game.
pub struct GameModule {
    /// The game's name, from the signed manifest.
    pub name: String,
    /// The version, from the signed manifest.
    pub version: Version,
    /// When this host compiled it.
    pub loaded_at: SystemTime,
    /// The compiled code rooms instantiate.
    pub code: GameCode,
    /// The verified bytes and manifest it was compiled from.
    pub source: VerifiedModule,
    /// How it behaves in its rooms.
    pub health: super::version_health::VersionHealth,
}

impl GameModule {
    /// SHA-256 of the signed bytes, hex.
    pub fn digest(&self) -> &str {
        self.source.digest()
    }
}

/// What `status` reports of one game.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GameStatus {
    /// The game.
    pub name: String,
    /// The active version.
    pub active: Option<String>,
    /// Whether updates wait for an explicit promotion.
    pub pinned: bool,
    /// Loaded versions, oldest first.
    pub versions: Vec<VersionStatus>,
    /// The version on probation, if one is (filled in by the caller).
    pub probation: Option<String>,
    /// A canary: the version new rooms go to, and their share in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// A canary: a share of newly created rooms runs a candidate version while
/// every other room stays on the active one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Canary {
    /// The candidate.
    pub version: String,
    /// Percent of new rooms (by a hash of the room's name) that get it.
    pub percent: u8,
}

/// Whether a room named `room` falls in a canary's `percent`.
pub fn in_canary(room: &str, percent: u8) -> bool {
    use sha2::Digest;
    let hash = sha2::Sha256::digest(room.as_bytes());
    u16::from_le_bytes([hash[0], hash[1]]) % 100 < u16::from(percent)
}

/// One loaded version in `status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct VersionStatus {
    /// Semantic version.
    pub version: String,
    /// SHA-256 of the signed bytes.
    pub digest: String,
    /// Fingerprint of the signing key.
    pub signer: Option<String>,
    /// From the manifest.
    pub author: String,
    /// From the manifest.
    pub notes: Option<String>,
    /// Live rooms running it (filled in by the caller).
    pub rooms: usize,
    /// Calls, failures, restarts and crashes of its rooms since it loaded.
    pub health: super::version_health::HealthCounts,
    /// Rolled back automatically; promoted again only by an operator.
    pub bad: bool,
    /// What the hot-fix gate found when it last replayed the game's crash
    /// capsules on this version (filled in by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::deploy::gate::GateSummary>,
}

struct Entry {
    slots: Slots<GameModule>,
    /// Held for writing while a game's rooms migrate, for reading while a
    /// room of the game is created: no room is created on a version that is
    /// about to be replaced or reverted.
    swap: Arc<tokio::sync::RwLock<()>>,
    /// New rooms' share that goes to a candidate version.
    canary: Option<(Version, u8)>,
}

/// All games.
pub struct Games {
    keep: usize,
    games: RwLock<BTreeMap<String, Entry>>,
}

/// A registry operation named a game or version that is not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// No such game.
    #[error("no game named `{0}`")]
    Game(String),
    /// No such version of the game.
    #[error("{0} has no version {1} loaded")]
    Version(String, Version),
    /// Nothing to roll back to.
    #[error("{0} has no version older than the active one loaded")]
    NoPrevious(String),
}

impl Games {
    /// An empty registry keeping `keep` versions per game.
    pub fn new(keep: usize) -> Self {
        Self {
            keep,
            games: RwLock::new(BTreeMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.games.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.games.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The active version of a game.
    pub fn active(&self, game: &str) -> Option<Arc<GameModule>> {
        self.read().get(game)?.slots.active().map(|(_, m)| m.clone())
    }

    /// The version a new room named `room` runs: the canary's for its
    /// share of rooms, else the active one.
    pub fn for_new_room(&self, game: &str, room: &str) -> Option<Arc<GameModule>> {
        let games = self.read();
        let entry = games.get(game)?;
        if let Some((version, percent)) = &entry.canary
            && in_canary(room, *percent)
            && let Some(m) = entry.slots.get(version)
        {
            return Some(m.clone());
        }
        entry.slots.active().map(|(_, m)| m.clone())
    }

    /// Starts (or, with `None`, ends) a game's canary.
    pub fn set_canary(&self, game: &str, canary: Option<(Version, u8)>) -> Result<(), LookupError> {
        let mut games = self.write();
        let entry = games.get_mut(game).ok_or_else(|| LookupError::Game(game.into()))?;
        entry.canary = canary;
        Ok(())
    }

    /// A game's canary, if one runs.
    pub fn canary(&self, game: &str) -> Option<(Version, u8)> {
        self.read().get(game)?.canary.clone()
    }

    /// A loaded version of a game.
    pub fn get(&self, game: &str, version: &Version) -> Result<Arc<GameModule>, LookupError> {
        let games = self.read();
        let entry = games.get(game).ok_or_else(|| LookupError::Game(game.into()))?;
        entry
            .slots
            .get(version)
            .cloned()
            .ok_or_else(|| LookupError::Version(game.into(), version.clone()))
    }

    /// The version a plain rollback goes back to.
    pub fn previous(&self, game: &str) -> Result<Version, LookupError> {
        let games = self.read();
        let entry = games.get(game).ok_or_else(|| LookupError::Game(game.into()))?;
        entry
            .slots
            .previous()
            .cloned()
            .ok_or_else(|| LookupError::NoPrevious(game.into()))
    }

    /// Names of games with an active version, sorted.
    pub fn names(&self) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, e)| e.slots.active().is_some())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Names of every game with a loaded version, active or not.
    pub fn loaded_names(&self) -> Vec<String> {
        self.read().keys().cloned().collect()
    }

    /// The game's swap lock (see [`Entry`]).
    pub fn swap_lock(&self, game: &str) -> Option<Arc<tokio::sync::RwLock<()>>> {
        self.read().get(game).map(|e| e.swap.clone())
    }

    /// Whether updates of the game wait for an explicit promotion.
    pub fn pinned(&self, game: &str) -> bool {
        self.read().get(game).is_some_and(|e| e.slots.pinned())
    }

    /// Pins or unpins a game.
    pub fn set_pinned(&self, game: &str, pinned: bool) -> Result<(), LookupError> {
        let mut games = self.write();
        let entry = games.get_mut(game).ok_or_else(|| LookupError::Game(game.into()))?;
        entry.slots.set_pinned(pinned);
        Ok(())
    }

    /// Whether a verified module may be added: `update` applies the
    /// no-downgrade rule of hot reloads. `Ok(false)`: already loaded.
    pub fn admit(&self, module: &VerifiedModule, update: bool) -> Result<bool, Rejection> {
        let m = module.manifest();
        let games = self.read();
        let Some(entry) = games.get(&m.name) else {
            return Ok(true);
        };
        match entry.slots.offer(&m.version, module.digest(), update) {
            Offer::New => Ok(true),
            Offer::AlreadyLoaded => Ok(false),
            Offer::Downgrade { active } => Err(Rejection::Downgrade {
                version: m.version.clone(),
                active,
            }),
            Offer::Conflict { existing } => Err(Rejection::VersionConflict {
                version: m.version.clone(),
                existing,
            }),
        }
    }

    /// Adds a compiled version (not active yet); returns the evicted
    /// versions with their digests.
    pub fn insert(&self, module: Arc<GameModule>) -> Vec<(Version, String)> {
        let mut games = self.write();
        let entry = games.entry(module.name.clone()).or_insert_with(|| Entry {
            slots: Slots::new(self.keep),
            swap: Arc::new(tokio::sync::RwLock::new(())),
            canary: None,
        });
        entry
            .slots
            .insert(module.version.clone(), module.digest().to_owned(), module)
    }

    /// Moves the active pointer; returns the module it pointed at before.
    /// This is the whole "flip": rooms migrate separately.
    pub fn activate(&self, game: &str, version: &Version) -> Result<Option<Arc<GameModule>>, LookupError> {
        let mut games = self.write();
        let entry = games.get_mut(game).ok_or_else(|| LookupError::Game(game.into()))?;
        let before = entry.slots.active().map(|(_, m)| m.clone());
        entry
            .slots
            .activate(version)
            .ok_or_else(|| LookupError::Version(game.into(), version.clone()))?;
        Ok(before)
    }

    /// Every loaded version of every game.
    pub fn modules(&self) -> Vec<Arc<GameModule>> {
        self.read()
            .values()
            .flat_map(|e| {
                e.slots
                    .versions()
                    .filter_map(|(v, _)| e.slots.get(v).cloned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// The newest loaded version of a game.
    pub fn newest(&self, game: &str) -> Option<Version> {
        self.read().get(game)?.slots.newest().cloned()
    }

    /// The newest loaded version of a game that `ok` accepts.
    pub fn newest_where(&self, game: &str, ok: impl Fn(&Version) -> bool) -> Option<Version> {
        let games = self.read();
        let entry = games.get(game)?;
        entry.slots.versions().map(|(v, _)| v).filter(|v| ok(v)).max().cloned()
    }

    /// Every game with its versions; `rooms` counts live rooms per
    /// `(game, digest)`.
    pub fn status(&self, rooms: impl Fn(&str, &str) -> usize) -> Vec<GameStatus> {
        self.read()
            .iter()
            .map(|(name, e)| GameStatus {
                name: name.clone(),
                active: e.slots.active().map(|(v, _)| v.to_string()),
                pinned: e.slots.pinned(),
                probation: None,
                canary: e.canary.as_ref().map(|(v, p)| Canary {
                    version: v.to_string(),
                    percent: *p,
                }),
                versions: e
                    .slots
                    .versions()
                    .filter_map(|(v, _)| e.slots.get(v).map(|m| (v, m)))
                    .map(|(v, m)| VersionStatus {
                        version: v.to_string(),
                        digest: m.digest().to_owned(),
                        signer: m.source.signer().map(str::to_owned),
                        author: m.source.manifest().author.clone(),
                        notes: m.source.manifest().notes.clone(),
                        rooms: rooms(name, m.digest()),
                        health: m.health.read(),
                        bad: false,
                        gate: None,
                    })
                    .collect(),
            })
            .collect()
    }
}
