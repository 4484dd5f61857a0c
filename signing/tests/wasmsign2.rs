//! Interoperability with wasmsign2, the reference implementation of the
//! tool-conventions signature format: both directions, live, plus a vector
//! made by wasmsign2 and committed (so the format cannot drift silently).

use respawn_signing::{PublicKey, SecretKey, sign, verify};
use std::io::Cursor;

/// A component (empty, with a Respawn manifest) signed by wasmsign2 0.2.8
/// with the key in `vector.key`, written by `cargo run -p respawn-signing
/// --example wasmsign2_vector`; see `vector_is_what_wasmsign2_produces`.
const VECTOR: &[u8] = include_bytes!("vectors/signed-by-wasmsign2.wasm");
const VECTOR_KEY: &[u8] = include_bytes!("vectors/vector.key");
const VECTOR_PUB: &[u8] = include_bytes!("vectors/vector.pub");
const VECTOR_INPUT: &[u8] = include_bytes!("vectors/unsigned.wasm");

fn real_component() -> Vec<u8> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/guests/null.wasm");
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e} (run `just guests` first)"))
}

fn wasmsign2_sign(module: &[u8], key: &SecretKey) -> Vec<u8> {
    let sk = wasmsign2::SecretKey::from_bytes(&key.to_bytes()).expect("wasmsign2 reads our key file");
    let m = wasmsign2::Module::deserialize(&mut Cursor::new(module)).expect("wasmsign2 parses");
    let signed = sk.sign(m, None).expect("wasmsign2 signs");
    let mut out = Vec::new();
    signed.serialize(&mut out).expect("serialize");
    out
}

fn wasmsign2_verifies(module: &[u8], key: &PublicKey) -> bool {
    let pk = wasmsign2::PublicKey::from_bytes(&key.to_bytes()).expect("wasmsign2 reads our public key");
    pk.verify(&mut Cursor::new(module), None).is_ok()
}

#[test]
fn what_we_sign_wasmsign2_verifies_and_the_other_way_round() {
    let key = SecretKey::generate().unwrap();
    let component = real_component();
    let ours = sign(&component, &key).unwrap();
    assert!(wasmsign2_verifies(&ours, &key.public()));
    let theirs = wasmsign2_sign(&component, &key);
    assert_eq!(verify(&theirs, &[key.public()]), Ok(key.public()));
    // Ed25519 is deterministic and both encode canonically: same bytes.
    assert_eq!(ours, theirs);

    let mut tampered = theirs.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 1;
    assert!(!wasmsign2_verifies(&tampered, &key.public()));
    assert!(verify(&tampered, &[key.public()]).is_err());
}

#[test]
fn the_committed_wasmsign2_vector_verifies() {
    let pk = PublicKey::parse(VECTOR_PUB).unwrap();
    assert_eq!(verify(VECTOR, &[pk]), Ok(pk));
    let manifest = respawn_signing::read_manifest(VECTOR).unwrap().unwrap();
    assert_eq!(manifest.name, "vector");
    assert_eq!(manifest.version.to_string(), "1.0.0");
}

#[test]
fn vector_is_what_wasmsign2_produces() {
    let key = SecretKey::from_bytes(VECTOR_KEY).unwrap();
    assert_eq!(key.public(), PublicKey::parse(VECTOR_PUB).unwrap());
    assert_eq!(wasmsign2_sign(VECTOR_INPUT, &key), VECTOR);
    assert_eq!(sign(VECTOR_INPUT, &key).unwrap(), VECTOR);
}
