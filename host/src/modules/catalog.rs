//! The games the host serves, each with its active compiled version.

use crate::sandbox::GameCode;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// One compiled, loaded version of a game.
pub struct GameModule {
    /// The game's name (from the file name until modules carry a signed
    /// manifest).
    pub name: String,
    /// What players see as the version.
    pub version: String,
    /// SHA-256 of the component bytes, hex.
    pub digest: String,
    /// Size of the component file.
    pub size: usize,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The compiled code rooms instantiate.
    pub code: GameCode,
}

/// Game name to active module. Rooms hold their own `Arc` to the module
/// they run, so replacing an entry never disturbs a live room.
#[derive(Default)]
pub struct Catalog {
    games: RwLock<BTreeMap<String, Arc<GameModule>>>,
}

impl Catalog {
    /// Makes `module` the active version of its game.
    pub fn insert(&self, module: GameModule) {
        let mut games = self.games.write().unwrap_or_else(|p| p.into_inner());
        games.insert(module.name.clone(), Arc::new(module));
    }

    /// The active version of a game.
    pub fn get(&self, game: &str) -> Option<Arc<GameModule>> {
        self.games
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(game)
            .cloned()
    }

    /// Names of all loaded games, sorted.
    pub fn names(&self) -> Vec<String> {
        self.games
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// How many games are loaded.
    pub fn len(&self) -> usize {
        self.games.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no game is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
