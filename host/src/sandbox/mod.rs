//! The WebAssembly sandbox: one wasmtime Engine for the host, the Linker
//! with our imports and WASI, compiled game code, and per-room instances.

mod bindings;
pub mod determinism;
mod instance;

pub use bindings::{Identity, Rejection};
pub use instance::{
    CallResult, Effect, FaultKind, GuestFault, GuestInstance, InstantiateError, Profiling, RoomData, game_frames,
    redacted_said, said_frames, unnamed_frames,
};

use crate::config::SandboxConfig;
use crate::modules::VerifiedModule;
use crate::modules::cache::CodeCache;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances while a guest call runs; call deadlines
/// are counted in these, and a long call yields to other rooms at each.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(1);

/// How often the epoch ticker wakes while no guest call runs. Waking every
/// millisecond for nothing cost a loaded host 3% of its CPU (a context
/// switch each time); the price is that a call's first tick, and so its
/// deadline and its first yield, may come up to this much later.
const IDLE_TICK: Duration = Duration::from_millis(10);

/// Why bytes could not become runnable game code.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// A core module or something else, not a component.
    #[error("not a WebAssembly component (build it with `just guests` or `respawn component`)")]
    NotAComponent,
    /// wasmtime refused to compile it.
    #[error("component does not compile: {0}")]
    Invalid(String),
    /// It compiles but does not implement the `respawn:game/room` world.
    #[error("component does not implement the respawn:game/room world: {0}")]
    WrongWorld(String),
}

impl CompileError {
    /// Stable code for logs and, later, metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            CompileError::NotAComponent => "not_a_component",
            CompileError::Invalid(_) => "invalid_component",
            CompileError::WrongWorld(_) => "wrong_world",
        }
    }
}

/// Compiled code of one game version, ready to instantiate many times.
#[derive(Clone)]
pub struct GameCode {
    pre: Pre,
}

/// Pre-linked code of either world version.
#[derive(Clone)]
enum Pre {
    V1(bindings::v1::RoomPre<RoomData>),
    V2(bindings::v2::RoomPre<RoomData>),
}

impl GameCode {
    /// The version of the `respawn:game` world the game was built for.
    pub fn world(&self) -> &'static str {
        match self.pre {
            Pre::V1(_) => "0.1.0",
            Pre::V2(_) => "0.2.0",
        }
    }
}

pub(crate) struct InstanceLimits {
    memory_bytes: usize,
    table_elements: usize,
    call_timeout_ticks: u64,
    call_timeout_ms: u64,
}

/// The host's one Engine and Linker. Cheap to share behind an `Arc`.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<RoomData>,
    limits: InstanceLimits,
    ticker_stop: Arc<AtomicBool>,
    live: Arc<AtomicUsize>,
    /// Guest calls running now (the epoch ticker's pace depends on it).
    in_call: Arc<AtomicUsize>,
    /// Guest profiles being taken (the ticker keeps its fast pace).
    profiling: Arc<FastTicks>,
    /// Instance slots in the pool (`sandbox.max_instances`).
    slots: usize,
}

impl Sandbox {
    /// Builds the engine (pooling allocator unless disabled) and starts the
    /// epoch ticker that enforces call deadlines.
    pub fn new(cfg: &SandboxConfig) -> anyhow::Result<Self> {
        let memory_bytes = cfg.memory_mib as usize * 1024 * 1024;
        let table_elements = 20_000;
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // `RESPAWN_PERFMAP=1` writes /tmp/perf-<pid>.map so `perf report`
        // names guest functions (how BENCHMARKS.md profiles guest code).
        if std::env::var_os("RESPAWN_PERFMAP").is_some_and(|v| v == "1") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        // Reserve address space for what a room may use, not wasmtime's
        // default 4 GiB plus guards per memory (8.7 GB per room instance,
        // which caps a host at about 12,000 instance slots): linear
        // memories get explicit bounds checks instead (their cost is in
        // BENCHMARKS.md), and a pool of 20,000 instances needs about
        // 2.6 TB of address space instead of 170 TB.
        config
            .memory_reservation(memory_bytes as u64)
            .memory_guard_size(64 << 10)
            .guard_before_linear_memory(false)
            .memory_reservation_for_growth(0);
        if cfg.pooling {
            let n = cfg.max_instances;
            let mut pool = PoolingAllocationConfig::default();
            // A Rust guest componentized with the WASI adapter is a handful
            // of core instances (guest, adapter, shims) and two memories.
            pool.total_component_instances(n)
                .total_core_instances(n.saturating_mul(8))
                .total_memories(n.saturating_mul(2))
                .total_tables(n.saturating_mul(4))
                .max_core_instances_per_component(16)
                .max_memories_per_component(4)
                .max_tables_per_component(8)
                .max_memory_size(memory_bytes)
                .table_elements(table_elements)
                .total_stacks(n)
                // A freed slot's linear memory goes back to the kernel whole:
                // kept resident, every slot a peak ever used held 64 KiB for
                // good (about 7 KiB per idle player in rooms of 10), and
                // instantiation measured faster without the memset.
                // Tables keep 64 KiB and decommits are batched, as in the
                // tuning that made instantiation fast (BENCHMARKS.md,
                // "Creating a room instance"); only linear memory was
                // measured without it.
                .linear_memory_keep_resident(0)
                .table_keep_resident(64 << 10)
                .decommit_batch_size(32);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        bindings::v2::Room::add_to_linker::<RoomData, HasSelf<RoomData>>(&mut linker, |d| d)?;
        bindings::v1::Room::add_to_linker::<RoomData, HasSelf<RoomData>>(&mut linker, |d| d)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        let in_call = Arc::new(AtomicUsize::new(0));
        let profiling = Arc::new(FastTicks::new());
        let (weak, stop, busy, sampling) = (engine.weak(), ticker_stop.clone(), in_call.clone(), profiling.clone());
        std::thread::Builder::new()
            .name("respawn-epoch".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // A guest profile samples at every tick: ticking fast
                    // while one runs catches calls shorter than IDLE_TICK.
                    let running = busy.load(Ordering::Relaxed) > 0 || sampling.active();
                    std::thread::sleep(if running { EPOCH_TICK } else { IDLE_TICK });
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })?;

        Ok(Self {
            engine,
            linker,
            limits: InstanceLimits {
                memory_bytes,
                table_elements,
                call_timeout_ticks: cfg.call_timeout_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1),
                call_timeout_ms: cfg.call_timeout_ms,
            },
            ticker_stop,
            live: Arc::new(AtomicUsize::new(0)),
            in_call,
            profiling,
            slots: cfg.max_instances as usize,
        })
    }

    /// Guest instances alive now.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Instance slots in the pool: what [`Sandbox::live_instances`] is
    /// bounded by.
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The engine, for code that needs it directly (benchmarks, caches).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a verified component and checks it implements our world.
    /// Only verified modules compile: unverified bytes have no way in.
    /// CPU-heavy: call it off the async runtime's worker threads.
    pub fn compile(&self, module: &VerifiedModule) -> Result<GameCode, CompileError> {
        self.compile_cached(module, None).map(|(code, _)| code)
    }

    /// [`Sandbox::compile`], using and filling `cache`; also says whether
    /// the code came from the cache.
    pub fn compile_cached(
        &self,
        module: &VerifiedModule,
        cache: Option<&CodeCache>,
    ) -> Result<(GameCode, bool), CompileError> {
        let bytes = module.bytes();
        if !wasmparser::Parser::is_component(bytes) {
            return Err(CompileError::NotAComponent);
        }
        let cached = cache.and_then(|c| c.get(&self.engine, module.digest()));
        let hit = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let c = Component::new(&self.engine, bytes).map_err(|e| CompileError::Invalid(format!("{e:#}")))?;
                if let Some(cache) = cache {
                    cache.put(module.digest(), &c);
                }
                c
            }
        };
        check_imports(&self.engine, &component)?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| CompileError::WrongWorld(format!("{e:#}")))?;
        // The current world first; a game built against 0.1.0 still runs.
        let pre = match bindings::v2::RoomPre::new(instance_pre.clone()) {
            Ok(pre) => Pre::V2(pre),
            Err(current) => match bindings::v1::RoomPre::new(instance_pre) {
                Ok(pre) => Pre::V1(pre),
                Err(_) => return Err(CompileError::WrongWorld(format!("{current:#}"))),
            },
        };
        Ok((GameCode { pre }, hit))
    }
}

/// Until when the epoch ticker keeps its fast pace for guest profiles: a
/// deadline, not a count, so a profile nobody collects cannot keep it fast
/// past its time.
pub(crate) struct FastTicks {
    origin: std::time::Instant,
    /// Milliseconds after `origin`.
    until_ms: std::sync::atomic::AtomicU64,
}

impl FastTicks {
    fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
            until_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Keeps the pace fast until `until` at least.
    pub(crate) fn extend(&self, until: std::time::Instant) {
        let ms = until.saturating_duration_since(self.origin).as_millis() as u64;
        self.until_ms.fetch_max(ms, Ordering::Relaxed);
    }

    fn active(&self) -> bool {
        (self.origin.elapsed().as_millis() as u64) < self.until_ms.load(Ordering::Relaxed)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

/// WASI interfaces a game may import: what the wasm32-wasip1 adapter and
/// the other guest toolchains (wasi-libc, componentize-js without its
/// networking features) ask for. The filesystem is there because the
/// adapter always imports it; no directory is preopened, so a game sees an
/// empty one. Sockets, HTTP and anything else are refused at load
/// (`wrong_world`), whatever the linker could provide.
const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// Our own interfaces.
const OWN_PACKAGE: &str = "respawn:game/";

/// Refuses a component that imports anything outside the game world, by
/// name, before the linker is asked.
fn check_imports(engine: &Engine, component: &Component) -> Result<(), CompileError> {
    let foreign: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .filter(|name| !import_allowed(name))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(CompileError::WrongWorld(format!(
        "it imports {}, which a game may not use (allowed: respawn:game and {})",
        foreign.join(", "),
        ALLOWED_WASI.join(", ")
    )))
}

/// `wasi:cli/stdout@0.2.3` and the like: the interface without its
/// version.
fn import_allowed(name: &str) -> bool {
    let unversioned = name.split('@').next().unwrap_or(name);
    name.starts_with(OWN_PACKAGE) || ALLOWED_WASI.contains(&unversioned)
}

#[cfg(test)]
mod tests {

    /// The ticker's fast pace for profiles lasts until the latest
    /// deadline asked for, and ends there whether or not the profile was
    /// collected.
    #[test]
    fn fast_ticks_end_at_the_latest_deadline() {
        let now = std::time::Instant::now();
        let fast = FastTicks::new();
        assert!(!fast.active());
        fast.extend(now + Duration::from_secs(60));
        fast.extend(now);
        assert!(fast.active(), "the later deadline holds");
        let short = FastTicks::new();
        short.extend(now + Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!short.active(), "over once its deadline passed");
    }

    use super::*;

    #[tokio::test]
    async fn games_built_against_either_world_version_run() {
        let sandbox = Sandbox::new(&crate::config::SandboxConfig {
            pooling: false,
            ..Default::default()
        })
        .expect("sandbox");
        let old = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/echo-wit-0.1.0.wasm"
        ))
        .expect("fixture");
        for (bytes, world) in [(old, "0.1.0"), (crate::testing::guest("echo"), "0.2.0")] {
            let code = sandbox
                .compile(&crate::testing::verified(&bytes, "echo", "1.0.0"))
                .expect("compiles");
            assert_eq!(code.world(), world);
            let mut g = GuestInstance::new(&sandbox, &code, "t".into(), 1, None)
                .await
                .expect("instance");
            assert_eq!(g.init(1, "r", b"{}").await.expect("init"), Ok(()));
            assert!(g.on_join(1, 7, "ann", None).await.expect("join").is_ok());
            assert!(g.on_message(1, 7, br#"{"hi":1}"#).await.expect("message").is_ok());
            let effects: Vec<Effect> = g.take_effects().collect();
            assert!(
                effects
                    .iter()
                    .any(|e| matches!(e, Effect::Send { to: 7, .. } | Effect::Broadcast { .. })),
                "{world}: {effects:?}"
            );
        }
    }

    #[test]
    fn only_the_game_world_and_harmless_wasi_may_be_imported() {
        for ok in [
            "respawn:game/host@0.1.0",
            "wasi:cli/stdout@0.2.12",
            "wasi:random/random@0.2.0",
        ] {
            assert!(import_allowed(ok), "{ok}");
        }
        for refused in [
            "wasi:sockets/tcp@0.2.0",
            "wasi:http/types@0.2.0",
            "wasi:cli/stdoutx@0.2.0",
            "other:pkg/iface",
        ] {
            assert!(!import_allowed(refused), "{refused}");
        }
        // A component importing sockets is refused as the wrong world, by
        // name, though the linker (all of WASI) could satisfy it.
        let mut resolve = wit_parser::Resolve::default();
        let pkg = resolve
            .push_str(
                "sockets.wit",
                "package wasi:sockets@0.2.0;\n\
                 interface network { resource network; }\n\
                 interface instance-network { use network.{network}; instance-network: func() -> network; }\n\
                 world bad { import instance-network; }",
            )
            .expect("wit");
        let world = resolve.select_world(&[pkg], Some("bad")).expect("world");
        let mut core = wit_component::dummy_module(&resolve, world, wit_parser::ManglingAndAbi::Standard32);
        wit_component::embed_component_metadata(&mut core, &resolve, world, wit_component::StringEncoding::UTF8)
            .expect("metadata");
        let evil = wit_component::ComponentEncoder::default()
            .module(&core)
            .expect("module")
            .encode()
            .expect("component");
        let sandbox = Sandbox::new(&crate::config::SandboxConfig::default()).expect("sandbox");
        match sandbox.compile(&crate::testing::verified(&evil, "evil", "1.0.0")) {
            Err(CompileError::WrongWorld(why)) => assert!(why.contains("wasi:sockets/"), "{why}"),
            Err(other) => panic!("refused for another reason: {other}"),
            Ok(_) => panic!("a component importing wasi:sockets was accepted"),
        }
        // A game built against the first world (kept in tests/fixtures)
        // still passes.
        let old = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/echo-wit-0.1.0.wasm"
        ))
        .expect("fixture");
        let c = Component::new(&Engine::default(), &old).expect("compile");
        assert!(check_imports(&Engine::default(), &c).is_ok());
        // Every guest built here passes.
        let engine = Engine::default();
        for g in ["echo", "chat", "tictactoe", "faulty", "null"] {
            let c = Component::new(&engine, crate::testing::guest(g)).expect("compile");
            assert!(check_imports(&engine, &c).is_ok(), "{g}");
        }
    }
}
