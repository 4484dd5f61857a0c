//! Signed modules, hot swap with state, rollback, pin, restart: a real host,
//! real signed guests, real files dropped into the watched folder.

use respawn_e2e::{Client, Host, HostOptions, Transport, guest, sign_with, signed, test_key};
use respawn_signing::SecretKey;
use serde_json::{Value, json};
use std::time::Duration;

fn faulty_host() -> Host {
    Host::start_with(HostOptions {
        games: &["faulty", "echo"],
        ..HostOptions::default()
    })
}

async fn count(c: &mut Client) -> u64 {
    c.message(json!({"do": "count"})).await;
    c.event().await["count"].as_u64().unwrap_or_default()
}

/// The next `swapped` frame, skipping events.
async fn swapped(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "swapped" {
            return f;
        }
        assert_eq!(f["type"], "event", "unexpected frame {f}");
    }
}

fn rejections(host: &Host, code: &str) -> u64 {
    host.status()["counters"]["rejections"][code].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn every_bad_update_is_rejected_with_its_reason_and_changes_nothing() {
    let host = faulty_host();
    let mut p = host.client(Transport::Tcp).await;
    p.join("faulty", "live", "p").await;
    assert_eq!(count(&mut p).await, 1);

    let good = signed("faulty-v2", "faulty", "2.0.0");
    let flip = |at: usize| {
        let mut b = good.clone();
        b[at] ^= 0x01;
        b
    };
    let stranger = SecretKey::generate().expect("key");
    let manifest_at = good.len() - 20;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "unsigned",
            std::fs::read(guest("faulty-v2")).expect("guest"),
            "unsigned",
        ),
        ("flipped-in-code", flip(good.len() / 2), "tampered"),
        ("flipped-in-manifest", flip(manifest_at), "tampered"),
        (
            "flipped-in-signature",
            flip(good.len().min(120) - 30),
            "untrusted_signer",
        ),
        (
            "untrusted",
            sign_with(
                &std::fs::read(guest("faulty-v2")).expect("g"),
                &stranger,
                "faulty",
                "2.0.0",
            ),
            "untrusted_signer",
        ),
        ("truncated", good[..good.len() - 1000].to_vec(), "truncated"),
        (
            "core",
            sign_with(b"\0asm\x01\x00\x00\x00", test_key(), "faulty", "2.0.0"),
            "not_a_component",
        ),
        (
            "wrong-world",
            sign_with(b"\0asm\x0d\x00\x01\x00", test_key(), "faulty", "2.0.0"),
            "wrong_world",
        ),
        ("downgrade", signed("faulty-v2", "faulty", "0.9.0"), "downgrade"),
        (
            "same-version",
            signed("faulty-v2", "faulty", "1.0.0"),
            "version_conflict",
        ),
    ];
    for (name, bytes, code) in cases {
        let before = rejections(&host, code);
        host.drop_module(&format!("{name}.wasm"), &bytes);
        host.wait_until(&format!("{name} is rejected as {code}"), |h| {
            rejections(h, code) > before
        })
        .await;
        let audit = host.wait_for_audit("reject", Some(code)).await;
        assert!(
            audit["file"]
                .as_str()
                .is_some_and(|f| f.ends_with(&format!("{name}.wasm"))),
            "{audit}"
        );
        assert!(
            host.log()
                .lines()
                .any(|l| l.contains("module rejected") && l.contains(code) && l.contains(name)),
            "a log line names {code} for {name}"
        );
        assert_eq!(
            host.active("faulty").as_deref(),
            Some("1.0.0"),
            "{name} changed nothing"
        );
    }
    assert_eq!(
        host.game("faulty")["versions"].as_array().map(Vec::len),
        Some(1),
        "nothing was loaded"
    );
    assert_eq!(count(&mut p).await, 2, "the live room never noticed");
}

#[tokio::test]
async fn a_hot_swap_mid_game_over_websocket_keeps_the_board() {
    let host = Host::start_with(HostOptions {
        games: &["tictactoe"],
        ..HostOptions::default()
    });
    let mut x = host.client(Transport::Ws).await;
    let mut o = host.client(Transport::Ws).await;
    assert_eq!(x.join("tictactoe", "final", "x").await["version"], "1.0.0");
    o.join("tictactoe", "final", "o").await;
    for (is_x, cell) in [(true, 0), (false, 4), (true, 1)] {
        let c = if is_x { &mut x } else { &mut o };
        c.message(json!({"action": "move", "cell": cell})).await;
        for c in [&mut x, &mut o] {
            while c.event_of("state").await["board"][cell as usize].is_null() {}
        }
    }

    host.drop_module("tictactoe-1.1.0.wasm", &signed("tictactoe", "tictactoe", "1.1.0"));
    for c in [&mut x, &mut o] {
        let s = swapped(c).await;
        assert_eq!(
            (s["from"].as_str(), s["version"].as_str()),
            (Some("1.0.0"), Some("1.1.0"))
        );
    }
    // The board survived: O's turn, and the game plays on to X's win.
    o.message(json!({"action": "move", "cell": 1})).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "cell-taken");
    o.message(json!({"action": "move", "cell": 8})).await;
    while x.event_of("state").await["board"][8].is_null() {}
    x.message(json!({"action": "move", "cell": 2})).await;
    let mut s = Value::Null;
    while s["status"] != "won" {
        s = x.event_of("state").await;
    }
    assert_eq!(s["winner"], "X");
    assert_eq!(s["board"], json!(["X", "X", "X", null, "O", null, null, null, "O"]));
    assert_eq!(host.active("tictactoe").as_deref(), Some("1.1.0"));
    let mut late = host.client(Transport::Tcp).await;
    assert_eq!(late.join("tictactoe", "final", "late").await["version"], "1.1.0");
}

#[tokio::test]
async fn rollback_brings_back_the_old_behaviour_with_the_state() {
    let host = faulty_host();
    let mut p = host.client(Transport::Ws).await;
    p.join("faulty", "r", "p").await;
    assert_eq!(count(&mut p).await, 1);
    assert_eq!(count(&mut p).await, 2);

    host.drop_module("faulty-2.wasm", &signed("faulty-v2", "faulty", "2.0.0"));
    assert_eq!(swapped(&mut p).await["version"], "2.0.0");
    assert_eq!(count(&mut p).await, 12, "2.0.0 counts in tens, from the carried state");

    let (ok, out, err) = host.cli(&["rollback", "faulty"]);
    assert!(ok, "rollback failed: {err}");
    assert!(out.contains("2.0.0 -> 1.0.0"), "{out}");
    let s = swapped(&mut p).await;
    assert_eq!(
        (s["from"].as_str(), s["version"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    assert_eq!(count(&mut p).await, 13, "1.0.0 counts in ones again, state kept");

    let (ok, table, _) = host.cli(&["status"]);
    assert!(ok);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("faulty") && l.contains("1.0.0") && l.contains('*')),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.starts_with("faulty") && l.contains("2.0.0")),
        "{table}"
    );
    let versions = host.game("faulty")["versions"].clone();
    assert_eq!(versions[0]["rooms"], 1, "the room runs 1.0.0: {versions}");
    assert_eq!(versions[1]["rooms"], 0);

    let rollback = host.wait_for_audit("rollback", None).await;
    assert_eq!(
        (rollback["from"].as_str(), rollback["version"].as_str()),
        (Some("2.0.0"), Some("1.0.0"))
    );
    assert!(rollback["digest"].as_str().is_some_and(|d| d.len() == 64));
    assert!(rollback["signer"].as_str().is_some_and(|s| s.starts_with("SHA256:")));

    // An explicit rollback target, and the errors of a bad one.
    let (ok, _, err) = host.cli(&["rollback", "faulty", "--to", "3.0.0"]);
    assert!(!ok && err.contains("unknown_version"), "{err}");
    let (ok, _, err) = host.cli(&["rollback", "nosuch"]);
    assert!(!ok && err.contains("unknown_game"), "{err}");
    let (ok, _, err) = host.cli(&["rollback", "faulty"]);
    assert!(!ok && err.contains("no_previous_version"), "{err}");
    let (ok, _, _) = host.cli(&["promote", "faulty", "2.0.0"]);
    assert!(ok);
    assert_eq!(swapped(&mut p).await["version"], "2.0.0");
    assert_eq!(count(&mut p).await, 23);
}

#[tokio::test]
async fn a_failing_restore_in_one_room_aborts_the_promotion_everywhere() {
    let host = faulty_host();
    let mut small = host.client(Transport::Tcp).await;
    let mut big = host.client(Transport::Tcp).await;
    small.join("faulty", "small", "s").await;
    big.join("faulty", "big", "b").await;
    assert_eq!(count(&mut small).await, 1);
    big.message(json!({"do": "set", "count": 150})).await;
    assert_eq!(big.event().await["count"], 150);

    // The strict build cannot restore a count of 100 or more.
    host.drop_module("faulty-strict.wasm", &signed("faulty-strict", "faulty", "3.0.0"));
    let aborted = host.wait_for_audit("promotion_aborted", None).await;
    assert!(
        aborted["detail"]
            .as_str()
            .is_some_and(|d| d.contains("strict: a count of 150")),
        "{aborted}"
    );
    assert_eq!(
        host.active("faulty").as_deref(),
        Some("1.0.0"),
        "the promotion was reverted"
    );
    assert_eq!(
        count(&mut small).await,
        2,
        "the room that could migrate stayed on 1.0.0 too"
    );
    assert_eq!(count(&mut big).await, 151);
    // No `swapped` reached it: the migration was aborted everywhere.
    small.expect_nothing_queued().await;
    let status = host.status();
    assert_eq!(status["counters"]["aborted"], 1);
    // 3.0.0 stays loaded: an operator may still promote it once the rooms allow.
    big.message(json!({"do": "set", "count": 5})).await;
    big.event().await;
    let (ok, _, err) = host.cli(&["promote", "faulty", "3.0.0"]);
    assert!(ok, "{err}");
    assert_eq!(swapped(&mut small).await["version"], "3.0.0");
}

#[tokio::test]
async fn a_swap_during_a_steady_stream_of_messages_loses_none() {
    // 200 messages a second, above the default rate limit.
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[net]\nrate_per_sec = 1000\nrate_burst = 1000\n",
        ..HostOptions::default()
    });
    let mut p = host.client(Transport::Tcp).await;
    p.join("faulty", "stream", "p").await;
    const N: u64 = 400;
    let mut sent = 0;
    let mut replies = Vec::new();
    let mut swaps = 0;
    // 400 messages over about two seconds; the new version lands after 50.
    while sent < N {
        for _ in 0..10 {
            p.send(json!({"type": "message", "data": {"do": "count"}, "ref": sent}))
                .await;
            sent += 1;
        }
        if sent == 50 {
            host.drop_module("faulty-2.wasm", &signed("faulty-v2", "faulty", "2.0.0"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut acks = 0;
    while acks < N {
        let f = p.recv().await;
        match f["type"].as_str() {
            Some("event") => replies.push(f["data"]["count"].as_u64().unwrap_or_default()),
            Some("ack") => acks += 1,
            Some("swapped") => swaps += 1,
            _ => panic!("unexpected frame {f}"),
        }
    }
    assert_eq!(replies.len() as u64, N, "every message got its reply");
    assert_eq!(swaps, 1, "the swap happened during the stream");
    let steps: Vec<u64> = replies.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.iter().all(|s| *s == 1 || *s == 10),
        "no message lost or doubled: {steps:?}"
    );
    let ones = steps.iter().filter(|s| **s == 1).count();
    assert!(ones > 0 && ones < steps.len(), "messages ran on both versions");
}

#[tokio::test]
async fn slots_and_the_active_version_survive_a_restart() {
    let host = faulty_host();
    host.drop_module("faulty-2.wasm", &signed("faulty-v2", "faulty", "2.0.0"));
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let (ok, _, err) = host.cli(&["rollback", "faulty"]);
    assert!(ok, "{err}");
    std::fs::remove_file(host.modules_dir().join("faulty-2.wasm")).expect("remove");

    let host = host.restart();
    assert_eq!(
        host.active("faulty").as_deref(),
        Some("1.0.0"),
        "the rollback survived the restart"
    );
    let versions: Vec<String> = host.game("faulty")["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| v["version"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(versions, ["1.0.0", "2.0.0"], "2.0.0 came back from the slot store");
    let mut p = host.client(Transport::Ws).await;
    p.join("faulty", "r", "p").await;
    assert_eq!(count(&mut p).await, 1);
    let (ok, _, err) = host.cli(&["promote", "faulty", "2.0.0"]);
    assert!(ok, "{err}");
    assert_eq!(swapped(&mut p).await["version"], "2.0.0");
    assert_eq!(count(&mut p).await, 11);

    // A stored module that was tampered with is rejected on the next start.
    let stored = host.state_dir().join("slots/faulty/1.0.0.wasm");
    let mut bytes = std::fs::read(&stored).expect("stored");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&stored, bytes).expect("tamper");
    let host = host.restart();
    assert!(
        host.log()
            .lines()
            .any(|l| l.contains("1.0.0.wasm") && l.contains("tampered"))
    );
    assert_eq!(host.active("faulty").as_deref(), Some("2.0.0"));
}

#[tokio::test]
async fn pinned_games_load_updates_without_promoting_them() {
    let host = faulty_host();
    let (ok, _, err) = host.cli(&["pin", "faulty"]);
    assert!(ok, "{err}");
    host.drop_module("faulty-2.wasm", &signed("faulty-v2", "faulty", "2.0.0"));
    host.wait_for_audit("load", None).await;
    host.wait_until("2.0.0 is loaded", |h| h.status().to_string().contains("\"2.0.0\""))
        .await;
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    let (ok, _, err) = host.cli(&["promote", "faulty", "2.0.0"]);
    assert!(ok, "{err}");
    assert_eq!(host.active("faulty").as_deref(), Some("2.0.0"));
    let (ok, _, _) = host.cli(&["unpin", "faulty"]);
    assert!(ok);
    host.drop_module("faulty-3.wasm", &signed("faulty", "faulty", "3.0.0"));
    host.wait_until("3.0.0 is promoted", |h| h.active("faulty").as_deref() == Some("3.0.0"))
        .await;
}

#[tokio::test]
async fn the_admin_api_wants_the_token_and_the_token_file_is_private() {
    let host = faulty_host();
    let token_file = host.state_dir().join("admin.token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file).expect("token").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let wrong = host.state_dir().join("wrong.token");
    std::fs::write(&wrong, "not-the-token").expect("write");
    let (ok, _, err) = host.cli(&["status", "--token-file", wrong.to_str().unwrap_or_default()]);
    assert!(!ok && err.contains("unauthorized"), "{err}");
    let (ok, _, err) = host.cli(&["rollback", "faulty", "--token-file", wrong.to_str().unwrap_or_default()]);
    assert!(!ok && err.contains("unauthorized"), "{err}");
}

#[tokio::test]
async fn unsigned_code_runs_only_with_the_development_flag_and_warns_each_time() {
    let host = Host::start_with(HostOptions {
        games: &[],
        config: "[trust]\nallow_unsigned = true\n",
        extra_modules: vec![("echo.wasm", std::fs::read(guest("echo")).expect("echo"))],
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    assert!(
        c.join("echo", "r", "p").await["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("0.0.0-dev"))
    );
    host.drop_module("chat.wasm", &std::fs::read(guest("chat")).expect("chat"));
    host.wait_until("chat loads", |h| h.active("chat").is_some()).await;
    let warnings = host
        .log()
        .lines()
        .filter(|l| l.contains("loading UNSIGNED code"))
        .count();
    assert_eq!(warnings, 2, "one warning per load");
    // Signed modules must still verify.
    let stranger = SecretKey::generate().expect("key");
    host.drop_module(
        "tictactoe.wasm",
        &sign_with(
            &std::fs::read(guest("tictactoe")).expect("t"),
            &stranger,
            "tictactoe",
            "1.0.0",
        ),
    );
    host.wait_for_audit("reject", Some("untrusted_signer")).await;
}

#[tokio::test]
async fn a_file_still_being_copied_is_not_read_half_written() {
    let host = faulty_host();
    let bytes = signed("faulty-v2", "faulty", "2.0.0");
    let path = host.modules_dir().join("faulty-slow.wasm");
    // Written in place in pieces, slower than a disk copy but each pause
    // shorter than the host's 50 ms debounce.
    let mut file = std::fs::File::create(&path).expect("create");
    for chunk in bytes.chunks(bytes.len() / 8 + 1) {
        std::io::Write::write_all(&mut file, chunk).expect("write");
        std::io::Write::flush(&mut file).expect("flush");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(file);
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let status = host.status();
    assert_eq!(
        status["counters"]["rejections"],
        json!({}),
        "no half-written read: {status}"
    );
}

#[tokio::test]
async fn a_copy_that_pauses_longer_than_the_debounce_leaves_no_false_refusal() {
    let host = faulty_host();
    let bytes = signed("faulty-v2", "faulty", "2.0.0");
    let path = host.modules_dir().join("faulty-paused.wasm");
    // Four pieces, each pause four times the host's 50 ms debounce: the
    // host reads a partial file at least once.
    let mut file = std::fs::File::create(&path).expect("create");
    for chunk in bytes.chunks(bytes.len() / 4 + 1) {
        std::io::Write::write_all(&mut file, chunk).expect("write");
        std::io::Write::flush(&mut file).expect("flush");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(file);
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    // Past the settle time (1 s here) of every partial read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(host.log().contains("looks incomplete"), "a partial file was read");
    let refusals: Vec<_> = host.audit().into_iter().filter(|e| e["event"] == "reject").collect();
    assert!(refusals.is_empty(), "{refusals:?}");
    assert_eq!(host.status()["counters"]["rejections"], json!({}));
}

#[tokio::test]
async fn a_restart_takes_compiled_code_from_the_cache_and_ignores_forged_artifacts() {
    let host = faulty_host();
    let host = host.restart();
    let log = host.log();
    assert!(log.contains("compiled code from the cache"), "{log}");
    let mut p = host.client(Transport::Tcp).await;
    p.join("faulty", "r", "p").await;
    assert_eq!(count(&mut p).await, 1);

    // Forge every artifact: the host must not run them, and recompiles.
    let cache = host.state_dir().join("cache");
    let mut forged = 0;
    for entry in std::fs::read_dir(&cache).expect("cache dir") {
        let path = entry.expect("entry").path();
        let mut bytes = std::fs::read(&path).expect("artifact");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("forge");
        forged += 1;
    }
    assert!(forged >= 2, "faulty and echo are cached");
    drop(p);
    let host = host.restart();
    assert!(host.log().contains("ignoring a cached artifact"));
    let mut p = host.client(Transport::Ws).await;
    // Room `r` came back from the database with its count; a new room
    // shows the recompiled code runs.
    p.join("faulty", "r2", "p").await;
    assert_eq!(count(&mut p).await, 1);
}

/// A status request takes the games registry's lock and, inside it, counts
/// rooms; a join takes the rooms' lock and, inside it, looks up the game;
/// a promotion writes the games registry. With a writer waiting, those two
/// orders deadlock. Four workers, all three at once, many rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_status_and_promotions_at_once_never_deadlock() {
    let host = Host::start_with(HostOptions {
        games: &["echo"],
        config: "[rooms]\nlinger_ms = 0\ncreate_burst = 100000\ncreate_burst_per_address = 100000\n[sandbox]\nmax_instances = 400\n[net]\nrate_per_sec = 100000\nrate_burst = 100000\n",
        extra_modules: vec![("echo-2.wasm", signed("echo", "echo", "2.0.0"))],
        env: vec![("TOKIO_WORKER_THREADS".into(), "4".into())],
    });
    host.wait_until("both versions are loaded", |h| {
        h.game("echo")["versions"].as_array().is_some_and(|v| v.len() == 2)
    })
    .await;
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let bound = Duration::from_secs(20);
    let mut work = Vec::new();
    for worker in 0..3 {
        let tcp = host.tcp;
        work.push(tokio::spawn(async move {
            let mut c = Client::tcp(tcp).await;
            c.expect("welcome").await;
            let mut n = 0;
            while std::time::Instant::now() < until {
                c.join("echo", &format!("w{worker}-{n}"), "p").await;
                c.send(json!({"type": "leave"})).await;
                // Promotions reach the room meanwhile.
                while c.recv().await["type"] != "left" {}
                n += 1;
            }
            n
        }));
    }
    let admin = host.admin_client();
    let status = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while std::time::Instant::now() < until {
                assert_eq!(admin.request("GET", "/status", None).0, 200);
                n += 1;
            }
            n
        })
    };
    let promote = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            let mut n = 0;
            while std::time::Instant::now() < until {
                let version = if n % 2 == 0 { "1.0.0" } else { "2.0.0" };
                let (code, body) = admin.request("POST", "/games/echo/promote", Some(&json!({"version": version})));
                assert_eq!(code, 200, "{body}");
                n += 1;
            }
            n
        })
    };
    let counts = tokio::time::timeout(bound, async {
        let mut joins = 0;
        for w in work {
            joins += w.await.expect("joining");
        }
        (joins, status.await.expect("status"), promote.await.expect("promoting"))
    })
    .await
    .expect("joins, status and promotions stopped making progress: a deadlock");
    println!("joins {}, status {}, promotions {}", counts.0, counts.1, counts.2);
    assert!(counts.0 > 0 && counts.1 > 0 && counts.2 > 0, "{counts:?}");
    assert_eq!(admin.request("GET", "/status", None).0, 200);
}

/// Operators' commands reach a room through a channel it serves before
/// players' messages: with a version whose every message takes 90% of the
/// call deadline and an inbox kept full by a flood, a rollback still
/// completes at once (bound: the call in progress, at most twice the call
/// deadline, plus the room's snapshot and restore; asserted as 3 s, well
/// under the 5 s after which a migration gives a room up).
#[tokio::test]
async fn a_rollback_is_not_queued_behind_a_slow_versions_full_inbox() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[sandbox]\ncall_timeout_ms = 100\n[rooms]\ninbox = 64\n[net]\nrate_per_sec = 100000\nrate_burst = 100000\n",
        extra_modules: vec![("faulty-2.wasm", signed("faulty-v2", "faulty", "2.0.0"))],
        ..HostOptions::default()
    });
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let mut players = Vec::new();
    for i in 0..8 {
        let mut c = host.client(Transport::Tcp).await;
        c.join("faulty", "slow", &format!("p{i}")).await;
        players.push(c);
    }
    players[0].message(json!({"do": "slow", "ms": 90})).await;
    assert_eq!(players[0].event().await["slow_ms"], 90);
    // 8 × 40 messages of 90 ms each: the inbox alone holds 64 of them,
    // almost 6 s of work ahead of anything queued behind it.
    for c in &mut players {
        for _ in 0..40 {
            c.message(json!({"do": "count"})).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) = host.cli(&["rollback", "faulty"]);
    let took = started.elapsed();
    assert!(ok, "rollback failed: {stdout} {stderr}");
    assert!(took < Duration::from_secs(3), "the rollback took {took:?}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    println!("rollback behind a full inbox took {took:?}");
}

/// A rollback runs as a job the host owns: an operator who hangs up in the
/// middle (the room is busy in a long call) leaves it neither half done nor
/// unrecorded: the rooms move, then the active version, the stored state
/// and the audit change together.
#[tokio::test]
async fn a_rollback_whose_requester_hangs_up_still_completes_whole() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[sandbox]\ncall_timeout_ms = 1000\n",
        extra_modules: vec![("faulty-2.wasm", signed("faulty-v2", "faulty", "2.0.0"))],
        ..HostOptions::default()
    });
    host.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
        .await;
    let mut p = host.client(Transport::Tcp).await;
    p.join("faulty", "busy", "p").await;
    assert_eq!(count(&mut p).await, 10);
    // The room spends a second in this call; the migration waits for it.
    p.message(json!({"do": "sleep", "secs": 1})).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let admin = host.admin_client();
    tokio::task::spawn_blocking(move || {
        admin.hang_up_after("POST", "/games/faulty/rollback", Duration::from_millis(200));
    })
    .await
    .expect("hang up");
    let audited = host.wait_for_audit("rollback", None).await;
    assert_eq!(audited["version"], "1.0.0", "{audited}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    let versions = host.game("faulty")["versions"].clone();
    let rooms_on = |v: &str| {
        versions
            .as_array()
            .and_then(|vs| vs.iter().find(|x| x["version"] == v))
            .map_or(0, |x| x["rooms"].as_u64().unwrap_or(0))
    };
    assert_eq!((rooms_on("1.0.0"), rooms_on("2.0.0")), (1, 0), "{versions}");
    assert_eq!(p.event().await["slept"], 1);
    assert_eq!(swapped(&mut p).await["version"], "1.0.0");
    assert_eq!(count(&mut p).await, 11, "the state moved with the room");
    // And it survives a restart: the stored state says 1.0.0 too.
    let host = host.restart();
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
}
