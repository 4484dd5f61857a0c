//! The signing commands of the `respawn` binary, and the trust formats.

use respawn_e2e::{Host, HostOptions, Transport, guest, respawn_bin, workspace};
use std::process::Command;

fn respawn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(respawn_bin()).args(args).output().expect("run respawn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[tokio::test]
async fn keygen_sign_verify_inspect_and_serve_what_was_signed() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("studio");
    let (ok, out, err) = respawn(&["keygen", "--out", path(&key), "--comment", "studio"]);
    assert!(ok, "{err}");
    assert!(out.contains("SHA256:"), "{out}");
    let (ok, _, err) = respawn(&["keygen", "--out", path(&key)]);
    assert!(
        !ok && err.contains("not overwriting"),
        "keygen never overwrites a key: {err}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(key.with_extension("key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).expect("pub");
    assert!(public.starts_with("ssh-ed25519 "), "{public}");

    // A core wasm32-wasip1 module, straight from cargo: sign componentizes it.
    let core = workspace().join("target/wasm/wasm32-wasip1/guest/echo.wasm");
    let signed = dir.path().join("echo-signed.wasm");
    let (ok, out, err) = respawn(&[
        "sign",
        path(&core),
        "--key",
        path(&key.with_extension("key")),
        "--name",
        "parrot",
        "--version",
        "2.1.0",
        "--notes",
        "first release",
        "-o",
        path(&signed),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("parrot 2.1.0") && out.contains("componentized"), "{out}");

    let (ok, out, err) = respawn(&["verify", path(&signed), "--trust", path(&key.with_extension("pub"))]);
    assert!(ok, "{err}");
    assert!(
        out.contains("OK, parrot 2.1.0") && out.contains("the host would load it"),
        "{out}"
    );
    // Signed by a trusted key, but without a manifest: the host refuses it,
    // so verify does too; the signature alone is still checkable.
    let bare = dir.path().join("bare.wasm");
    let secret = respawn_signing::SecretKey::from_bytes(&std::fs::read(key.with_extension("key")).expect("key"))
        .expect("a wasmsign2 key pair");
    let bare_bytes =
        respawn_signing::sign(&std::fs::read(guest("echo")).expect("echo"), &secret).expect("signed, no manifest");
    std::fs::write(&bare, bare_bytes).expect("write");
    let (ok, _, err) = respawn(&["verify", path(&bare), "--trust", path(&key.with_extension("pub"))]);
    assert!(!ok && err.contains("no_manifest"), "{err}");
    let (ok, out, err) = respawn(&[
        "verify",
        "--signature-only",
        path(&bare),
        "--trust",
        path(&key.with_extension("pub")),
    ]);
    assert!(ok && out.contains("signature OK"), "{out}{err}");
    let other = dir.path().join("other");
    respawn(&["keygen", "--out", path(&other)]);
    let (ok, _, err) = respawn(&["verify", path(&signed), "--trust", path(&other.with_extension("pub"))]);
    assert!(!ok && err.contains("untrusted_signer"), "{err}");
    let (ok, _, err) = respawn(&[
        "verify",
        path(&guest("echo")),
        "--trust",
        path(&key.with_extension("pub")),
    ]);
    assert!(!ok && err.contains("unsigned"), "{err}");

    let (ok, out, err) = respawn(&["inspect", path(&signed)]);
    assert!(ok, "{err}");
    let info: serde_json::Value = serde_json::from_str(&out).expect("inspect JSON");
    assert_eq!(info["kind"], "component");
    assert_eq!(info["manifest"]["name"], "parrot");
    assert_eq!(info["manifest"]["notes"], "first release");
    assert_eq!(info["signature"]["hash_sets"][0]["signatures"], 1);

    // A host trusting the key as an inline OpenSSH line serves the game.
    let host = Host::start_with(HostOptions {
        games: &[],
        config: &format!("[trust]\nkeys = [{:?}]\n", public.trim()),
        extra_modules: vec![("anything.wasm", std::fs::read(&signed).expect("signed"))],
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    assert_eq!(c.join("parrot", "r", "p").await["version"], "2.1.0");
    c.message(serde_json::json!({"hi": 1})).await;
    assert_eq!(c.event().await, serde_json::json!({"hi": 1}));
}

#[test]
fn wasmsign2_key_files_are_trusted_too() {
    // vector.pub is wasmsign2's binary public key encoding.
    let vectors = workspace().join("signing/tests/vectors");
    let (ok, out, err) = respawn(&[
        "verify",
        path(&vectors.join("signed-by-wasmsign2.wasm")),
        "--trust",
        path(&vectors.join("vector.pub")),
        // A signing test vector, not a game: the signature is what counts.
        "--signature-only",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("vector 1.0.0"), "{out}");
}

#[test]
fn a_bad_trusted_key_stops_start_up() {
    let result = Host::try_start(HostOptions {
        games: &[],
        config: "[trust]\nkeys = [\"ssh-ed25519 not-base64!\"]\n",
        ..HostOptions::default()
    });
    let Err((_, log)) = result else {
        panic!("the host started with a broken trusted key");
    };
    assert!(log.contains("trust.keys[0]"), "{log}");
}

#[tokio::test]
async fn connect_talks_to_the_tcp_port_without_nc() {
    use std::io::Write;
    let host = Host::start();
    let mut child = Command::new(respawn_bin())
        .args(["connect", &host.tcp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("respawn connect");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, r#"{{"type":"ping","ref":1}}"#).expect("write");
    writeln!(stdin, r#"{{"type":"join","game":"echo","name":"term"}}"#).expect("write");
    writeln!(stdin, r#"{{"type":"message","data":{{"hi":1}}}}"#).expect("write");
    // Stdin ends: it waits for the host's answers, then exits.
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("output");
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["welcome", "pong", "joined", "event"], "{lines:?}");
    assert_eq!(lines[3]["data"]["hi"], 1);
}
