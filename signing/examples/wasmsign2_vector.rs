//! Writes the wasmsign2 test vector of `tests/wasmsign2.rs`: an empty
//! component with a Respawn manifest, signed by wasmsign2 itself with a
//! fixed key. Run by hand: `cargo run -p respawn-signing --example
//! wasmsign2_vector`.

use respawn_signing::{Manifest, SecretKey, embed_manifest};
use std::io::Cursor;

fn main() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors");
    let seed = [7u8; 32];
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    let key = SecretKey::from_bytes(&[&[0x81u8][..], &seed, public.as_bytes()].concat()).expect("key");
    let manifest = Manifest {
        name: "vector".into(),
        version: "1.0.0".parse().expect("version"),
        author: "respawn tests".into(),
        built_at: 1_764_000_000,
        notes: None,
    };
    let input = embed_manifest(b"\0asm\x0d\x00\x01\x00", &manifest).expect("manifest");
    let sk = wasmsign2::SecretKey::from_bytes(&key.to_bytes()).expect("wasmsign2 key");
    let module = wasmsign2::Module::deserialize(&mut Cursor::new(&input)).expect("parse");
    let mut signed = Vec::new();
    sk.sign(module, None)
        .expect("sign")
        .serialize(&mut signed)
        .expect("serialize");
    for (name, bytes) in [
        ("unsigned.wasm", input),
        ("vector.key", key.to_bytes()),
        ("vector.pub", key.public().to_bytes()),
        ("signed-by-wasmsign2.wasm", signed),
    ] {
        std::fs::write(format!("{dir}/{name}"), bytes).expect("write");
    }
    println!("wrote the vector to {dir}");
}
