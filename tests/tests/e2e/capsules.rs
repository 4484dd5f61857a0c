//! Issue 16: crash capsules that replay anywhere (`respawn replay`), the
//! hot-fix gate that replays them on a version before it goes live, shadow
//! runs, and canaries.

use respawn_e2e::{Client, Host, HostOptions, Transport, respawn_bin, signed};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The gate on (the harness turns it off for the other suites).
const GATE_ON: &str = "[capsules]\ngate = true\n";

async fn step(c: &mut Client, dir: &str) -> Value {
    c.send(json!({"type": "message", "data": {"do": "step", "dir": dir}}))
        .await;
    c.recv().await
}

async fn hash_order(c: &mut Client) {
    c.send(json!({"type": "message", "data": {"do": "hash_order"}})).await;
    assert_eq!(c.recv().await["data"]["order"].as_array().map(Vec::len), Some(32));
}

/// Walks the pad into the bug: up, down, up, up (fine), then down (the
/// only sequence that traps), with messages on the way that read the WASI
/// clock, random numbers and game storage, so the capsule's outputs
/// depend on them.
async fn crash_on_the_pad(c: &mut Client) {
    // `time` before the room's checkpoint (every 7 inputs here, the join
    // first) and after it: a replay from the checkpoint must find the
    // random streams where the room left them.
    c.send(json!({"type": "message", "data": {"do": "time"}})).await;
    assert!(c.recv().await["data"]["random"].is_u64());
    hash_order(c).await;
    for dir in ["up", "down"] {
        assert!(step(c, dir).await["data"]["position"].is_i64());
    }
    for _ in 0..2 {
        c.send(json!({"type": "message", "data": {"do": "count"}})).await;
        assert!(c.recv().await["data"]["count"].is_u64());
    }
    // The checkpoint; what follows is in the capsule.
    c.send(json!({"type": "message", "data": {"do": "time"}})).await;
    assert!(c.recv().await["data"]["random"].is_u64());
    // A fresh `HashMap`'s order depends on how many maps the instance made
    // before: the same live and in the replay only because the room goes
    // on in a fresh instance restored from each checkpoint.
    hash_order(c).await;
    // Game storage too: the replay answers the read from the record.
    c.send(json!({"type": "message", "data": {"do": "kv_set", "key": "pad", "value": 7}}))
        .await;
    assert_eq!(c.recv().await["data"]["kv"], "ok");
    c.send(json!({"type": "message", "data": {"do": "kv_get", "key": "pad"}}))
        .await;
    assert_eq!(c.recv().await["data"]["kv"], 7);
    for dir in ["up", "up"] {
        assert!(step(c, dir).await["data"]["position"].is_i64());
    }
    c.send(json!({"type": "message", "data": {"do": "step", "dir": "down"}}))
        .await;
    while c.recv().await["type"] != "restarted" {}
}

fn capsules(host: &Host) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(host.state_dir().join("capsules"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "capsule"));
    files.sort();
    files
}

fn index(host: &Host) -> Value {
    std::fs::read(host.state_dir().join("capsules/index.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

/// `respawn replay`: (exit code, stdout, stderr).
fn replay(capsule: &Path, trust: &Path, extra: &[&str]) -> (i32, String, String) {
    let out = Command::new(respawn_bin())
        .arg("replay")
        .arg(capsule)
        .arg("--trust")
        .arg(trust)
        .args(extra)
        .output()
        .expect("run respawn replay");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(capsule: &Path, trust: &Path, extra: &[&str]) -> (i32, Value) {
    let mut args = vec!["--json"];
    args.extend_from_slice(extra);
    let (code, stdout, stderr) = replay(capsule, trust, &args);
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    (code, value)
}

/// A module file in a temporary folder, for `--module`.
fn module_file(dir: &Path, file: &str, name: &str, version: &str) -> PathBuf {
    let path = dir.join(format!("{file}-{version}.wasm"));
    std::fs::write(&path, signed(file, name, version)).expect("module");
    path
}

async fn host_with_a_capsule(config: &str) -> (Host, PathBuf) {
    host_with_capsule_of(config, true).await
}

/// A host whose rooms go on in a fresh instance at each checkpoint
/// (`fresh`, the default) or keep theirs, with a capsule of the pad's bug.
async fn host_with_capsule_of(config: &str, fresh: bool) -> (Host, PathBuf) {
    // The pad's crash comes after its one checkpoint at the 7th input.
    let config = format!(
        "{config}\n[supervision]\ncheckpoint_every = 7\nfresh_at_checkpoint = {fresh}\nstagger_checkpoints = false\n"
    );
    let host = Host::start_with(HostOptions {
        games: &["faulty", "chat"],
        config: &config,
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "pad", "p").await;
    crash_on_the_pad(&mut c).await;
    // The same bug again, in another room: counted, not written again.
    let mut c2 = host.client(Transport::Tcp).await;
    c2.join("faulty", "pad2", "q").await;
    crash_on_the_pad(&mut c2).await;
    host.wait_until("the capsule and its count", |h| {
        capsules(h).len() == 1 && index(h)["kept"][0]["count"] == 2 && index(h)["kept"][0]["written"] == true
    })
    .await;
    let file = capsules(&host).remove(0);
    if fresh {
        assert!(!host.log().contains("HOST BUG"), "{}", host.log());
    }
    (host, file)
}

#[tokio::test]
async fn a_game_whose_output_hangs_on_hash_seeds_replays_only_with_fresh_instances() {
    // The room kept one instance across its checkpoint: the fresh map
    // after it got another hash seed than the replay's, and both the host
    // (when writing the capsule) and `respawn replay` say the replay
    // diverged from what players were sent.
    let (host, capsule) = host_with_capsule_of("", false).await;
    host.wait_until("the host's divergence report", |h| h.log().contains("HOST BUG"))
        .await;
    let (code, report) = report(&capsule, &host.trust_dir(), &[]);
    assert_eq!(code, 4, "{report:#}");
    assert_eq!(report["verdict"], "diverged", "{report:#}");
    // With fresh instances (the default) the same game replays exactly:
    // `a_rare_crash_leaves_one_capsule_that_replays_anywhere`.
}

#[tokio::test]
async fn a_rare_crash_leaves_one_capsule_that_replays_anywhere() {
    let (host, capsule) = host_with_a_capsule("").await;
    let kept = &index(&host)["kept"][0];
    assert_eq!(kept["game"], "faulty");
    // What the file holds: the inputs since the checkpoint up to the
    // failing step, and what the room sent for each but the last (the
    // WASI clock and random numbers of `time` among them).
    let inside: Value = {
        use std::io::Read;
        let mut json = String::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&capsule).unwrap())
            .read_to_string(&mut json)
            .unwrap();
        serde_json::from_str(&json).unwrap()
    };
    let inputs = inside["inputs"].as_array().unwrap();
    let outputs = inside["outputs"].as_array().unwrap();
    let last: Value = serde_json::from_str(inputs.last().unwrap()["payload"].as_str().unwrap()).unwrap();
    assert_eq!(last, json!({"do": "step", "dir": "down"}));
    assert_eq!(outputs.len(), inputs.len() - 1, "{inside:#}");
    assert!(
        outputs
            .iter()
            .any(|o| o["effects"][0]["payload"].as_str().unwrap_or("").contains("wasi_ms")),
        "{inside:#}"
    );
    assert!(!inside["module"].as_str().unwrap().is_empty());
    assert!(kept["signature"].as_str().unwrap().starts_with("trap:"), "{kept}");
    // Copied elsewhere, away from the host: the file is all it needs.
    let away = tempfile::tempdir().unwrap();
    let copy = away.path().join("crash.capsule");
    std::fs::copy(&capsule, &copy).unwrap();
    let trust = host.trust_dir();

    let (code, stdout, stderr) = replay(&copy, &trust, &[]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("REPRODUCED"), "{stdout}");

    // Twice, byte-identical: the same verdict and the same outputs, WASI
    // clock and random numbers included (a different output would be
    // `diverged`, exit 2).
    let (c1, mut r1) = report(&copy, &trust, &[]);
    let (c2, mut r2) = report(&copy, &trust, &[]);
    assert_eq!((c1, c2), (0, 0));
    assert_eq!(r1["verdict"], "reproduced", "{r1:#}");
    for r in [&mut r1, &mut r2] {
        r["run"]["inputs_per_sec"] = Value::Null;
    }
    assert_eq!(r1, r2);
    assert_eq!(r1["fault"]["kind"], "trap");
    assert!(r1["fault"]["message"].as_str().unwrap().contains("wasm trap"), "{r1:#}");
    assert!(
        r1["fault"]["backtrace"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f.as_str().unwrap().contains("faulty")),
        "the backtrace names the game's functions: {r1:#}"
    );

    // The fix takes every input; the first difference is the failing
    // input, where the room trapped and the fix answers with the combo.
    let fix = module_file(away.path(), "faulty-fix", "faulty", "1.0.1");
    let (code, fixed) = report(&copy, &trust, &["--module", fix.to_str().unwrap()]);
    assert_eq!(code, 0, "{fixed:#}");
    assert_eq!(fixed["verdict"], "fixed");
    let inputs = fixed["inputs"].as_u64().unwrap();
    assert_eq!(
        fixed["run"]["first_difference"]["index"].as_u64(),
        Some(inputs - 1),
        "{fixed:#}"
    );
    let answer = &fixed["run"]["at_failing_input"]["output"]["effects"][0]["payload"];
    let answer: Value = serde_json::from_str(answer.as_str().unwrap()).unwrap();
    assert_eq!(answer["combo"], 50, "{fixed:#}");

    // A version that does not fix it (it only counts differently).
    let v2 = module_file(away.path(), "faulty-v2", "faulty", "1.0.2");
    let (code, stdout, _) = replay(&copy, &trust, &["--module", v2.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("STILL FAULTS"), "{stdout}");
}

#[tokio::test]
async fn bad_capsules_and_modules_are_refused_and_nothing_runs() {
    let (host, capsule) = host_with_a_capsule("").await;
    let trust = host.trust_dir();
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&capsule).unwrap();
    let refused = |file: &Path, extra: &[&str], words: &str| {
        let (code, stdout, stderr) = replay(file, &trust, extra);
        assert_eq!(code, 3, "{words}: {stdout}{stderr}");
        assert!(stderr.contains(words), "expected {words:?} in: {stderr}");
        assert!(!stdout.contains("REPRODUCED") && !stdout.contains("FIXED"), "{stdout}");
    };
    let write = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };
    refused(
        &write("cut.capsule", &bytes[..bytes.len() / 2]),
        &[],
        "truncated or corrupted",
    );
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    refused(&write("flipped.capsule", &flipped), &[], "truncated or corrupted");
    refused(
        &write("module.capsule", &signed("chat", "chat", "1.0.0")),
        &[],
        "not gzip",
    );
    let gz = |text: &str| {
        use std::io::Write;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(text.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    refused(
        &write("foreign.capsule", &gz("{\"hello\": 1}")),
        &[],
        "not a Respawn capsule",
    );
    refused(
        &write(
            "future.capsule",
            &gz("{\"format\": \"respawn-capsule\", \"version\": 99}"),
        ),
        &[],
        "capsule version 99",
    );
    // A module of another game, and one signed by a key nobody trusts.
    let chat = module_file(dir.path(), "chat", "chat", "1.0.1");
    refused(&capsule, &["--module", chat.to_str().unwrap()], "is the game \"chat\"");
    let stranger = dir.path().join("stranger");
    let (ok, _, err) = {
        let out = Command::new(respawn_bin())
            .args(["keygen", "--out"])
            .arg(&stranger)
            .output()
            .unwrap();
        (
            out.status.success(),
            (),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(ok, "{err}");
    let (code, _, stderr) = replay(&capsule, &stranger.with_extension("pub"), &[]);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("REJECTED"), "{stderr}");
}

#[tokio::test]
async fn the_gate_refuses_a_non_fix_and_promotes_a_fix() {
    let (host, capsule) = host_with_a_capsule(GATE_ON).await;
    let name = capsule.file_name().unwrap().to_string_lossy().into_owned();

    // An update that does not fix the crash: loaded, refused, kept.
    host.drop_module("faulty-1.1.0.wasm", &signed("faulty-v2", "faulty", "1.1.0"));
    let refused = host.wait_for_audit("gate_failed", Some("update")).await;
    assert_eq!(refused["version"], "1.1.0");
    assert!(refused["detail"].as_str().unwrap().contains(&name), "{refused}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    let (ok, _, stderr) = host.cli(&["promote", "faulty", "1.1.0"]);
    assert!(!ok && stderr.contains("gate_failed"), "{stderr}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));

    // The fix: the gate replays the capsule on it, it passes, it goes live
    // and says which crash it fixes.
    host.drop_module("faulty-1.2.0.wasm", &signed("faulty-fix", "faulty", "1.2.0"));
    host.wait_until("the fix is active", |h| h.active("faulty").as_deref() == Some("1.2.0"))
        .await;
    let passed = host.wait_for_audit("gate_passed", Some("update")).await;
    assert!(
        passed["detail"].as_str().unwrap().contains(&format!("fixes: [{name}]")),
        "{passed}"
    );
    let version = |h: &Host, v: &str| {
        h.game("faulty")["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["version"] == v)
            .cloned()
            .unwrap()
    };
    assert_eq!(version(&host, "1.2.0")["gate"]["fixes"].as_array().unwrap().len(), 1);
    assert_eq!(version(&host, "1.1.0")["gate"]["fails"].as_array().unwrap().len(), 1);

    // Forced past the gate: promoted, and the audit says so.
    let (ok, stdout, stderr) = host.cli(&["promote", "faulty", "1.1.0", "--force"]);
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.1.0"));
    let forced = host.wait_for_audit("gate_forced", Some("promote")).await;
    assert!(forced["detail"].as_str().unwrap().contains(&name), "{forced}");
    assert_eq!(version(&host, "1.1.0")["gate"]["forced"], true);
}

/// Runs `respawn shadow` on a thread (it waits for the run to end).
#[tokio::test]
async fn updates_found_at_start_up_pass_the_gate_too() {
    let (mut host, capsule) = host_with_a_capsule(GATE_ON).await;
    let name = capsule.file_name().unwrap().to_string_lossy().into_owned();
    // A non-fix arrives while the host is down: refused at start, the
    // version that ran before stays active.
    host.kill();
    host.drop_module("faulty-1.1.0.wasm", &signed("faulty-v2", "faulty", "1.1.0"));
    let mut host = host.try_restart().unwrap_or_else(|(why, log)| panic!("{why}\n{log}"));
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    let refused = host.wait_for_audit("gate_failed", Some("update")).await;
    assert_eq!(refused["version"], "1.1.0");
    assert!(refused["detail"].as_str().unwrap().contains(&name), "{refused}");
    // The fix arrives while it is down again: it passes and goes live.
    host.kill();
    host.drop_module("faulty-1.2.0.wasm", &signed("faulty-fix", "faulty", "1.2.0"));
    let host = host.try_restart().unwrap_or_else(|(why, log)| panic!("{why}\n{log}"));
    assert_eq!(host.active("faulty").as_deref(), Some("1.2.0"));
    let passed = host.wait_for_audit("gate_passed", Some("update")).await;
    assert_eq!(passed["version"], "1.2.0");
}

fn shadow_in_background(host: &Host, version: &str, secs: &str) -> std::thread::JoinHandle<Value> {
    let (bin, config, admin) = (respawn_bin(), host.config_path(), host.admin_url());
    let (version, secs) = (version.to_owned(), secs.to_owned());
    std::thread::spawn(move || {
        let out = Command::new(bin)
            .args([
                "shadow", "faulty", &version, "--rooms", "2", "--for", &secs, "--json", "--config",
            ])
            .arg(config)
            .arg("--admin")
            .arg(admin)
            .output()
            .expect("run respawn shadow");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).expect("shadow JSON")
    })
}

async fn count(c: &mut Client) -> u64 {
    c.send(json!({"type": "message", "data": {"do": "count"}})).await;
    c.recv().await["data"]["count"].as_u64().expect("a count")
}

#[tokio::test]
async fn a_shadow_reports_the_first_diverging_input_and_an_identical_version_none() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        ..HostOptions::default()
    });
    let (ok, _, stderr) = host.cli(&["pin", "faulty"]);
    assert!(ok, "{stderr}");
    // Loaded, not promoted: the same code as 1.0.1, and v2 (counts in
    // tens) as 1.1.0.
    host.drop_module("faulty-1.0.1.wasm", &signed("faulty", "faulty", "1.0.1"));
    host.drop_module("faulty-1.1.0.wasm", &signed("faulty-v2", "faulty", "1.1.0"));
    host.wait_until("three versions loaded", |h| {
        h.game("faulty")["versions"].as_array().is_some_and(|v| v.len() == 3)
    })
    .await;
    // Rooms of the second run sort before the first's (a shadow takes the
    // first rooms by name; the first run's stay, their seats parked).
    for (version, behaves_the_same, run_name) in [("1.0.1", true, "y"), ("1.1.0", false, "x")] {
        // Fresh rooms for each run: `a` takes a count before the shadow
        // (replayed from its checkpoint and compared by digest), `b` only
        // during it.
        let mut a = host.client(Transport::Tcp).await;
        a.join("faulty", &format!("{run_name}-a"), "a").await;
        let mut b = host.client(Transport::Tcp).await;
        b.join("faulty", &format!("{run_name}-b"), "b").await;
        assert_eq!(count(&mut a).await, 1);
        let before = host.log().matches("a shadow run follows this room").count();
        let run = shadow_in_background(&host, version, "2s");
        host.wait_until("both rooms followed", |h| {
            h.log().matches("a shadow run follows this room").count() == before + 2
        })
        .await;
        // While it runs: the players see the active version (1 more each).
        let (na, nb) = (count(&mut a).await, count(&mut b).await);
        let report = tokio::task::spawn_blocking(move || run.join().unwrap()).await.unwrap();
        assert_eq!(report["candidate"], version);
        assert_eq!(report["active"], "1.0.0");
        let rooms = report["rooms"].as_array().unwrap();
        assert_eq!(rooms.len(), 2, "{report:#}");
        for r in rooms {
            assert!(r["fault"].is_null() && r["setup"].is_null(), "{r}");
            assert!(r["inputs"].as_u64().unwrap() >= 2, "join and count at least: {r}");
            if behaves_the_same {
                assert!(r["first_divergence"].is_null(), "an identical version diverged: {r:#}");
                continue;
            }
            // v2 counts in tens: in room a the first diverging input is the
            // count taken before the shadow (only its digest is known); in
            // room b, the count during it, with both outputs.
            let d = &r["first_divergence"];
            let payload: Value = serde_json::from_str(d["input"]["payload"].as_str().unwrap()).unwrap();
            assert_eq!(payload, json!({"do": "count"}), "{r:#}");
            let said =
                |o: &Value| -> Value { serde_json::from_str(o["effects"][0]["payload"].as_str().unwrap()).unwrap() };
            if r["room"].as_str().unwrap().ends_with("-a") {
                assert!(d["active"].is_null(), "{r:#}");
                assert_eq!(said(&d["candidate"]), json!({"count": 10}), "{r:#}");
            } else {
                assert_eq!(said(&d["active"]), json!({"count": nb}), "{r:#}");
                assert_eq!(said(&d["candidate"]), json!({"count": 10}), "{r:#}");
            }
        }
        // The players never saw the candidate.
        assert_eq!((na, nb), (2, 1));
    }
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
}

/// Ten rooms, one player each; returns the clients and the version each
/// room runs (from `joined`).
async fn rooms_with_players(host: &Host, prefix: &str) -> Vec<(Client, String)> {
    let mut out = Vec::new();
    for i in 0..10 {
        let mut c = host.client(Transport::Tcp).await;
        let joined = c.join("faulty", &format!("{prefix}{i}"), "p").await;
        let version = joined["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{joined}"))
            .to_owned();
        out.push((c, version));
    }
    out
}

/// Walks the pad: up, up, down (a trap on plain faulty, a combo on the
/// fixed build); returns whether the room said it `swapped` meanwhile.
async fn walk(c: &mut Client) -> bool {
    let mut swapped = false;
    for (i, dir) in ["up", "up", "down"].iter().enumerate() {
        c.send(json!({"type": "message", "data": {"do": "step", "dir": dir}, "ref": i}))
            .await;
        loop {
            let f = c.recv().await;
            swapped |= f["type"] == "swapped";
            if f["ref"] == i && (f["type"] == "ack" || f["type"] == "error") {
                break;
            }
        }
    }
    swapped
}

/// Loads `build` as faulty 1.1.0 (the game pinned, so it does not go
/// live) and starts a canary of it on half the new rooms; the CLI's
/// (success, stdout, stderr).
async fn canary_of(host: &Host, build: &str) -> (bool, String, String) {
    let (ok, _, stderr) = host.cli(&["pin", "faulty"]);
    assert!(ok, "{stderr}");
    host.drop_module("faulty-1.1.0.wasm", &signed(build, "faulty", "1.1.0"));
    host.wait_until("1.1.0 loaded", |h| {
        h.game("faulty")["versions"].as_array().is_some_and(|v| v.len() == 2)
    })
    .await;
    host.cli(&["promote", "faulty", "1.1.0", "--canary", "50"])
}

const CANARY_CONFIG: &str = "[probation]\nwindow_ms = 60000\nmax_error_rate = 0.05\nmin_calls = 3\nmin_players = 1\n";

#[tokio::test]
async fn a_faulty_canary_is_rolled_back_touching_only_its_rooms() {
    // The active version has the fix; the candidate is the build with the
    // combo bug.
    let host = Host::start_with(HostOptions {
        games: &[],
        config: CANARY_CONFIG,
        extra_modules: vec![("faulty.wasm", signed("faulty-fix", "faulty", "1.0.0"))],
        ..HostOptions::default()
    });
    let (ok, stdout, stderr) = canary_of(&host, "faulty").await;
    assert!(ok && stdout.contains("started"), "{stdout}{stderr}");
    assert_eq!(
        host.game("faulty")["canary"],
        json!({"version": "1.1.0", "percent": 50})
    );
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));

    let mut rooms = rooms_with_players(&host, "c").await;
    let canary = rooms.iter().filter(|(_, v)| v == "1.1.0").count();
    assert!(
        (1..10).contains(&canary),
        "a share of the rooms, not all or none: {canary}"
    );
    let mut swapped = Vec::new();
    for (c, _) in &mut rooms {
        swapped.push(walk(c).await);
    }
    let rolled = host.wait_for_audit("canary_rolled_back", None).await;
    assert_eq!(rolled["version"], "1.1.0");
    assert!(
        rolled["detail"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{canary} rooms")),
        "{rolled}"
    );
    // The canary's rooms were moved back; the others never moved.
    for ((c, version), seen) in rooms.iter_mut().zip(swapped) {
        assert!(!seen || version == "1.1.0", "a room outside the canary moved");
        if version == "1.1.0" && !seen {
            loop {
                if c.recv().await["type"] == "swapped" {
                    break;
                }
            }
        } else {
            c.expect_nothing_queued().await;
        }
    }
    let game = host.game("faulty");
    assert!(game["canary"].is_null(), "{game}");
    assert_eq!(host.active("faulty").as_deref(), Some("1.0.0"));
    let v110 = game["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1.1.0")
        .cloned()
        .unwrap();
    assert_eq!(v110["bad"], true, "{v110}");
    assert_eq!(v110["rooms"], 0, "{v110}");
}

#[tokio::test]
async fn a_good_canary_is_promoted_to_every_room() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[probation]\nwindow_ms = 1500\nmin_calls = 3\nmin_players = 1\n",
        ..HostOptions::default()
    });
    let (ok, stdout, stderr) = canary_of(&host, "faulty-fix").await;
    assert!(ok, "{stdout}{stderr}");
    let mut rooms = rooms_with_players(&host, "g").await;
    let canary = rooms.iter().filter(|(_, v)| v == "1.1.0").count();
    assert!((1..10).contains(&canary), "{canary}");
    for (c, _) in &mut rooms {
        c.send(json!({"type": "message", "data": {"do": "count"}})).await;
        c.recv().await;
    }
    let promoted = host.wait_for_audit("canary_promoted", None).await;
    assert_eq!(promoted["version"], "1.1.0");
    assert_eq!(host.active("faulty").as_deref(), Some("1.1.0"));
    let game = host.game("faulty");
    assert!(game["canary"].is_null(), "{game}");
    let on = |v: &str| {
        game["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["version"] == v)
            .unwrap()["rooms"]
            .as_u64()
            .unwrap()
    };
    assert_eq!((on("1.1.0"), on("1.0.0")), (10, 0), "{game}");
    // The rooms that were not in the canary moved when it was promoted.
    for (c, version) in &mut rooms {
        if version == "1.0.0" {
            loop {
                if c.recv().await["type"] == "swapped" {
                    break;
                }
            }
        }
    }
}
