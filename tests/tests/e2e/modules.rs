//! The modules folder and the config: bad files are reported and skipped,
//! bad config stops start-up with a clear message.

use respawn_e2e::{Host, HostOptions, Transport, guest, respawn_bin};
use std::process::Command;

/// An empty but valid component: compiles, but is not our world.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
/// An empty core module.
const CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

#[tokio::test]
async fn bad_module_files_are_rejected_with_a_code_and_good_ones_serve() {
    let mut truncated = std::fs::read(guest("echo")).expect("echo");
    truncated.truncate(truncated.len() / 2);
    let host = Host::start_with(HostOptions {
        games: &["echo"],
        extra_modules: vec![
            ("garbage.wasm", b"this is not wasm".to_vec()),
            ("core.wasm", CORE_MODULE.to_vec()),
            ("empty.wasm", EMPTY_COMPONENT.to_vec()),
            ("truncated.wasm", truncated),
            ("Bad Name.wasm", std::fs::read(guest("chat")).expect("chat")),
            ("notes.txt", b"ignored".to_vec()),
        ],
        ..HostOptions::default()
    });
    let log = host.log();
    for (file, code) in [
        ("garbage.wasm", "not_a_component"),
        ("core.wasm", "not_a_component"),
        ("empty.wasm", "wrong_world"),
        ("truncated.wasm", "invalid_component"),
        ("Bad Name.wasm", "bad_file_name"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(code)),
            "{file} rejected as {code}:\n{log}"
        );
    }
    assert!(!log.contains("notes.txt"));
    let mut c = host.client(Transport::Tcp).await;
    c.join("echo", "r", "p").await;
    c.send(serde_json::json!({"type": "join", "game": "empty", "name": "p"}))
        .await;
    c.expect_error("already_joined").await;
    let mut d = host.client(Transport::Ws).await;
    d.send(serde_json::json!({"type": "join", "game": "garbage", "name": "p"}))
        .await;
    d.expect_error("unknown_game").await;
}

#[test]
fn a_bad_config_stops_start_up_with_the_key_named() {
    let dir = tempfile::tempdir().expect("tmp");
    for (text, expected) in [
        ("[net]\nmax_message_bytes = 1\n", "net.max_message_bytes"),
        ("[rooms]\nlinger = 5\n", "linger"),
        ("[net\n", "invalid"),
        ("[net]\nws = \"nowhere\"\n", "nowhere"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).expect("write");
        let out = Command::new(respawn_bin())
            .args(["serve", "--config"])
            .arg(&path)
            .output()
            .expect("run respawn");
        assert!(!out.status.success(), "{text:?} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{text:?}: {stderr}");
    }
    let out = Command::new(respawn_bin())
        .args(["serve", "--config", "/nonexistent/respawn.toml"])
        .output()
        .expect("run respawn");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/respawn.toml"));
}
