//! The slot store: accepted versions on disk, so the slots survive a
//! restart. Everything read back from here is verified again, like any
//! other file.

use super::GameModule;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What is persisted of a game besides its versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GameState {
    /// The active version.
    pub active: Option<semver::Version>,
    /// Whether updates wait for an explicit promotion.
    #[serde(default)]
    pub pinned: bool,
    /// Versions rolled back automatically: never promoted again without
    /// an operator asking.
    #[serde(default)]
    pub bad: std::collections::BTreeSet<semver::Version>,
    /// The highest version ever active: an older one that arrives later is
    /// loaded but never promoted by itself.
    #[serde(default)]
    pub high_water: Option<semver::Version>,
}

/// `<state>/slots/<game>/<version>.wasm` and `<state>/slots/<game>/state.json`.
pub struct SlotStore {
    dir: PathBuf,
}

impl SlotStore {
    /// Opens (creating) the store under the host's state folder.
    pub fn open(state_dir: &Path) -> std::io::Result<Self> {
        let dir = state_dir.join("slots");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn game_dir(&self, game: &str) -> PathBuf {
        self.dir.join(game)
    }

    /// Stores a version's signed bytes, unless already stored.
    pub fn save(&self, module: &GameModule) -> std::io::Result<()> {
        let dir = self.game_dir(&module.name);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{}.wasm", module.version));
        if path.exists() {
            return Ok(());
        }
        crate::util::write_atomic(&path, module.source.bytes())
    }

    /// Forgets a version that left the slots.
    pub fn remove(&self, game: &str, version: &semver::Version) {
        let _ = std::fs::remove_file(self.game_dir(game).join(format!("{version}.wasm")));
    }

    /// Every stored module file.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(games) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for game in games.filter_map(Result::ok) {
            if let Ok(files) = std::fs::read_dir(game.path()) {
                out.extend(
                    files
                        .filter_map(Result::ok)
                        .map(|f| f.path())
                        .filter(|p| p.extension().is_some_and(|x| x == "wasm")),
                );
            }
        }
        out.sort();
        out
    }

    /// Persists a game's active version and pin.
    pub fn save_state(&self, game: &str, state: &GameState) -> std::io::Result<()> {
        let dir = self.game_dir(game);
        std::fs::create_dir_all(&dir)?;
        let json = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
        crate::util::write_atomic(&dir.join("state.json"), &json)
    }

    /// A game's persisted state; default when none or unreadable.
    pub fn load_state(&self, game: &str) -> GameState {
        std::fs::read(self.game_dir(game).join("state.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }
}
