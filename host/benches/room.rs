//! Benchmarks of the room hot paths, side by side in one run:
//!
//! - `call/*`: one host-to-guest `on-message` call with a 64-byte JSON
//!   payload. `null` is a guest that does nothing (the host's and the
//!   canonical ABI's cost: the call overhead); `echo` is a real SDK game
//!   (parse, serialize, one `send` effect). `chat/*` is the chat game's
//!   `say` (a 48-byte line) in a room of 10: one room called again and
//!   again (`1_room`), and 100 rooms in turn (`100_rooms`, the 100 rooms
//!   of load scenario (a)).
//! - `call_cold/chat/100_rooms/say`: the same 100 rooms with 64 MiB
//!   written between two calls, only the calls timed: a call whose room,
//!   stack and code come from memory, not the caches.
//! - `instantiate/*`: creating a room's instance (Store, WASI context,
//!   instantiation) with the pooling allocator and with on-demand
//!   allocation, and with the game's `init` call.
//!
//! - `deploy/*`: the hot-reload path split into its steps: verifying a
//!   signed ~300 KB component, compiling it, the whole offer of a dropped
//!   file (verify, compile, slot, promote), the rollback flip (moving the
//!   active pointer), and migrating 1000 live rooms.
//!
//! - `supervision/*`: what the room journal costs. `checkpoint` is the
//!   snapshot a room takes every `checkpoint_every` inputs (tictactoe
//!   mid-game); `restart/N_inputs` rebuilds a room the way supervision
//!   does (new instance, `init`, `restore` of the checkpoint, entropy put
//!   back, N journaled inputs replayed), for an empty and a full journal.
//!
//! Needs `just guests` first (it reads target/guests/*.wasm).

use criterion::{Criterion, criterion_group, criterion_main};
use respawn::config::SandboxConfig;
use respawn::sandbox::{GameCode, GuestInstance, Sandbox};
use std::hint::black_box;
use std::time::{Duration, Instant};

const PAYLOAD: &[u8; 64] = br#"{"action":"move","cell":4,"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}"#;

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/guests")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run `just guests` first)", path.display()))
}

fn sandbox(pooling: bool) -> Sandbox {
    let cfg = SandboxConfig {
        pooling,
        ..SandboxConfig::default()
    };
    Sandbox::new(&cfg).expect("sandbox")
}

fn bench_key() -> &'static respawn_signing::SecretKey {
    static KEY: std::sync::OnceLock<respawn_signing::SecretKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| respawn_signing::SecretKey::generate().expect("key"))
}

/// A guest signed with the bench key as `name` 1.0.0, verified and compiled.
fn compile(sb: &Sandbox, name: &str) -> GameCode {
    let key = bench_key();
    let trust = respawn::modules::TrustStore::load(&[key.public().to_openssh("")], None, false).expect("trust");
    let module = trust
        .verify(signed(&guest(name), key, name, "1.0.0"), std::path::Path::new(name))
        .expect("verified");
    sb.compile(&module).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A bench room opened as the host opens one (`init` at time 1) and
/// joined by `players` (id, name); their welcome effects are left queued.
async fn open(inst: &mut GuestInstance, players: impl IntoIterator<Item = (u64, String)>) {
    inst.init(1, "bench", b"{}").await.expect("init").expect("init ok");
    for (id, name) in players {
        inst.on_join(1, id, &name, None).await.expect("join").expect("join ok");
    }
}

fn calls(c: &mut Criterion) {
    assert_eq!(PAYLOAD.len(), 64);
    let rt = runtime();
    let sb = sandbox(true);
    let mut group = c.benchmark_group("call");
    // `+metrics`: the call timed into the game's Prometheus histogram, as
    // a live room's is (the cost BENCHMARKS.md quotes, side by side).
    for (name, label, metrics) in [
        ("null", "null", false),
        ("null", "null+metrics", true),
        ("echo", "echo", false),
        ("echo", "echo+metrics", true),
    ] {
        let code = compile(&sb, name);
        let mut inst = rt
            .block_on(GuestInstance::new(&sb, &code, name.into(), 7, None))
            .expect("instance");
        if metrics {
            inst.count_in(respawn::metrics::METRICS.game(name));
        }
        rt.block_on(open(&mut inst, [(1, "p".into())]));
        inst.take_effects().for_each(drop);
        group.bench_function(format!("{label}/on_message_64B"), |b| {
            // Many calls per block_on, so the executor's entry cost is not
            // measured as call cost.
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        let r = inst.on_message(i, 1, black_box(PAYLOAD)).await;
                        black_box(r.expect("no fault").is_ok());
                        inst.take_effects().for_each(drop);
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    chat_calls(c, &rt, &sb);
}

/// The chat game's `on-message` in a room of 10, one room called again and
/// again (warm caches) against 100 rooms called in turn, as a loaded host
/// calls them, and those 100 with the caches evicted between calls: what
/// a chat line costs among many rooms, and with nothing of it cached.
fn chat_calls(c: &mut Criterion, rt: &tokio::runtime::Runtime, sb: &Sandbox) {
    let code = compile(sb, "chat");
    let mut rooms = Vec::new();
    for r in 0..100u64 {
        let mut inst = rt
            .block_on(GuestInstance::new(sb, &code, "chat".into(), r, None))
            .expect("instance");
        rt.block_on(open(&mut inst, (1..=10).map(|p| (p, format!("player{p}")))));
        inst.take_effects().for_each(drop);
        rooms.push(inst);
    }
    let line = br#"{"say":"c123 4567 1764380000123456 lorem ipsum"}"#;
    let mut group = c.benchmark_group("call");
    for (label, count) in [("chat/1_room", 1), ("chat/100_rooms", rooms.len())] {
        group.bench_function(format!("{label}/say"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for i in 0..iters {
                        say(&mut rooms[i as usize % count], i, line).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
    // As a loaded host makes it: between two lines of a room, its socket
    // work and the other rooms evict the caches. 64 MiB written between
    // calls (twice this machine's L3), only the calls timed. A group of
    // its own, so `^call/` runs (and `just bench-observability`) skip it.
    let mut junk = vec![1u8; 64 << 20];
    let count = rooms.len();
    let mut group = c.benchmark_group("call_cold");
    group.sample_size(20);
    group.bench_function("chat/100_rooms/say", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    evict(&mut junk, i);
                    let start = Instant::now();
                    say(&mut rooms[i as usize % count], i, line).await;
                    spent += start.elapsed();
                }
                spent
            })
        })
    });
    group.finish();
}

/// Call `i` of a chat bench: a player of the room says `line`, which the
/// game must accept (a rejection would time the cheaper reject path).
async fn say(inst: &mut GuestInstance, i: u64, line: &[u8]) {
    let r = inst.on_message(i, 1 + i % 10, black_box(line)).await;
    r.expect("no fault").expect("said");
    inst.take_effects().for_each(drop);
}

/// Touches every cache line of `junk` (a write, so the lines are dirty as
/// a busy host's would be).
fn evict(junk: &mut [u8], round: u64) {
    for line in junk.chunks_mut(64) {
        line[0] = line[0].wrapping_add(round as u8);
    }
    black_box(&junk);
}

fn instantiation(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("instantiate");
    group.measurement_time(Duration::from_secs(4));
    for pooling in [true, false] {
        let sb = sandbox(pooling);
        let alloc = if pooling { "pooling" } else { "on_demand" };
        for name in ["null", "tictactoe"] {
            let code = compile(&sb, name);
            group.bench_function(format!("{alloc}/{name}"), |b| {
                b.iter(|| {
                    let inst = rt.block_on(GuestInstance::new(&sb, &code, String::new(), 1, None));
                    black_box(inst.expect("instance"))
                })
            });
        }
        let code = compile(&sb, "tictactoe");
        group.bench_function(format!("{alloc}/tictactoe+init"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut inst = GuestInstance::new(&sb, &code, String::new(), 1, None)
                        .await
                        .expect("instance");
                    inst.init(1, "bench", b"{}").await.expect("init").expect("init ok");
                    black_box(inst)
                })
            })
        });
    }
    group.finish();
}

/// The same world called synchronously (sync exports, sync WASI), to
/// price the async call path the host uses. Not usable by the host itself:
/// wasmtime-wasi's sync bindings block on a Tokio runtime and panic on a
/// runtime thread (see README, "Guest calls are async").
mod sync_path {
    use wasmtime::component::{HasSelf, Linker, ResourceTable};
    use wasmtime::{Engine, Store};
    use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

    wasmtime::component::bindgen!({
        world: "room",
        path: "../wit",
        imports: { default: trappable },
    });

    pub struct Data {
        wasi: WasiCtx,
        table: ResourceTable,
    }

    impl WasiView for Data {
        fn ctx(&mut self) -> WasiCtxView<'_> {
            WasiCtxView {
                ctx: &mut self.wasi,
                table: &mut self.table,
            }
        }
    }

    impl respawn::game::types::Host for Data {}

    impl respawn::game::kv::Host for Data {
        fn get(&mut self, _: String) -> wasmtime::Result<Result<Option<Vec<u8>>, respawn::game::kv::KvError>> {
            Ok(Ok(None))
        }
        fn set(&mut self, _: String, _: Vec<u8>) -> wasmtime::Result<Result<(), respawn::game::kv::KvError>> {
            Ok(Ok(()))
        }
        fn delete(&mut self, _: String) -> wasmtime::Result<Result<(), respawn::game::kv::KvError>> {
            Ok(Ok(()))
        }
        fn list(
            &mut self,
            _: String,
            _: Option<String>,
            _: u32,
        ) -> wasmtime::Result<Result<Vec<String>, respawn::game::kv::KvError>> {
            Ok(Ok(Vec::new()))
        }
    }

    impl respawn::game::host::Host for Data {
        fn send(&mut self, _: u64, _: Vec<u8>) -> wasmtime::Result<()> {
            Ok(())
        }
        fn broadcast(&mut self, _: Vec<u8>, _: Option<u64>) -> wasmtime::Result<()> {
            Ok(())
        }
        fn kick(&mut self, _: u64, _: String) -> wasmtime::Result<()> {
            Ok(())
        }
        fn log(&mut self, _: respawn::game::types::Level, _: String) -> wasmtime::Result<()> {
            Ok(())
        }
        fn now_ms(&mut self) -> wasmtime::Result<u64> {
            Ok(0)
        }
        fn random_u64(&mut self) -> wasmtime::Result<u64> {
            Ok(4)
        }
        fn set_tick_interval(&mut self, _: u32) -> wasmtime::Result<()> {
            Ok(())
        }
    }

    pub fn instance(engine: &Engine, bytes: &[u8]) -> (Store<Data>, Room) {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).expect("wasi");
        Room::add_to_linker::<Data, HasSelf<Data>>(&mut linker, |d| d).expect("link");
        let component = wasmtime::component::Component::new(engine, bytes).expect("compile");
        let data = Data {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        };
        let mut store = Store::new(engine, data);
        let room = Room::instantiate(&mut store, &component, &linker).expect("instantiate");
        (store, room)
    }
}

fn sync_calls(c: &mut Criterion) {
    // wasmtime's default 4 GiB reservation per memory (loads and stores
    // need no bounds checks), and the host's: a reservation of
    // `memory_mib` with explicit bounds checks, which lets one host hold
    // tens of thousands of room instances.
    let unchecked = wasmtime::Engine::default();
    let checked = {
        let mut config = wasmtime::Config::new();
        config
            .memory_reservation(u64::from(SandboxConfig::default().memory_mib) << 20)
            .memory_guard_size(64 << 10)
            .guard_before_linear_memory(false)
            .memory_reservation_for_growth(0);
        wasmtime::Engine::new(&config).expect("engine")
    };
    let mut group = c.benchmark_group("call_sync");
    for (name, engine, label) in [
        ("null", &unchecked, "null"),
        ("echo", &unchecked, "echo"),
        ("echo", &checked, "echo_bounds_checked"),
    ] {
        let (mut store, room) = sync_path::instance(engine, &guest(name));
        let g = room.respawn_game_game();
        g.call_init(&mut store, "bench", b"{}").expect("init").expect("init ok");
        g.call_on_join(
            &mut store,
            &sync_path::respawn::game::types::Player {
                id: 1,
                name: "p".into(),
                user: None,
            },
        )
        .expect("join")
        .expect("join ok");
        group.bench_function(format!("{label}/on_message_64B"), |b| {
            b.iter(|| {
                let r = g.call_on_message(&mut store, 1, black_box(PAYLOAD));
                black_box(r.expect("no trap").is_ok())
            })
        });
    }
    group.finish();
}

fn signed(bytes: &[u8], key: &respawn_signing::SecretKey, name: &str, version: &str) -> Vec<u8> {
    let manifest = respawn_signing::Manifest {
        name: name.into(),
        version: version.parse().expect("version"),
        author: "bench".into(),
        built_at: 0,
        notes: None,
    };
    respawn_signing::sign(
        &respawn_signing::embed_manifest(bytes, &manifest).expect("manifest"),
        key,
    )
    .expect("sign")
}

fn deploy(c: &mut Criterion) {
    use respawn::config::Config;
    use respawn::modules::{Games, TrustStore, loader};
    use respawn::room::Rooms;
    use std::sync::Arc;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let key = respawn_signing::SecretKey::generate().expect("key");
    let pk = key.public();
    let component = guest("tictactoe");
    let v1 = signed(&component, &key, "tictactoe", "1.0.0");
    let v2 = signed(&component, &key, "tictactoe", "2.0.0");
    let trust = TrustStore::load(&[pk.to_openssh("")], None, false).expect("trust");
    let origin = std::path::Path::new("tictactoe.wasm");

    let mut config = Config::default();
    config.sandbox.max_instances = 2200;
    config.net.outbound_queue = 1 << 16;
    let config = Arc::new(config);
    let sandbox = Arc::new(Sandbox::new(&config.sandbox).expect("sandbox"));

    let mut group = c.benchmark_group("deploy");
    group.sample_size(10);
    group.bench_function(format!("verify_signature/{}KB", v1.len() / 1024), |b| {
        b.iter(|| black_box(respawn_signing::verify(black_box(&v1), &[pk]).expect("valid")))
    });
    let verified = trust.verify(v1.clone(), origin).expect("verified");
    group.bench_function(format!("compile/{}KB", v1.len() / 1024), |b| {
        b.iter(|| black_box(sandbox.compile(&verified).expect("compiles")))
    });

    let cache_dir = tempfile::tempdir().expect("tmp");
    let cache = respawn::modules::cache::CodeCache::open(cache_dir.path(), sandbox.engine()).expect("cache");
    sandbox
        .compile_cached(&verified, Some(&cache))
        .expect("fills the cache");
    group.bench_function(format!("compile_from_cache/{}KB", v1.len() / 1024), |b| {
        b.iter(|| {
            let (code, hit) = sandbox.compile_cached(&verified, Some(&cache)).expect("compiles");
            assert!(hit);
            black_box(code)
        })
    });

    let games = Arc::new(Games::new(5));
    for bytes in [&v1, &v2] {
        let m =
            loader::compile(&sandbox, trust.verify(bytes.clone(), origin).expect("verified"), None).expect("compile");
        games.insert(Arc::new(m));
    }
    let (one, two): (semver::Version, semver::Version) = ("1.0.0".parse().expect("v"), "2.0.0".parse().expect("v"));
    games.activate("tictactoe", &one).expect("activate");
    let mut flip = false;
    group.bench_function("rollback_flip", |b| {
        b.iter(|| {
            flip = !flip;
            games
                .activate("tictactoe", if flip { &two } else { &one })
                .expect("flip")
        })
    });

    let rooms = Rooms::new(sandbox.clone(), games.clone(), config.clone(), None, None);
    let mut queues = Vec::new();
    rt.block_on(async {
        for i in 0..1000u64 {
            let (_, _, rx) = rooms
                .join(
                    "tictactoe",
                    &format!("r{i}"),
                    respawn::room::Joiner {
                        player: i,
                        name: "p",
                        user: None,
                        seat: None,
                    },
                    &mut || true,
                )
                .await
                .expect("join");
            queues.push(rx);
        }
    });
    assert_eq!(rooms.count(), 1000);
    let modules = [
        games.get("tictactoe", &two).expect("v2"),
        games.get("tictactoe", &one).expect("v1"),
    ];
    let mut next = 0;
    group.bench_function("migrate_1000_rooms", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let module = &modules[next % 2];
                next += 1;
                let start = Instant::now();
                let moved = rt.block_on(rooms.migrate("tictactoe", module)).expect("migrated");
                total += start.elapsed();
                assert_eq!(moved, 1000);
            }
            total
        })
    });
    drop(queues);
    group.finish();
}

/// The whole offer of a dropped file through the deployer: read, verify,
/// admit, compile, store, promote (no live rooms).
fn offer(c: &mut Criterion) {
    use respawn::deploy::Deployer;
    use respawn::modules::audit::AuditLog;
    use respawn::modules::store::SlotStore;
    use respawn::modules::{Games, TrustStore};
    use respawn::room::Rooms;
    use std::sync::Arc;

    let rt = runtime();
    let _guard = rt.enter();
    let key = respawn_signing::SecretKey::generate().expect("key");
    let component = guest("tictactoe");
    let dir = tempfile::tempdir().expect("tmp");
    let config = Arc::new(respawn::config::Config::default());
    let sandbox = Arc::new(Sandbox::new(&config.sandbox).expect("sandbox"));
    let games = Arc::new(Games::new(3));
    let rooms = Rooms::new(sandbox.clone(), games.clone(), config, None, None);
    let trust = TrustStore::load(&[key.public().to_openssh("")], None, false).expect("trust");
    let deployer = Arc::new(Deployer::new(
        sandbox,
        trust,
        games,
        rooms,
        SlotStore::open(dir.path()).expect("store"),
        AuditLog::open(&dir.path().join("audit.log")).expect("audit"),
    ));
    let mut n = 0;
    let mut group = c.benchmark_group("deploy");
    group.sample_size(10);
    group.bench_function(format!("drop_to_live/{}KB", component.len() / 1024), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let file = dir.path().join(format!("t{n}.wasm"));
                std::fs::write(&file, signed(&component, &key, "tictactoe", &format!("1.0.{n}"))).expect("write");
                let start = Instant::now();
                let loaded = rt.block_on(deployer.offer(&file)).expect("offer").expect("loaded");
                total += start.elapsed();
                assert!(loaded.promotion.is_some());
            }
            total
        })
    });
    group.finish();
}

fn supervision(c: &mut Criterion) {
    let rt = runtime();
    let sb = sandbox(true);
    let mut group = c.benchmark_group("supervision");
    // A checkpoint of a tictactoe room with two players and four moves.
    let ttt = compile(&sb, "tictactoe");
    let mut room = rt
        .block_on(GuestInstance::new(&sb, &ttt, "bench".into(), 7, None))
        .expect("instance");
    rt.block_on(async {
        open(&mut room, [(1, "p".into()), (2, "p".into())]).await;
        for (p, cell) in [(1, 0), (2, 4), (1, 1), (2, 8)] {
            let mv = format!(r#"{{"action":"move","cell":{cell}}}"#);
            room.on_message(2, p, mv.as_bytes())
                .await
                .expect("move")
                .expect("legal");
        }
    });
    room.take_effects().for_each(drop);
    group.bench_function("checkpoint/tictactoe", |b| {
        b.iter(|| {
            rt.block_on(async {
                let state = room.snapshot(3).await.expect("snapshot");
                black_box((state, room.entropy_position()))
            })
        })
    });
    // Restarts of a faulty room (a counter), with 0 and 64 inputs to replay.
    let faulty = compile(&sb, "faulty");
    let mut origin = rt
        .block_on(GuestInstance::new(&sb, &faulty, "bench".into(), 7, None))
        .expect("instance");
    let (checkpoint, entropy) = rt.block_on(async {
        open(&mut origin, [(1, "p".into())]).await;
        (origin.snapshot(1).await.expect("snapshot"), origin.entropy_position())
    });
    const ADD: &[u8] = br#"{"do":"add","n":3}"#;
    for replayed in [0, 64] {
        group.bench_function(format!("restart/{replayed}_inputs"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut fresh = GuestInstance::new(&sb, &faulty, "bench".into(), 7, None)
                        .await
                        .expect("instance");
                    fresh.init(2, "bench", b"{}").await.expect("init").expect("init ok");
                    fresh.restore(2, &checkpoint).await.expect("restore").expect("restored");
                    fresh.seek_entropy(entropy);
                    for i in 0..replayed {
                        fresh.on_message(2 + i, 1, ADD).await.expect("replay").expect("ok");
                        fresh.take_effects().for_each(drop);
                    }
                    black_box(fresh)
                })
            })
        });
    }
    group.finish();
}

/// What a join's ticket check costs, per algorithm (the host checks one
/// per join; resumes and messages check none).
fn tickets(c: &mut Criterion) {
    use jsonwebtoken::Algorithm;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/auth");
    let config: respawn::config::Config = toml::from_str(&format!(
        r#"
        [auth]
        required = true
        issuer = "accounts"
        audience = "respawn"
        jwks_file = {jwks:?}
        keys = [{{ kid = "ed-1", alg = "EdDSA", file = {ed:?} }}, {{ kid = "hs", alg = "HS256", file = {hs:?} }}]
        "#,
        jwks = dir.join("jwks.json"),
        ed = dir.join("ed25519.pub"),
        hs = dir.join("hs256.secret"),
    ))
    .expect("config");
    let verifier = respawn::auth::Verifier::load(&config.auth, &dir).expect("keys");
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({"sub": "u-1", "name": "Ann", "iss": "accounts", "aud": "respawn", "exp": exp});
    let mut group = c.benchmark_group("ticket");
    for (name, alg, kid, key_file) in [
        ("eddsa", Algorithm::EdDSA, "ed-1", "ed25519.key"),
        ("es256", Algorithm::ES256, "ec-1", "es256.key"),
        ("rs256", Algorithm::RS256, "rsa-1", "rsa.key"),
        ("hs256", Algorithm::HS256, "hs", "hs256.secret"),
    ] {
        let ticket = respawn_e2e::sign_ticket(&claims, alg, kid, key_file);
        assert!(verifier.verify(&ticket, "chat", "lobby").is_ok(), "{name}");
        group.bench_function(name, |b| b.iter(|| verifier.verify(&ticket, "chat", "lobby")));
    }
    group.finish();
}

criterion_group!(
    benches,
    calls,
    sync_calls,
    instantiation,
    deploy,
    offer,
    supervision,
    tickets
);
criterion_main!(benches);
