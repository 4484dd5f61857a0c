//! Guest languages side by side (`just bench-languages`): the same
//! tictactoe in Rust, JavaScript (componentize-js) and C, each measured
//! the way the host runs it (pooling allocator, async calls), in one run:
//!
//! - the signed component's size;
//! - compile time (verified module to native code; median of 3), and a
//!   restart's load of the same code from the host's code cache;
//! - instantiation (a room's instance, then `init`; median of 30);
//! - a 64-byte `on-message` call: `reject` is a move out of turn (parse,
//!   check, rejection), `game` the average over a whole game (five moves
//!   that each broadcast the board, a win, a restart); median of 5 rounds
//!   of at least 1 s;
//! - memory per room: the linear memory a room's instance holds after two
//!   players joined, and the RSS growth per room over 50 rooms (measured
//!   in a fresh process per language, after one room was made and dropped).
//!
//! Prints a markdown table; `-- growth` instead prints how one instance's
//! memory grows over many calls. Needs `just guests` first
//! (target/guests/).

use respawn::config::SandboxConfig;
use respawn::sandbox::{GameCode, GuestInstance, Sandbox};
use std::hint::black_box;
use std::time::{Duration, Instant};

const BUILDS: [(&str, &str); 3] = [
    ("Rust", "tictactoe"),
    ("JavaScript", "tictactoe-js"),
    ("C", "tictactoe-c"),
];

/// `text` padded with spaces to 64 bytes: the same payload size in every
/// case, and still the message each game reads.
fn padded(text: &str) -> Vec<u8> {
    assert!(text.len() <= 64, "{text}");
    let mut v = text.as_bytes().to_vec();
    v.resize(64, b' ');
    v
}

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `just guests` first)", path.display()))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// A room with two players seated, ready to play.
async fn room(sb: &Sandbox, code: &GameCode) -> GuestInstance {
    let mut inst = GuestInstance::new(sb, code, String::new(), 7, None)
        .await
        .expect("instance");
    inst.init(1, "bench", b"{}").await.expect("init").expect("init ok");
    for (id, name) in [(1, "xena"), (2, "otto")] {
        inst.on_join(1, id, name, None).await.expect("join").expect("join ok");
    }
    inst.take_effects().for_each(drop);
    inst
}

/// Nanoseconds per call of `one` (which makes `n` calls), median of 5
/// rounds of at least a second.
async fn per_call<F>(inst: &mut GuestInstance, n: u64, mut one: F) -> f64
where
    F: AsyncFnMut(&mut GuestInstance),
{
    let mut rounds = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let mut calls = 0u64;
        while start.elapsed() < Duration::from_secs(1) {
            one(inst).await;
            calls += n;
        }
        rounds.push(start.elapsed().as_nanos() as f64 / calls as f64);
    }
    median(rounds)
}

fn main() {
    if std::env::args().any(|a| a == "growth") {
        return growth();
    }
    if let Some(build) = std::env::args().skip_while(|a| a != "rooms").nth(1) {
        return rooms(&build);
    }
    // `cargo bench` passes `--bench`; nothing to filter here.
    // Room enough for a JavaScript room's heap however long a round runs
    // in one instance (see `growth`); the host renews a room's instance at
    // every checkpoint, which keeps it far below.
    let Setup { rt, sb, key, trust } = setup(128);
    let reject = padded(r#"{"action":"move","cell":4}"#);
    let game: Vec<Vec<u8>> = [
        r#"{"action":"move","cell":0}"#,
        r#"{"action":"move","cell":3}"#,
        r#"{"action":"move","cell":1}"#,
        r#"{"action":"move","cell":4}"#,
        r#"{"action":"move","cell":2}"#,
        r#"{"action":"restart"}"#,
    ]
    .iter()
    .map(|m| padded(m))
    .collect();
    let movers = [1u64, 2, 1, 2, 1, 2];

    let state = tempfile::tempdir().expect("temp dir");
    let cache = respawn::modules::cache::CodeCache::open(state.path(), sb.engine()).expect("code cache");
    println!(
        "| | component | compile | load from the code cache | instantiate + init | 64-byte call: reject | 64-byte call: game | linear memory per room | RSS per room |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (lang, build) in BUILDS {
        let signed_len = verified(&trust, &key, build).bytes().len();
        let mut compiles = Vec::new();
        let mut code = None;
        for _ in 0..3 {
            let module = verified(&trust, &key, build);
            let start = Instant::now();
            code = Some(sb.compile(&module).unwrap_or_else(|e| panic!("{build}: {e}")));
            compiles.push(start.elapsed().as_secs_f64());
        }
        let code = code.expect("compiled");
        let module = || verified(&trust, &key, build);
        let (_, cached) = sb.compile_cached(&module(), Some(&cache)).expect("stored");
        assert!(!cached, "the first compile fills the cache");
        let loads = (0..3)
            .map(|_| {
                let m = module();
                let start = Instant::now();
                let (_, cached) = sb.compile_cached(&m, Some(&cache)).expect("loaded");
                assert!(cached, "{build}: loaded from the cache");
                start.elapsed().as_secs_f64()
            })
            .collect();

        let instantiate = median(
            (0..30)
                .map(|_| {
                    let start = Instant::now();
                    rt.block_on(async {
                        let mut inst = GuestInstance::new(&sb, &code, String::new(), 1, None)
                            .await
                            .expect("instance");
                        inst.init(1, "bench", b"{}").await.expect("init").expect("init ok");
                        black_box(inst)
                    });
                    start.elapsed().as_secs_f64()
                })
                .collect(),
        );

        let (reject_ns, game_ns) = rt.block_on(async {
            let mut inst = room(&sb, &code).await;
            // X moves once; from then on X's move is out of turn.
            inst.on_message(1, 1, &padded(r#"{"action":"move","cell":0}"#))
                .await
                .expect("move")
                .expect("ok");
            inst.take_effects().for_each(drop);
            let reject_ns = per_call(&mut inst, 1, async |inst| {
                let r = inst.on_message(1, 1, black_box(&reject)).await.expect("no fault");
                assert!(r.is_err(), "out of turn");
            })
            .await;
            let mut inst = room(&sb, &code).await;
            let game_ns = per_call(&mut inst, game.len() as u64, async |inst| {
                for (msg, from) in game.iter().zip(movers) {
                    let r = inst.on_message(1, from, black_box(msg)).await.expect("no fault");
                    assert!(r.is_ok(), "{build}: {:?}", r.err());
                    inst.take_effects().for_each(drop);
                }
            })
            .await;
            (reject_ns, game_ns)
        });

        // In a process of its own: RSS is the process's, and the pool's
        // slots keep pages resident between rooms.
        let out = std::process::Command::new(std::env::current_exe().expect("bench binary"))
            .args(["rooms", build])
            .output()
            .expect("rooms run");
        assert!(
            out.status.success(),
            "the rooms run of {build} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().expect("a number"));
        let (linear, rss) = (fields.next().expect("linear"), fields.next().expect("rss"));

        println!(
            "| {lang} (`{build}`) | {:.1} KiB | {:.0} ms | {:.1} ms | {:.0} µs | {:.2} µs | {:.2} µs | {:.1} MiB | {:.0} KiB |",
            signed_len as f64 / 1024.0,
            median(compiles) * 1e3,
            median(loads) * 1e3,
            instantiate * 1e6,
            reject_ns / 1e3,
            game_ns / 1e3,
            linear / 1048576.0,
            rss / 1024.0,
        );
    }
}

/// 50 rooms of `build` with two players each, in this process: prints the
/// linear memory per room and the RSS growth per room, in bytes.
fn rooms(build: &str) {
    let Setup { rt, sb, key, trust } = setup(SandboxConfig::default().memory_mib);
    let code = sb.compile(&verified(&trust, &key, build)).expect("compiled");
    rt.block_on(async {
        drop(room(&sb, &code).await);
        let before = rss_bytes();
        let mut rooms = Vec::new();
        for _ in 0..50 {
            rooms.push(room(&sb, &code).await);
        }
        let rss = rss_bytes().saturating_sub(before) / 50;
        let linear = rooms.iter().map(GuestInstance::memory_in_use).sum::<usize>() / rooms.len();
        println!("{linear} {rss}");
    });
}

/// How one instance's linear memory grows over 100,000 out-of-turn
/// moves (`cargo bench -p respawn --bench languages -- growth`): what a
/// room would hold without a fresh instance at each checkpoint.
fn growth() {
    let Setup { rt, sb, key, trust } = setup(1024);
    let reject = padded(r#"{"action":"move","cell":4}"#);
    println!("| calls | {} |", BUILDS.map(|(lang, _)| lang).join(" | "));
    println!("|---|---|---|---|");
    let mut rooms = Vec::new();
    for (_, build) in BUILDS {
        let code = sb.compile(&verified(&trust, &key, build)).expect("compiled");
        rooms.push(rt.block_on(async {
            let mut inst = room(&sb, &code).await;
            inst.on_message(1, 1, &padded(r#"{"action":"move","cell":0}"#))
                .await
                .expect("move")
                .expect("ok");
            inst
        }));
    }
    for step in 0..=5u64 {
        let row: Vec<String> = rooms
            .iter()
            .map(|r| format!("{:.1} MiB", r.memory_in_use() as f64 / 1048576.0))
            .collect();
        println!("| {} | {} |", step * 20_000, row.join(" | "));
        for inst in &mut rooms {
            rt.block_on(async {
                for _ in 0..20_000 {
                    let r = inst.on_message(1, 1, &reject).await.expect("no fault");
                    assert!(r.is_err(), "out of turn");
                }
            });
        }
    }
}

/// What every measurement needs: an executor, a sandbox whose rooms may
/// hold `memory_mib`, and a key the trust store trusts.
struct Setup {
    rt: tokio::runtime::Runtime,
    sb: Sandbox,
    key: respawn_signing::SecretKey,
    trust: respawn::modules::TrustStore,
}

fn setup(memory_mib: u32) -> Setup {
    let key = respawn_signing::SecretKey::generate().expect("key");
    Setup {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime"),
        sb: Sandbox::new(&SandboxConfig {
            memory_mib,
            ..SandboxConfig::default()
        })
        .expect("sandbox"),
        trust: respawn::modules::TrustStore::load(&[key.public().to_openssh("")], None, false).expect("trust"),
        key,
    }
}

/// `build` signed as tictactoe 1.0.0 and verified.
fn verified(
    trust: &respawn::modules::TrustStore,
    key: &respawn_signing::SecretKey,
    build: &str,
) -> respawn::modules::VerifiedModule {
    let manifest = respawn_signing::Manifest {
        name: "tictactoe".into(),
        version: "1.0.0".parse().expect("version"),
        author: "bench".into(),
        built_at: 0,
        notes: None,
    };
    let signed = respawn_signing::sign(
        &respawn_signing::embed_manifest(&guest(build), &manifest).expect("manifest"),
        key,
    )
    .expect("sign");
    trust.verify(signed, std::path::Path::new(build)).expect("verified")
}
