//! The compiled-code cache: wasmtime artifacts of verified modules, so a
//! restart does not recompile every version in the slots.
//!
//! Loading an artifact runs native code without further checks, so the cache
//! must be as trustworthy as the binary. Each artifact is keyed by the
//! SHA-256 of the signed module it was compiled from and by the engine's
//! settings, and carries an HMAC-SHA256 under a key only this host knows
//! (`<state>/cache.key`, mode 0600) over that digest, those settings and
//! the artifact: a file that was not written by this host, was changed
//! since, or was written for another module or engine and renamed, is
//! ignored and the module recompiled. The
//! module itself is verified against its signature before the cache is
//! consulted, like every load.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What the MAC is for, so it can never be mistaken for another of the
/// host's MACs under the same key.
const MAC_CONTEXT: &[u8] = b"respawn compiled-code cache v2";

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
            Ok(_) => {
                // A damaged key: every artifact becomes invalid. Moved
                // aside, not deleted: another host may be doing the same.
                match std::fs::rename(
                    &key_path,
                    key_path.with_extension(format!("damaged.{}", std::process::id())),
                ) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                Self::new_key(&key_path)?
            }
            Err(_) => Self::new_key(&key_path)?,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(Self {
            dir,
            key,
            engine: format!("{:016x}", h.finish()),
        })
    }

    /// A new key at `path`, or the one another host sharing the folder
    /// wrote first. The key is written whole under a name of its own and
    /// then linked into place, so a key at `path` is always complete.
    fn new_key(path: &Path) -> std::io::Result<[u8; 32]> {
        let key = crate::util::random_secret()?;
        let tmp = path.with_extension(format!("new.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        crate::util::write_private(&tmp, &key)?;
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path)?
                .try_into()
                .map_err(|_| std::io::Error::other("the code cache's key file is damaged")),
            Err(e) => Err(e),
        }
    }

    fn path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}-{}.cwasm", self.engine))
    }

    /// The cached component for a verified module's digest, if a valid
    /// artifact exists.
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let bytes = std::fs::read(self.path(digest)).ok()?;
        let (mac, artifact) = bytes.split_at_checked(32)?;
        if mac != self.mac(digest, artifact) {
            tracing::warn!(
                digest,
                "ignoring a cached artifact that this host did not write for this module"
            );
            return None;
        }
        // SAFETY: the artifact was written by `put` on this host for this
        // module digest and this engine configuration (the MAC binds all
        // three), from a module whose signature was verified before it was
        // compiled.
        unsafe { Component::deserialize(engine, artifact) }.ok()
    }

    /// Stores a component compiled from the verified module `digest`.
    pub fn put(&self, digest: &str, component: &Component) {
        let Ok(artifact) = component.serialize() else { return };
        let mut bytes = self.mac(digest, &artifact).to_vec();
        bytes.extend_from_slice(&artifact);
        if let Err(e) = crate::util::write_atomic(&self.path(digest), &bytes) {
            tracing::warn!(digest, "cannot cache compiled code: {e}");
        }
    }

    /// The MAC of an artifact compiled from `digest` by this engine. Each
    /// field is length-prefixed, so no two inputs run together alike.
    fn mac(&self, digest: &str, artifact: &[u8]) -> [u8; 32] {
        let mut h = hmac_sha256::HMAC::new(self.key);
        for field in [MAC_CONTEXT, digest.as_bytes(), self.engine.as_bytes(), artifact] {
            h.update((field.len() as u64).to_le_bytes());
            h.update(field);
        }
        h.finalize()
    }

    /// Forgets the artifact of a module that left the slots.
    pub fn remove(&self, digest: &str) {
        let _ = std::fs::remove_file(self.path(digest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_renamed_to_another_modules_name_is_refused() {
        let state = tempfile::tempdir().expect("temp dir");
        let engine = Engine::default();
        let cache = CodeCache::open(state.path(), &engine).expect("cache");
        let component = Component::new(&engine, crate::testing::guest("echo")).expect("compile");
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        cache.put(&a, &component);
        assert!(cache.get(&engine, &a).is_some(), "its own artifact loads");
        std::fs::copy(cache.path(&a), cache.path(&b)).expect("copy");
        assert!(cache.get(&engine, &b).is_none(), "the MAC binds the module digest");
        // Another engine's settings: the same file under this engine's name.
        let other = CodeCache {
            engine: "0123456789abcdef".into(),
            ..CodeCache::open(state.path(), &engine).expect("cache")
        };
        std::fs::copy(cache.path(&a), other.path(&a)).expect("copy");
        assert!(other.get(&engine, &a).is_none(), "the MAC binds the engine settings");
    }
}
