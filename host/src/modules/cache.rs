//! The compiled-code cache: wasmtime artifacts of verified modules, so a
//! restart does not recompile every version in the slots.
//!
//! Loading an artifact runs native code without further checks, so the cache
//! must be as trustworthy as the binary. Each artifact is keyed by the
//! SHA-256 of the signed module it was compiled from and by the engine's
//! settings, and carries an HMAC-SHA256 under a key only this host knows
//! (`<state>/cache.key`, mode 0600): a file that was not written by this
//! host, or was changed since, is ignored and the module recompiled. The
//! module itself is verified against its signature before the cache is
//! consulted, like every load.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Artifacts of compiled components.
pub struct CodeCache {
    dir: PathBuf,
    key: [u8; 32],
    engine: String,
}

impl CodeCache {
    /// Opens (creating) the cache under the state folder.
    pub fn open(state_dir: &Path, engine: &Engine) -> std::io::Result<Self> {
        let dir = state_dir.join("cache");
        std::fs::create_dir_all(&dir)?;
        let key_path = state_dir.join("cache.key");
        let key = match std::fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                key
            }
            _ => {
                // A missing or damaged key: every artifact becomes invalid.
                let _ = std::fs::remove_file(&key_path);
                let key = super::store::random_secret()?;
                super::store::write_private(&key_path, &key)?;
                key
            }
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir,
            key,
            engine: format!("{:016x}", h.finish()),
        })
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine))
    }

    /// The cached component for a verified module's digest, if a valid
    /// artifact exists.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        let (mac, artifact) = bytes.split_at_checked(32)?;
        if mac != hmac_sha256::HMAC::mac(artifact, self.key) {
            tracing::warn!(digest, "ignoring a cached artifact that this host did not write");
            return None;
        }
        // SAFETY: the artifact was written by `put` on this host (the MAC
        // proves it) for this engine configuration (the file name), from a
        // module whose signature was verified before it was compiled.
        unsafe { Component::deserialize(engine, artifact) }.ok()
    }

    /// Stores a component compiled from the verified module `digest`.
    pub fn put(&self, digest: &str, component: &Component) {
        let Ok(artifact) = component.serialize() else { return };
        let mut bytes = hmac_sha256::HMAC::mac(&artifact, self.key).to_vec();
        bytes.extend_from_slice(&artifact);
        if let Err(e) = super::store::write_atomic(&self.path(digest), &bytes) {
            tracing::warn!(digest, "cannot cache compiled code: {e}");
        }
    }

    /// Forgets the artifact of a module that left the slots.
    pub fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}
