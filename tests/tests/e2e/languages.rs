//! Issue 18: games in JavaScript and C against the same WIT world. The
//! JavaScript and C tictactoes play the Rust one's end-to-end games
//! unchanged, a live room swaps between the three languages with its board
//! (and rolls back from JavaScript to Rust), JavaScript and C guests that
//! fail, loop or hoard memory are contained like a Rust one (restart, crash
//! capsule, probation), and a JavaScript restart compiles nothing.

use crate::play::{play_tictactoe_to_a_draw, play_tictactoe_to_a_win};
use respawn_e2e::{Client, Host, HostOptions, Transport, respawn_bin, shared_code_cache, signed};
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

/// How long a test waits for a new version to be active: a JavaScript
/// engine compiles in about 10 s alone, several times that beside the
/// other tests on two cores.
const COMPILE: Duration = Duration::from_secs(180);

/// A host serving `build` (a guest in `target/guests/`) as `tictactoe`.
fn tictactoe_host(build: &str) -> Host {
    Host::start_with(HostOptions {
        games: &["echo"],
        extra_modules: vec![("tictactoe.wasm", signed(build, "tictactoe", "1.0.0"))],
        config: &shared_code_cache(),
        ..HostOptions::default()
    })
}

#[tokio::test]
async fn javascript_tictactoe_plays_the_rust_games_unchanged() {
    let host = tictactoe_host("tictactoe-js");
    play_tictactoe_to_a_win(&host).await;
    play_tictactoe_to_a_draw(&host).await;

    // A restart takes the engine's compiled code from the code cache
    // instead of compiling it again, and serves with it.
    let before = host.log().len();
    let host = host.restart();
    let log = host.log();
    let restart = log.get(before..).unwrap_or_default();
    assert!(
        restart
            .lines()
            .any(|l| l.contains("compiled code from the cache") && l.contains("tictactoe")),
        "{restart}"
    );
    let mut x = host.client(Transport::Ws).await;
    x.join("tictactoe", "after-restart", "xena").await;
    assert_eq!(x.event().await, json!({"type": "seat", "mark": "X"}));
}

#[tokio::test]
async fn c_tictactoe_plays_the_rust_games_unchanged() {
    let host = tictactoe_host("tictactoe-c");
    play_tictactoe_to_a_win(&host).await;
    play_tictactoe_to_a_draw(&host).await;
}

/// The next frame that is not a game event: `swapped` here. Compiling a
/// JavaScript engine takes long enough for the host to ping a quiet TCP
/// player, who answers.
async fn swapped(c: &mut Client) -> Value {
    loop {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("event") => {}
            Some("ping") => c.send(json!({"type": "pong"})).await,
            _ => {
                assert_eq!(f["type"], "swapped", "unexpected frame {f}");
                return f;
            }
        }
    }
}

/// Drops `build` (a guest in `target/guests/`) into the modules folder as
/// `version` of tictactoe and waits until it is active (a JavaScript
/// engine compiles for a while).
async fn swap_in(host: &Host, build: &str, version: &str) {
    host.drop_module(
        &format!("tictactoe-{version}.wasm"),
        &signed(build, "tictactoe", version),
    );
    host.wait_until_within(&format!("{build} {version} is active"), COMPILE, |h| {
        h.active("tictactoe").as_deref() == Some(version)
    })
    .await;
}

/// Both players are told the room went from version `from` to `to`.
async fn both_swapped(x: &mut Client, o: &mut Client, from: &str, to: &str) {
    for c in [x, o] {
        let s = swapped(c).await;
        assert_eq!((s["from"].as_str(), s["version"].as_str()), (Some(from), Some(to)));
    }
}

/// `c`'s next state broadcast in which `cell` is marked.
async fn marked(c: &mut Client, cell: usize) -> Value {
    loop {
        let s = c.event_of("state").await;
        if !s["board"][cell].is_null() {
            return s;
        }
    }
}

#[tokio::test]
async fn a_live_game_swaps_from_rust_to_javascript_to_c_and_back_with_its_board() {
    let host = Host::start_with(HostOptions {
        games: &["tictactoe"],
        config: &shared_code_cache(),
        ..HostOptions::default()
    });
    let mut x = host.client(Transport::Ws).await;
    let mut o = host.client(Transport::Tcp).await;
    x.join("tictactoe", "babel", "xena").await;
    o.join("tictactoe", "babel", "otto").await;
    for (is_x, cell) in [(true, 0), (false, 4)] {
        let c = if is_x { &mut x } else { &mut o };
        c.message(json!({"action": "move", "cell": cell})).await;
        for c in [&mut x, &mut o] {
            marked(c, cell).await;
        }
    }

    // Rust → JavaScript. Compiling an engine takes a while: wait for the
    // version, then for the rooms.
    swap_in(&host, "tictactoe-js", "2.0.0").await;
    both_swapped(&mut x, &mut o, "1.0.0", "2.0.0").await;
    // JavaScript holds the Rust game's board and rules: X's turn, 4 taken.
    o.message(json!({"action": "move", "cell": 1})).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "not-your-turn");
    x.message(json!({"action": "move", "cell": 4})).await;
    assert_eq!(x.expect_error("rejected").await["reason"], "cell-taken");
    x.message(json!({"action": "move", "cell": 1})).await;
    let s = marked(&mut o, 1).await;
    assert_eq!(s["board"], json!(["X", "X", null, null, "O", null, null, null, null]));
    assert_eq!(s["players"]["X"]["name"], "xena");

    // JavaScript → C, which reads what JavaScript wrote.
    swap_in(&host, "tictactoe-c", "3.0.0").await;
    both_swapped(&mut x, &mut o, "2.0.0", "3.0.0").await;
    o.message(json!({"action": "move", "cell": 0})).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "cell-taken");
    o.message(json!({"action": "move", "cell": 8})).await;
    let s = marked(&mut x, 8).await;
    assert_eq!(s["board"], json!(["X", "X", null, null, "O", null, null, null, "O"]));

    // And back to Rust, which reads what C wrote.
    swap_in(&host, "tictactoe", "4.0.0").await;
    both_swapped(&mut x, &mut o, "3.0.0", "4.0.0").await;
    x.message(json!({"action": "move", "cell": 2})).await;
    let mut s = Value::Null;
    while s["status"] != "won" {
        s = o.event_of("state").await;
    }
    assert_eq!(s["winner"], "X");
    assert_eq!(s["line"], json!([0, 1, 2]));
    assert_eq!(s["board"], json!(["X", "X", "X", null, "O", null, null, null, "O"]));
    assert_eq!(s["winner_wins"], 1, "Rust counted the win in storage");

    // Rust → JavaScript again, and JavaScript → Rust directly by a
    // rollback: both read the finished game.
    swap_in(&host, "tictactoe-js", "5.0.0").await;
    both_swapped(&mut x, &mut o, "4.0.0", "5.0.0").await;
    o.message(json!({"action": "move", "cell": 5})).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "game-over");
    let (ok, out, err) = host.cli(&["rollback", "tictactoe"]);
    assert!(ok, "{out}{err}");
    both_swapped(&mut x, &mut o, "5.0.0", "4.0.0").await;
    o.message(json!({"action": "move", "cell": 5})).await;
    assert_eq!(o.expect_error("rejected").await["reason"], "game-over");
    x.message(json!({"action": "restart"})).await;
    let s = o.event_of("state").await;
    assert_eq!(
        s["board"],
        json!([null, null, null, null, null, null, null, null, null])
    );
    assert_eq!((s["status"].as_str(), s["games"].as_u64()), (Some("playing"), Some(1)));
}

/// Sends `{"do": what}` to the faulty JavaScript guest.
async fn ask(c: &mut Client, what: &str) {
    c.message(json!({"do": what})).await;
}

/// The count the guest answers any other message with.
async fn count(c: &mut Client) -> u64 {
    c.message(json!({})).await;
    c.event().await["count"].as_u64().expect("a count")
}

/// The `restarted` frame after a fault, then the error that tells the
/// sender the room went on without their message.
async fn restarted(c: &mut Client) -> Value {
    let frame = c.expect("restarted").await;
    c.expect_error("guest_restarted").await;
    frame
}

/// A host serving a faulty test guest of `target/guests/` (`faulty-js`,
/// `faulty-c`) under its own name as 1.0.0, with `config` and the shared
/// code cache.
fn faulty_host(game: &str, config: &str) -> Host {
    let file = format!("{game}.wasm");
    Host::start_with(HostOptions {
        games: &["echo"],
        extra_modules: vec![(&file, signed(game, game, "1.0.0"))],
        config: &format!("{}{config}", shared_code_cache()),
        ..HostOptions::default()
    })
}

/// Config for the containment tests: restarts enough for every fault, and
/// a short call deadline for the loops.
const CONTAINED: &str = "[supervision]\nmax_restarts = 100\n[sandbox]\ncall_timeout_ms = 200\n";

/// A host serving the faulty guest `game` for the containment tests, and
/// a player in its room `r` whose count is 1.
async fn contained(game: &str) -> (Host, Client) {
    let host = faulty_host(game, CONTAINED);
    let mut p = host.client(Transport::Tcp).await;
    p.join(game, "r", "p").await;
    assert_eq!(p.event().await["count"], 0);
    assert_eq!(count(&mut p).await, 1);
    (host, p)
}

/// Replays the capsule whose signature passes `ours`: it must reproduce
/// the fault, and what the guest said in the replay must hold every one
/// of `words`.
async fn replays_to(host: &Host, ours: impl Fn(&str) -> bool, words: &[&str]) {
    let report = replay_capsule(host, ours).await;
    assert_eq!(report["verdict"], "reproduced", "{report:#}");
    let replayed = &report["run"]["at_failing_input"];
    assert_eq!(replayed["outcome"], "fault", "{report:#}");
    assert!(
        replayed["fault"]["said"]
            .as_str()
            .is_some_and(|s| words.iter().all(|w| s.contains(w))),
        "the replay met the same fault: {report:#}"
    );
}

/// The index of a host's crash capsules, or null before it is written.
fn capsule_index(host: &Host) -> Value {
    std::fs::read(host.state_dir().join("capsules/index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// Waits for the written capsule whose signature passes `ours` and
/// replays it offline with `respawn replay --json`, returning the report.
async fn replay_capsule(host: &Host, ours: impl Fn(&str) -> bool) -> Value {
    let written = |i: &Value| {
        i["kept"]
            .as_array()
            .and_then(|kept| {
                kept.iter()
                    .find(|k| k["signature"].as_str().is_some_and(&ours) && k["written"] == true)
            })
            .and_then(|k| k["file"].as_str())
            .map(str::to_owned)
    };
    host.wait_until_within("the fault's capsule", COMPILE, |h| written(&capsule_index(h)).is_some())
        .await;
    let capsule = host
        .state_dir()
        .join("capsules")
        .join(written(&capsule_index(host)).expect("the capsule's file"));
    let out = Command::new(respawn_bin())
        .arg("replay")
        .arg(&capsule)
        .arg("--trust")
        .arg(host.trust_dir())
        .arg("--json")
        .output()
        .expect("respawn replay");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test]
async fn a_javascript_guest_that_throws_loops_or_hoards_is_contained_like_a_rust_one() {
    let (host, mut p) = contained("faulty-js").await;

    // Math.random() and Date.now() before the fault: the capsule holds
    // what they gave, and its replay must give the same.
    ask(&mut p, "entropy").await;
    assert!(p.event().await["random"].is_f64());

    // An exception: the room restarts from its checkpoint, and the log has
    // the exception's message and its stack.
    ask(&mut p, "throw").await;
    assert_eq!(restarted(&mut p).await["reason"], "trap");
    let log = host.log();
    assert!(log.contains("TypeError: the guest threw on purpose"), "{log}");
    assert!(log.contains("throwDeep"), "the stack names the function: {log}");
    assert_eq!(count(&mut p).await, 2, "state kept across the restart");

    // A rejection is a rejection; an Error with a `code` is still a bug.
    ask(&mut p, "reject").await;
    assert_eq!(p.expect_error("rejected").await["reason"], "refused");
    ask(&mut p, "throw-coded").await;
    assert_eq!(restarted(&mut p).await["reason"], "trap");
    ask(&mut p, "null").await;
    assert_eq!(restarted(&mut p).await["reason"], "trap");

    // A loop hits the call deadline; a hoard hits the memory limit (the
    // engine reports running out as an exception, or the host's limiter
    // stops it).
    ask(&mut p, "loop").await;
    assert_eq!(restarted(&mut p).await["reason"], "timeout");
    ask(&mut p, "alloc").await;
    let hoard = restarted(&mut p).await;
    assert!(
        ["trap", "out_of_memory"].contains(&hoard["reason"].as_str().unwrap_or("")),
        "{hoard}"
    );
    assert_eq!(count(&mut p).await, 3, "every fault left the state as it was");

    // Storage errors arrive as KvError codes; the clock and random numbers
    // JavaScript reads itself are the room's.
    ask(&mut p, "kv-bad-key").await;
    assert_eq!(p.event().await["kv_error"], "invalid-key");
    ask(&mut p, "entropy").await;
    let e = p.event().await;
    assert_eq!(e["now"], e["ctx_now"], "Date.now() is the room clock: {e}");
    for r in [&e["random"], &e["ctx_random"]] {
        assert!(r.as_f64().is_some_and(|r| (0.0..1.0).contains(&r)), "{e}");
    }

    // The crash capsule of the first exception says what the engine said,
    // and the signature tells it apart from the other faults.
    // Function names from the stack JavaScript reported, not the message.
    // It replays, JavaScript engine and all, to the same exception.
    replays_to(
        &host,
        |sig| sig.starts_with("trap:throwDeep < ") && !sig.contains("on purpose"),
        &["TypeError: the guest threw on purpose", "throwDeep"],
    )
    .await;
}

#[tokio::test]
async fn a_c_guest_that_panics_traps_loops_or_hoards_is_contained_like_a_rust_one() {
    let (host, mut p) = contained("faulty-c").await;

    // The SDK's rs_panic: the room restarts from its checkpoint, and the
    // log has what the guest said.
    ask(&mut p, "panic").await;
    assert_eq!(restarted(&mut p).await["reason"], "trap");
    let log = host.log();
    assert!(
        log.contains("guest panicked: invariant broken on purpose at count 1"),
        "{log}"
    );
    assert_eq!(count(&mut p).await, 2, "state kept across the restart");

    ask(&mut p, "reject").await;
    assert_eq!(p.expect_error("rejected").await["reason"], "refused");
    // A wild pointer is wasmtime's trap, with its words in the log.
    ask(&mut p, "oob").await;
    assert_eq!(restarted(&mut p).await["reason"], "trap");
    assert!(host.log().contains("out of bounds memory access"), "{}", host.log());
    // A loop hits the call deadline; malloc without end hits the room's
    // memory limit.
    ask(&mut p, "loop").await;
    assert_eq!(restarted(&mut p).await["reason"], "timeout");
    ask(&mut p, "alloc").await;
    assert_eq!(restarted(&mut p).await["reason"], "out_of_memory");
    assert_eq!(count(&mut p).await, 3, "every fault left the state as it was");

    // The panic's capsule is signed by the C function that panicked (not
    // its message) and replays to the same words.
    replays_to(
        &host,
        |sig| sig.starts_with("trap:check_invariant") && !sig.contains("on purpose"),
        &["invariant broken on purpose at count 1"],
    )
    .await;
}

/// Runs `cmd` in `dir`, failing the test with its output if it fails.
fn run(dir: &std::path::Path, cmd: &mut Command) -> String {
    let out = cmd.current_dir(dir).output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} in {} failed:\n{text}", dir.display());
    text
}

/// Builds a scaffolded Rust game to a core module the way `just guests`
/// does: the rustup target if installed, else Debian's Rust with std
/// built from source (sharing the workspace's cache of it).
fn build_rust_guest(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let rustup = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).lines().any(|l| l == "wasm32-wasip1"));
    let target_dir = respawn_e2e::workspace().join("target/scaffold-wasm");
    let mut cargo = if rustup {
        let mut c = Command::new("cargo");
        c.args(["build", "--release", "--target", "wasm32-wasip1"]);
        c
    } else {
        let mut c = Command::new("/usr/bin/cargo");
        c.args([
            "build",
            "--release",
            "-Zbuild-std=std,panic_abort",
            "--target",
            "wasm32-wasip1",
        ])
        .env("RUSTC", "/usr/bin/rustc")
        .env("RUSTC_BOOTSTRAP", "1")
        .env(
            "RUSTFLAGS",
            "-C linker=wasm-ld -C link-self-contained=no -L /usr/lib/wasm32-wasi",
        );
        c
    };
    run(dir, cargo.arg("--target-dir").arg(&target_dir));
    target_dir.join(format!("wasm32-wasip1/release/{}.wasm", name.replace('-', "_")))
}

#[tokio::test]
async fn respawn_new_makes_projects_that_test_build_and_play_in_every_language() {
    let work = tempfile::tempdir().unwrap();
    let bin = respawn_bin();
    let mut modules = Vec::new();
    for lang in ["rust", "js", "ts", "c"] {
        let name = format!("hello-{lang}");
        let dir = work.path().join(&name);
        run(
            work.path(),
            Command::new(&bin)
                .args(["new", &name, "--lang", lang, "--dir"])
                .arg(&dir),
        );
        let built = match lang {
            "rust" => {
                let tests = run(
                    &dir,
                    Command::new("cargo")
                        .args(["test", "--quiet"])
                        .env("CARGO_TARGET_DIR", respawn_e2e::workspace().join("target/scaffold")),
                );
                assert!(tests.contains("1 passed"), "{tests}");
                build_rust_guest(&dir, &name)
            }
            "js" | "ts" => {
                run(
                    &dir,
                    Command::new("npm").args(["install", "--no-audit", "--no-fund", "--loglevel=error"]),
                );
                let tests = run(&dir, Command::new("npm").arg("test"));
                assert!(tests.contains("pass 1"), "{tests}");
                run(&dir, Command::new("npm").args(["run", "build"]));
                dir.join(format!("{name}.wasm"))
            }
            _ => {
                let tests = run(&dir, Command::new("make").arg("test"));
                assert!(tests.contains("all checks passed"), "{tests}");
                run(&dir, Command::new("make").arg(format!("RESPAWN={}", bin.display())));
                dir.join(format!("{name}.wasm"))
            }
        };
        let bytes = std::fs::read(&built).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
        // Signed the way the README says (a core module is componentized first).
        let unsigned = work.path().join(format!("{name}.in.wasm"));
        std::fs::write(&unsigned, &bytes).unwrap();
        let key = work.path().join("studio");
        if !key.with_extension("key").exists() {
            run(work.path(), Command::new(&bin).arg("keygen").arg("--out").arg(&key));
        }
        let signed_file = work.path().join(format!("{name}.wasm"));
        run(
            work.path(),
            Command::new(&bin)
                .arg("sign")
                .arg(&unsigned)
                .arg("--key")
                .arg(key.with_extension("key"))
                .args(["--name", &name, "--version", "0.1.0", "-o"])
                .arg(&signed_file),
        );
        modules.push((name, std::fs::read(&signed_file).unwrap()));
    }

    // A host that trusts the studio's key: the folder is watched.
    let host = Host::start_with(HostOptions {
        games: &["echo"],
        config: &shared_code_cache(),
        ..HostOptions::default()
    });
    std::fs::copy(work.path().join("studio.pub"), host.trust_dir().join("studio.pub")).unwrap();
    host.wait_for_audit("trust_changed", None).await;
    for (name, bytes) in &modules {
        host.drop_module(&format!("{name}.wasm"), bytes);
        host.wait_until_within(&format!("{name} is active"), COMPILE, |h| h.active(name).is_some())
            .await;
        let mut ann = host.client(Transport::Tcp).await;
        let mut bob = host.client(Transport::Ws).await;
        ann.join(name, "r", "ann").await;
        assert_eq!(ann.event().await, json!({"type": "hello", "lines": 0}), "{name}");
        let bob_id = bob.join(name, "r", "bob").await["player"].clone();
        bob.event().await;
        assert_eq!(ann.event().await, json!({"type": "joined", "name": "bob"}), "{name}");
        bob.message(json!({"say": "hi"})).await;
        for c in [&mut ann, &mut bob] {
            assert_eq!(
                c.event().await,
                json!({"type": "said", "from": bob_id, "text": "hi"}),
                "{name}"
            );
        }
        bob.message(json!({"say": ""})).await;
        assert_eq!(bob.expect_error("rejected").await["reason"], "bad-line", "{name}");
    }
}

#[tokio::test]
async fn a_javascript_version_whose_calls_fail_is_rolled_back_by_its_probation() {
    rolled_back_by_probation("faulty-js", "throw").await;
}

#[tokio::test]
async fn a_c_version_whose_calls_fail_is_rolled_back_by_its_probation() {
    rolled_back_by_probation("faulty-c", "panic").await;
}

/// Version 1.1.0 of the faulty guest `game` fails two calls in twelve
/// (`{"do": fault}`): its probation rolls the room back to 1.0.0.
async fn rolled_back_by_probation(game: &str, fault: &str) {
    let host = faulty_host(
        game,
        "[probation]\nwindow_ms = 60000\nmin_calls = 10\nmax_error_rate = 0.05\n[supervision]\nmax_restarts = 100\n",
    );
    let mut a = host.client(Transport::Tcp).await;
    let mut b = host.client(Transport::Ws).await;
    a.join(game, "probe", "a").await;
    a.event().await;
    b.join(game, "probe", "b").await;
    b.event().await;
    host.drop_module(&format!("{game}-1.1.0.wasm"), &signed(game, game, "1.1.0"));
    host.wait_until_within("1.1.0 is active", COMPILE, |h| {
        h.active(game).as_deref() == Some("1.1.0")
    })
    .await;
    for c in [&mut a, &mut b] {
        assert_eq!(swapped(c).await["version"], "1.1.0");
    }
    for _ in 0..10 {
        count(&mut a).await;
    }
    // Two players' faults: 2 of 12 calls is above 5%. Each restart is
    // told to the whole room.
    ask(&mut a, fault).await;
    restarted(&mut a).await;
    b.expect("restarted").await;
    ask(&mut b, fault).await;
    restarted(&mut b).await;
    a.expect("restarted").await;
    let back = swapped(&mut a).await;
    assert_eq!(
        (back["from"].as_str(), back["version"].as_str()),
        (Some("1.1.0"), Some("1.0.0"))
    );
    assert_eq!(count(&mut a).await, 11, "the state went back with it");
    let failed = host.wait_for_audit("probation_failed", None).await;
    assert_eq!(failed["version"], "1.1.0");
    host.wait_for_audit("auto_rollback", None).await;
    assert_eq!(host.active(game).as_deref(), Some("1.0.0"));
}
