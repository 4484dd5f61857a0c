//! The modules folder and the config: bad files are reported and skipped,
//! bad config stops start-up with a clear message.

use respawn_e2e::{Host, HostOptions, Transport, guest, respawn_bin, sign_with, signed, test_key};
use std::process::Command;

/// An empty but valid component: compiles, but is not our world.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";
/// An empty core module.
const CORE_MODULE: &[u8] = b"\0asm\x01\x00\x00\x00";

#[tokio::test]
async fn bad_module_files_are_rejected_at_start_up_with_a_code_and_good_ones_serve() {
    let mut truncated = signed("echo", "broken", "1.0.0");
    truncated.truncate(truncated.len() / 2);
    let host = Host::start_with(HostOptions {
        games: &["echo"],
        extra_modules: vec![
            ("garbage.wasm", b"this is not wasm".to_vec()),
            ("core.wasm", CORE_MODULE.to_vec()),
            ("signed-core.wasm", sign_with(CORE_MODULE, test_key(), "core", "1.0.0")),
            ("empty.wasm", sign_with(EMPTY_COMPONENT, test_key(), "empty", "1.0.0")),
            ("unsigned.wasm", std::fs::read(guest("chat")).expect("chat")),
            ("truncated.wasm", truncated),
            // The file name means nothing: the signed manifest names the game.
            ("Not A Game Name.wasm", signed("tictactoe", "tictactoe", "1.0.0")),
            ("notes.txt", b"ignored".to_vec()),
        ],
        ..HostOptions::default()
    });
    let log = host.log();
    for (file, code) in [
        ("garbage.wasm", "not_wasm"),
        ("core.wasm", "unsigned"),
        ("signed-core.wasm", "not_a_component"),
        ("empty.wasm", "wrong_world"),
        ("unsigned.wasm", "unsigned"),
        ("truncated.wasm", "truncated"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(file) && l.contains(code)),
            "{file} rejected as {code}:\n{log}"
        );
        assert!(
            host.audit().iter().any(|e| e["event"] == "reject"
                && e["reason"] == code
                && e["file"].as_str().is_some_and(|f| f.ends_with(file))),
            "{file} audited as {code}"
        );
    }
    assert!(!log.contains("notes.txt"));
    let mut c = host.client(Transport::Tcp).await;
    c.join("tictactoe", "r", "p").await;
    let mut d = host.client(Transport::Ws).await;
    for game in ["empty", "core", "garbage", "chat"] {
        d.send(serde_json::json!({"type": "join", "game": game, "name": "p"}))
            .await;
        d.expect_error("unknown_game").await;
    }
    d.join("echo", "r", "p").await;
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
