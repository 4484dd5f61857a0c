//! Trust that changes: a high-water mark against downgrades, keys bound to
//! games, and a trust folder whose changes take effect without a restart.

use respawn_e2e::{Host, HostOptions, signed, test_key};

fn faulty_v2_active() -> Host {
    Host::start_with(HostOptions {
        games: &["faulty"],
        extra_modules: vec![("faulty-2.wasm", signed("faulty-v2", "faulty", "2.0.0"))],
        ..HostOptions::default()
    })
}

#[tokio::test]
async fn an_older_version_after_a_rollback_is_loaded_but_never_promoted_by_itself() {
    let host = faulty_v2_active();
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let (ok, _, err) = host.cli(&["rollback", "faulty"]);
    assert!(ok, "{err}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    // 1.5.0 is above the active version but below the high-water mark
    // (2.0.0 was active): stored, not promoted.
    host.drop_module("faulty-1.5.wasm", &signed("faulty", "faulty", "1.5.0"));
    host.wait_until("1.5.0 is loaded", |h| {
        h.audit()
            .iter()
            .any(|e| e["event"] == "load" && e["version"] == "1.5.0")
    })
    .await;
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    assert!(
        host.log()
            .contains("loaded, not promoted: a newer version was active before")
    );
    // An operator can still choose it.
    let (ok, _, err) = host.cli(&["promote", "faulty", "1.5.0"]);
    assert!(ok, "{err}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.5.0"));
    // The mark survives a restart: 1.6.0 waits too; 2.1.0 goes live.
    let host = host.restart();
    host.drop_module("faulty-1.6.wasm", &signed("faulty", "faulty", "1.6.0"));
    host.wait_until("1.6.0 is loaded", |h| {
        h.audit()
            .iter()
            .any(|e| e["event"] == "load" && e["version"] == "1.6.0")
    })
    .await;
    assert_eq!(host.active("faulty").as_deref(), Some("1.5.0"));
    host.drop_module("faulty-2.1.wasm", &signed("faulty-v2", "faulty", "2.1.0"));
    host.wait_until("2.1.0 is active", |h| h.active("faulty").as_deref() == Some("2.1.0"))
        .await;
}

#[tokio::test]
async fn removing_a_key_from_the_trust_folder_revokes_it_without_a_restart() {
    let host = faulty_v2_active();
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let key = host.trust_dir().join("test.pub");
    let saved = std::fs::read(&key).expect("key");
    std::fs::remove_file(&key).expect("remove the key");
    let changed = host.wait_for_audit("trust_changed", Some("key_removed")).await;
    let fingerprint = test_key().public().fingerprint();
    assert!(changed["detail"].as_str().unwrap().contains(&fingerprint), "{changed}");
    // Its modules are refused from their next load on...
    host.drop_module("faulty-3.wasm", &signed("faulty", "faulty", "3.0.0"));
    let refused = host.wait_for_audit("reject", Some("untrusted_signer")).await;
    assert_eq!(
        refused["version"],
        serde_json::Value::Null,
        "refused before its manifest counts"
    );
    // ...and no version it signed is rolled back to.
    let (ok, stdout, stderr) = host.cli(&["rollback", "faulty"]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("untrusted_signer"), "{stderr}");
    assert_eq!(host.active("faulty").as_deref(), Some("2.0.0"));
    // Put back: trusted again, the next version loads.
    std::fs::write(&key, saved).expect("restore the key");
    host.wait_for_audit("trust_changed", Some("key_added")).await;
    host.drop_module("faulty-4.wasm", &signed("faulty-v2", "faulty", "4.0.0"));
    host.wait_until("4.0.0 is active", |h| h.active("faulty").as_deref() == Some("4.0.0"))
        .await;
}

#[tokio::test]
async fn a_key_bound_to_some_games_cannot_sign_others() {
    let fingerprint = test_key().public().fingerprint();
    let config = format!("[trust.scopes]\n{fingerprint:?} = [\"echo\"]\n");
    let host = Host::start_with(HostOptions {
        games: &["echo", "faulty"],
        config: &config,
        ..HostOptions::default()
    });
    assert_eq!(host.active("echo").as_deref(), Some("1.0.0"));
    assert_eq!(host.active("faulty"), None);
    let refused = host.wait_for_audit("reject", Some("signer_not_allowed")).await;
    assert!(refused["detail"].as_str().unwrap().contains("`faulty`"), "{refused}");
}
