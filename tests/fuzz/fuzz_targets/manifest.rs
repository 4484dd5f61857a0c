//! The manifest section of a module: read and validated without panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_signing::read_manifest;

fuzz_target!(|module: &[u8]| {
    if let Ok(Some(manifest)) = read_manifest(module) {
        let _ = manifest.validate();
    }
});
