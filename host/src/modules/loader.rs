//! Reads module files and turns verified modules into compiled game code.

use super::cache::CodeCache;
use super::{GameModule, Rejection, TrustStore, VerifiedModule};
use crate::sandbox::Sandbox;
use std::path::Path;
use std::time::SystemTime;

/// Largest module file the host reads.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// Reads a file and verifies it: signature first, then the manifest.
pub fn read_verified(trust: &TrustStore, path: &Path) -> Result<VerifiedModule, Rejection> {
    let size = std::fs::metadata(path).map_err(Rejection::Read)?.len();
    if size > MAX_MODULE_BYTES {
        return Err(Rejection::TooLarge(size));
    }
    let bytes = std::fs::read(path).map_err(Rejection::Read)?;
    trust.verify(bytes, path)
}

/// Compiles verified code (or takes it from `cache`) and checks it
/// implements our world. CPU-heavy: call it off the async runtime's worker
/// threads.
pub fn compile(sandbox: &Sandbox, module: VerifiedModule, cache: Option<&CodeCache>) -> Result<GameModule, Rejection> {
    let (code, cached) = sandbox.compile_cached(&module, cache).map_err(Rejection::Compile)?;
    if cached {
        tracing::debug!(game = %module.manifest().name, version = %module.manifest().version, "compiled code from the cache");
    }
    Ok(GameModule {
        name: module.manifest().name.clone(),
        version: module.manifest().version.clone(),
        loaded_at: SystemTime::now(),
        code,
        source: module,
        health: Default::default(),
    })
}
