//! Fixtures for unit tests that need real compiled game code: a guest
//! built by `just guests`, signed with a throwaway key, verified and
//! compiled the way the host loads any module.

use crate::config::Config;
use crate::modules::{GameModule, Games, TrustStore, VerifiedModule, loader};
use crate::room::Rooms;
use crate::sandbox::Sandbox;
use respawn_signing::{Manifest, SecretKey};
use std::path::PathBuf;
use std::sync::Arc;

/// `target/guests/<name>.wasm`, built by `just guests`.
pub(crate) fn guest(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../target/guests/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `just guests` first", path.display()))
}

/// Component bytes signed as `game` at `version` and verified.
pub(crate) fn verified(component: &[u8], game: &str, version: &str) -> VerifiedModule {
    let key = SecretKey::generate().expect("key");
    let manifest = Manifest {
        name: game.into(),
        version: version.parse().expect("version"),
        author: "unit tests".into(),
        built_at: 0,
        notes: None,
    };
    let bytes = respawn_signing::embed_manifest(component, &manifest).expect("manifest");
    let signed = respawn_signing::sign(&bytes, &key).expect("sign");
    let trust = TrustStore::from_keys(vec![key.public()]);
    trust.verify(signed, std::path::Path::new("test.wasm")).expect("verify")
}

/// `guest` signed as `game` at `version`, verified and compiled.
pub(crate) fn module(sandbox: &Sandbox, guest_name: &str, game: &str, version: &str) -> Arc<GameModule> {
    let verified = verified(&guest(guest_name), game, version);
    Arc::new(loader::compile(sandbox, verified, None).expect("compile"))
}

/// A sandbox, a games registry with `echo` 1.0.0 active, and the rooms.
pub(crate) fn rooms_with_echo() -> (Arc<Rooms>, Arc<Games>) {
    let mut config = Config::default();
    config.sandbox.max_instances = 16;
    config.state.dir = std::env::temp_dir().join(format!("respawn-unit-{}", std::process::id()));
    let config = Arc::new(config);
    let sandbox = Arc::new(Sandbox::new(&config.sandbox).expect("sandbox"));
    let games = Arc::new(Games::new(config.slots.keep));
    let echo = module(&sandbox, "echo", "echo", "1.0.0");
    games.insert(echo);
    games
        .activate("echo", &"1.0.0".parse().expect("version"))
        .expect("activate");
    (Rooms::new(sandbox, games.clone(), config, None, None), games)
}
