//! A module file before anything trusts it: the section walk and the
//! signature check never panic, and never accept what the key did not sign.
#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_signing::{PublicKey, kind, signature_info, verify};
use std::sync::OnceLock;

fn key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    // A fresh key whose secret is dropped at once: nothing the fuzzer
    // makes can carry its signature.
    KEY.get_or_init(|| respawn_signing::SecretKey::generate().expect("key").public())
}

fuzz_target!(|module: &[u8]| {
    let _ = kind(module);
    let _ = signature_info(module);
    // Random bytes cannot carry a valid signature of this key: a success
    // would be a forgery.
    assert!(verify(module, std::slice::from_ref(key())).is_err());
});
