//! One room's guest: a wasmtime Store with its instance, the host imports
//! it calls, and the limits it runs under.

use super::bindings::{Identity, KvError, Level, Player, Rejection, v1, v2};
use super::determinism::{Entropy, EntropyPosition, RoomClock, SharedRng};
use super::{GameCode, Sandbox};
use crate::metrics::{Export, GameMetrics};
use crate::storage::kv::{GameSpace, KvAccess, KvEffects, KvFailure, KvRead};
use rand::Rng;
use std::fmt;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Effects one guest call may produce before it is trapped.
pub const MAX_EFFECTS_PER_CALL: usize = 4096;
/// Payload bytes one guest call may send before it is trapped.
pub const MAX_EFFECT_BYTES_PER_CALL: usize = 16 << 20;
/// Longest guest log line kept; the rest is cut.
pub const MAX_LOG_LINE: usize = 4096;

/// Something the guest asked the host to do during a call. Delivered by the
/// room after the call returns; dropped if the call traps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// To one player.
    Send {
        /// Recipient.
        to: u64,
        /// JSON text from the guest.
        payload: Vec<u8>,
    },
    /// To every player, maybe but one.
    Broadcast {
        /// JSON text from the guest.
        payload: Vec<u8>,
        /// Skipped recipient.
        except: Option<u64>,
    },
    /// Remove a player.
    Kick {
        /// Who.
        player: u64,
        /// Told to the player.
        reason: String,
    },
}

/// Why a guest call failed. The instance must not be called again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// The call ran past `sandbox.call_timeout_ms`.
    Timeout,
    /// Linear memory or a table would grow past its limit.
    OutOfMemory,
    /// The guest produced more effects in one call than the host accepts.
    EffectFlood,
    /// Any other trap: a panic (`unreachable`), a bad memory access, ...
    Trap,
}

/// A failed guest call, with wasmtime's description and wasm backtrace.
#[derive(Debug, Clone)]
pub struct GuestFault {
    /// What class of failure.
    pub kind: FaultKind,
    /// wasmtime's full error, including the guest backtrace when known.
    pub detail: String,
    /// What the guest itself said last at `error` level before the call
    /// failed: a Rust panic's message (the SDK's panic hook), a JavaScript
    /// exception's message and stack (the JS SDK). wasmtime's own error
    /// cannot say this: a panic or an exception ends in a bare trap.
    pub said: Option<String>,
}

impl FaultKind {
    /// Stable code for players, logs and crash reports.
    pub fn code(&self) -> &'static str {
        match self {
            FaultKind::Timeout => "timeout",
            FaultKind::OutOfMemory => "out_of_memory",
            FaultKind::EffectFlood => "effect_flood",
            FaultKind::Trap => "trap",
        }
    }
}

impl GuestFault {
    /// A failure the host describes (no guest backtrace behind it), for a
    /// room that must close: counted and reported as a trap.
    pub fn trap(detail: impl Into<String>) -> Self {
        Self {
            kind: FaultKind::Trap,
            detail: detail.into(),
            said: None,
        }
    }

    /// The wasm backtrace's frames, innermost first, as wasmtime wrote
    /// them after each line's `N: 0x.. - `: `module!function`, and on the
    /// outermost the error's cause after a `: `.
    pub fn frames(&self) -> impl Iterator<Item = &str> {
        self.detail
            .lines()
            .filter_map(|l| l.trim().split_once(" - ").map(|(_, f)| f.trim()))
    }

    /// The crash signature: the fault's kind and the top two frames of the
    /// guest backtrace that are the game's own (not the standard library's
    /// panic and abort machinery), without symbol hashes; when those are
    /// unnamed (a JavaScript engine's), the top two functions of the stack
    /// the guest reported. Two faults with one signature are, as far as the
    /// host can tell, the same bug.
    pub fn signature(&self) -> String {
        let own = game_frames(self.frames());
        // An engine's frames (a JavaScript guest's are all unnamed, and the
        // same for every exception) tell bugs apart less well than the
        // stack the guest reported: its function names, never its message,
        // which may quote what a player sent.
        let frames = match self.reported_stack() {
            Some(stack) if unnamed_frames(&own) => stack,
            _ => own,
        };
        format!("{}:{}", self.kind.code(), frames.join(" < "))
    }

    /// The function names of the JavaScript stack the guest reported
    /// before a trap, if it reported one.
    fn reported_stack(&self) -> Option<Vec<String>> {
        if self.kind != FaultKind::Trap {
            return None;
        }
        self.said.as_deref().map(said_frames)
    }

    /// wasmtime's error and, when the guest said something before it
    /// failed, its words: what logs and crash reports show.
    pub fn full(&self) -> String {
        match &self.said {
            Some(said) => format!("{}\nthe guest said: {said}", self.detail),
            None => self.detail.clone(),
        }
    }
}

/// The top two frames of a wasm backtrace (`module!function` each) that
/// are the game's own, without symbol hashes.
pub fn game_frames<'a>(frames: impl Iterator<Item = &'a str>) -> Vec<String> {
    frames
        // The function's generics may hold a `!` of their own
        // (`begin_panic::<..., !>`).
        .map(|f| without_hashes(f.split_once('!').map_or(f, |(_, name)| name)))
        .filter(|f| !is_runtime_frame(f))
        .take(2)
        .collect()
}

/// Whether a backtrace names nothing of the game's: frames there are, and
/// all of them are wasm function indices.
pub fn unnamed_frames(frames: &[String]) -> bool {
    !frames.is_empty() && frames.iter().all(|f| f.starts_with("<wasm function"))
}

/// What the JavaScript SDK writes before its stack.
const JS_EXCEPTION: &str = "uncaught exception in ";

/// Whether `line` is a frame of a JavaScript stack: `function@file:line:column`
/// (the function may be empty), nothing else, so no message text passes.
fn is_js_frame(line: &str) -> bool {
    let Some((name, place)) = line.split_once('@') else {
        return false;
    };
    let mut parts = place.rsplitn(3, ':');
    let (col, row, file) = (parts.next(), parts.next(), parts.next());
    let number = |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    !name.contains(char::is_whitespace)
        && number(col)
        && number(row)
        && file.is_some_and(|f| !f.is_empty() && !f.contains(char::is_whitespace))
}

/// The frames of the JavaScript stack in what a guest said (the JS SDK's
/// uncaught-exception line), nothing else of it.
fn js_stack(said: &str) -> impl Iterator<Item = &str> {
    let js = said.starts_with(JS_EXCEPTION);
    said.lines().skip(1).filter(move |l| js && is_js_frame(l))
}

/// What a guest said with everything but its JavaScript stack's frames
/// taken out (no message, no other line): what a redacted capsule keeps.
pub fn redacted_said(said: &str) -> String {
    let stack: String = js_stack(said).map(|l| format!("\n{l}")).collect();
    if stack.is_empty() {
        "<redacted>".into()
    } else {
        format!("{JS_EXCEPTION}<redacted>{stack}")
    }
}

/// The top two functions of the JavaScript stack a guest reported, or a
/// stand-in when it gave none.
pub fn said_frames(said: &str) -> Vec<String> {
    let names: Vec<String> = js_stack(said)
        .filter_map(|l| l.split_once('@'))
        .map(|(name, _)| {
            if name.is_empty() {
                "<anonymous>".to_owned()
            } else {
                name.to_owned()
            }
        })
        .take(2)
        .collect();
    if names.is_empty() {
        vec!["<an error without a stack>".to_owned()]
    } else {
        names
    }
}

/// `std[1a2b]::process::abort` → `std::process::abort`.
fn without_hashes(frame: &str) -> String {
    let mut out = String::with_capacity(frame.len());
    let mut depth = 0usize;
    for c in frame.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// Frames every panic or abort passes through, whatever the bug.
fn is_runtime_frame(frame: &str) -> bool {
    [
        "std::",
        "core::",
        "alloc::",
        "__rustc::",
        "__rust_",
        "rust_panic",
        // The C SDK's panic (respawn.h): variadic, so never inlined.
        "rs_panic",
        "abort",
        "dlmalloc",
        "<unknown>",
    ]
    .iter()
    .any(|p| frame.starts_with(p) || frame == p.trim_end_matches("::"))
}

/// wasmtime's words only: this reaches players (a join refused because
/// the room cannot come back), who must not read another player's data in
/// what the guest said. Logs and crash reports use [`GuestFault::full`].
impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.detail)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("memory limit of {limit} bytes exceeded (asked for {desired})")]
struct OverLimit {
    limit: usize,
    desired: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("guest call ran past its {0} ms deadline")]
struct Deadline(u64);

/// WASI resources one instance may hold at once.
const MAX_WASI_RESOURCES: usize = 1024;

/// Why an instance could not be created, told apart by the error's type
/// (never by its words), since the room answers each differently.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InstantiateError {
    /// Every instance slot of the pooling allocator is taken.
    #[error("no instance slot is free ({0})")]
    PoolExhausted(String),
    /// The module asks for more memory or table at start than the sandbox
    /// allows.
    #[error("the game needs more memory than sandbox.memory_mib allows: {0}")]
    OverLimit(String),
    /// The module's start code trapped.
    #[error("the game's start code failed: {0}")]
    StartFailed(GuestFault),
    /// Anything else wasmtime reported.
    #[error("{0}")]
    Other(String),
}

impl InstantiateError {
    fn classify(e: wasmtime::Error) -> Self {
        if let Some(pool) = e
            .chain()
            .find_map(|c| c.downcast_ref::<wasmtime::PoolConcurrencyLimitError>())
        {
            return Self::PoolExhausted(pool.to_string());
        }
        if let Some(over) = e.chain().find_map(|c| c.downcast_ref::<OverLimit>()) {
            return Self::OverLimit(over.to_string());
        }
        if e.chain().any(|c| c.is::<wasmtime::Trap>() || c.is::<Deadline>()) {
            return Self::StartFailed(GuestFault::from_error(e));
        }
        Self::Other(format!("{e:#}"))
    }
}

/// The wall-clock bound of one call: the epoch deadline counts only time
/// the guest's code runs, so a call waiting inside WASI (a sleep, a clock
/// poll far in the future) would never end without it. Twice the CPU
/// deadline, plus the epoch ticker's idle period, so a call that computes
/// meets the epoch deadline first.
fn wall_limit(call_timeout_ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(call_timeout_ms.saturating_mul(2).saturating_add(20))
}

/// Runs a guest call, cut at `limit` of wall time from now. The call's
/// future is dropped on expiry, which unwinds the guest's stack; the
/// instance is then spent, and supervision rebuilds the room as for any
/// trap.
async fn bounded<T>(
    limit: std::time::Duration,
    ms: u64,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    crate::bounded::bounded(call, || deadline)
        .await
        .unwrap_or_else(|| Err(Deadline(ms).into()))
}

#[derive(Debug, thiserror::Error)]
#[error("guest exceeded {MAX_EFFECTS_PER_CALL} effects or {MAX_EFFECT_BYTES_PER_CALL} bytes in one call")]
struct Flood;

impl GuestFault {
    fn from_error(e: wasmtime::Error) -> Self {
        let kind = if e.downcast_ref::<OverLimit>().is_some() {
            FaultKind::OutOfMemory
        } else if e.downcast_ref::<Flood>().is_some() {
            FaultKind::EffectFlood
        } else if e.downcast_ref::<Deadline>().is_some()
            || matches!(e.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt))
        {
            FaultKind::Timeout
        } else {
            FaultKind::Trap
        };
        Self {
            kind,
            detail: format!("{e:#}"),
            said: None,
        }
    }
}

/// The room's memory and table limits.
struct Limits {
    memory_bytes: usize,
    table_elements: usize,
    /// What the instance's linear memories hold now, together.
    memory_now: usize,
    /// The last growth counted, until it is known to have happened.
    pending: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(&mut self, current: usize, desired: usize, max: Option<usize>) -> wasmtime::Result<bool> {
        self.pending = 0;
        if desired > self.memory_bytes {
            return Err(OverLimit {
                limit: self.memory_bytes,
                desired,
            }
            .into());
        }
        // Counted once it happened: a growth past the memory's own maximum
        // fails after this, and `memory_grow_failed` takes it back.
        if max.is_none_or(|m| desired <= m) {
            self.pending = desired.saturating_sub(current);
            self.memory_now += self.pending;
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_now -= std::mem::take(&mut self.pending);
        Ok(())
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _max: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(OverLimit {
                limit: self.table_elements,
                desired,
            }
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        32
    }
    fn tables(&self) -> usize {
        32
    }
    fn memories(&self) -> usize {
        8
    }
}

/// What a room's Store holds: WASI state, limits, the room's clock and
/// randomness, and the effects of the call under way.
pub struct RoomData {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limits,
    clock: RoomClock,
    rng: rand::rngs::ChaCha8Rng,
    wasi_rngs: [SharedRng; 2],
    effects: Vec<Effect>,
    /// The storage reads of the last call that failed.
    failed_reads: Vec<KvRead>,
    effect_bytes: usize,
    tick_request: Option<u32>,
    label: String,
    /// Epoch ticks the current call has run for.
    call_ticks: u64,
    /// The game's storage, as this call may use it.
    kv: KvAccess,
    /// Sampling the guest's stack at every epoch tick of its calls, while
    /// an operator profiles the room.
    profiler: Option<Profiling>,
    /// The last `error`-level line the guest logged in the current call
    /// (see [`GuestFault::said`]).
    said: Option<String>,
}

/// A guest profile being taken (the epoch ticker keeps its fast pace
/// until `until`, see the sandbox's `IDLE_TICK`).
pub struct Profiling {
    profiler: Box<wasmtime::GuestProfiler>,
    /// A profile nobody collected is dropped past this.
    until: std::time::Instant,
}

impl Profiling {
    /// Ends the profile, writing the Firefox profiler's JSON.
    pub fn finish(self, out: &mut Vec<u8>) -> anyhow::Result<()> {
        self.profiler.finish(out).map_err(|e| anyhow::anyhow!("{e:#}"))
    }
}

impl RoomData {
    fn charge(&mut self, bytes: usize) -> wasmtime::Result<()> {
        self.effect_bytes += bytes;
        if self.effects.len() >= MAX_EFFECTS_PER_CALL || self.effect_bytes > MAX_EFFECT_BYTES_PER_CALL {
            return Err(Flood.into());
        }
        Ok(())
    }
}

impl WasiView for RoomData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl v2::respawn::game::types::Host for RoomData {}
impl v1::respawn::game::types::Host for RoomData {}

impl From<KvFailure> for KvError {
    fn from(f: KvFailure) -> Self {
        match f {
            KvFailure::InvalidKey => KvError::InvalidKey,
            KvFailure::TooLarge(n) => KvError::TooLarge(n),
            KvFailure::QuotaExceeded(n) => KvError::QuotaExceeded(n),
            KvFailure::NotNow => KvError::NotNow,
            KvFailure::Unavailable => KvError::Unavailable,
        }
    }
}

impl v2::respawn::game::kv::Host for RoomData {
    fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, KvError>> {
        Ok(self.kv.get(key).map_err(Into::into))
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), KvError>> {
        self.charge(value.len())?;
        Ok(self.kv.set(key, value).map_err(Into::into))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), KvError>> {
        Ok(self.kv.delete(key).map_err(Into::into))
    }

    fn list(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> wasmtime::Result<Result<Vec<String>, KvError>> {
        Ok(self.kv.list(prefix, start_after, limit).map_err(Into::into))
    }
}

/// Games built against 0.1.0 call the same host functions.
impl v1::respawn::game::host::Host for RoomData {
    fn send(&mut self, to: u64, payload: Vec<u8>) -> wasmtime::Result<()> {
        v2::respawn::game::host::Host::send(self, to, payload)
    }
    fn broadcast(&mut self, payload: Vec<u8>, except: Option<u64>) -> wasmtime::Result<()> {
        v2::respawn::game::host::Host::broadcast(self, payload, except)
    }
    fn kick(&mut self, player: u64, reason: String) -> wasmtime::Result<()> {
        v2::respawn::game::host::Host::kick(self, player, reason)
    }
    fn log(&mut self, level: v1::respawn::game::types::Level, message: String) -> wasmtime::Result<()> {
        v2::respawn::game::host::Host::log(self, level.into(), message)
    }
    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        v2::respawn::game::host::Host::now_ms(self)
    }
    fn random_u64(&mut self) -> wasmtime::Result<u64> {
        v2::respawn::game::host::Host::random_u64(self)
    }
    fn set_tick_interval(&mut self, ms: u32) -> wasmtime::Result<()> {
        v2::respawn::game::host::Host::set_tick_interval(self, ms)
    }
}

impl v2::respawn::game::host::Host for RoomData {
    fn send(&mut self, to: u64, payload: Vec<u8>) -> wasmtime::Result<()> {
        self.charge(payload.len())?;
        self.effects.push(Effect::Send { to, payload });
        Ok(())
    }

    fn broadcast(&mut self, payload: Vec<u8>, except: Option<u64>) -> wasmtime::Result<()> {
        self.charge(payload.len())?;
        self.effects.push(Effect::Broadcast { payload, except });
        Ok(())
    }

    fn kick(&mut self, player: u64, reason: String) -> wasmtime::Result<()> {
        self.charge(reason.len())?;
        self.effects.push(Effect::Kick { player, reason });
        Ok(())
    }

    fn log(&mut self, level: Level, mut message: String) -> wasmtime::Result<()> {
        if message.len() > MAX_LOG_LINE {
            let mut cut = MAX_LOG_LINE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let room = self.label.as_str();
        match level {
            Level::Trace => tracing::trace!(target: "guest", room, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", room, "{message}"),
            Level::Info => tracing::info!(target: "guest", room, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", room, "{message}"),
            Level::Error => {
                tracing::error!(target: "guest", room, "{message}");
                self.said = Some(message);
            }
        }
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        Ok(self.clock.ms())
    }

    fn random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.rng.next_u64())
    }

    fn set_tick_interval(&mut self, ms: u32) -> wasmtime::Result<()> {
        self.tick_request = Some(ms);
        Ok(())
    }
}

/// A running guest of one room. Every call takes the room's logical time;
/// after a [`GuestFault`] the instance is spent and must be dropped.
pub struct GuestInstance {
    store: Store<RoomData>,
    room: Bound,
    /// Reads the next input call replays (see [`GuestInstance::replaying`]).
    replay: Option<Vec<KvRead>>,
    _live: LiveInstance,
    /// The sandbox's count of calls running (see `IDLE_TICK`).
    in_call: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// `sandbox.call_timeout_ms`, and the wall-clock bound it gives.
    timeout_ms: u64,
    wall: std::time::Duration,
    /// Where a live room's calls are timed and its faults counted.
    metrics: Option<Arc<GameMetrics>>,
    /// The game's code, for a guest profiler.
    component: wasmtime::component::Component,
    /// The sandbox's count of guest profiles under way.
    profiling: std::sync::Arc<super::FastTicks>,
}

/// A call under way: running (see [`InCall`]) since `started`.
struct Call {
    _running: InCall,
    export: Export,
    started: std::time::Instant,
}

/// An instance of either world version.
enum Bound {
    V1(v1::Room),
    V2(v2::Room),
}

/// Calls export `$f` on whichever world the instance implements, bounded
/// in time; `$map` turns a 0.1.0 answer into ours.
macro_rules! call_export {
    ($self:ident, $f:ident ( $($arg:expr),* ), $map:expr) => {{
        let (wall, ms) = ($self.wall, $self.timeout_ms);
        match &$self.room {
            Bound::V2(r) => bounded(wall, ms, r.respawn_game_game().$f(&mut $self.store, $($arg),*)).await,
            Bound::V1(r) => bounded(wall, ms, r.respawn_game_game().$f(&mut $self.store, $($arg),*))
                .await
                .map($map),
        }
    }};
}

/// Counts a guest call among the running ones (see the sandbox's epoch
/// ticker) until dropped.
struct InCall(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl InCall {
    fn new(count: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(count.clone())
    }
}

impl Drop for InCall {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Counts an instance among the sandbox's live ones while it exists.
struct LiveInstance(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Drop for LiveInstance {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What a call returned, or why it failed.
pub type CallResult<T> = Result<T, GuestFault>;

impl GuestInstance {
    /// Instantiates `code` for a room labelled `label` (used in logs),
    /// with all its randomness derived from `seed`.
    /// `kv` is the game's storage (`None`: storage calls fail with
    /// `unavailable`).
    pub async fn new(
        sandbox: &Sandbox,
        code: &GameCode,
        label: String,
        seed: u64,
        kv: Option<Arc<GameSpace>>,
    ) -> Result<Self, InstantiateError> {
        let clock = RoomClock::default();
        let entropy = Entropy::from_seed(seed);
        let wasi_rngs = [entropy.wasi_secure.clone(), entropy.wasi_insecure.clone()];
        let wasi = WasiCtxBuilder::new()
            .wall_clock(clock.clone())
            .monotonic_clock(clock.clone())
            .secure_random(entropy.wasi_secure)
            .insecure_random(entropy.wasi_insecure)
            .insecure_random_seed(entropy.wasi_seed)
            .allow_ip_name_lookup(false)
            .allow_tcp(false)
            .allow_udp(false)
            .build();
        let data = RoomData {
            wasi,
            table: {
                // WASI handles a guest can hold at once (streams, pollables):
                // a guest that leaks them traps instead of growing the host.
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_WASI_RESOURCES);
                table
            },
            limits: Limits {
                memory_bytes: sandbox.limits.memory_bytes,
                table_elements: sandbox.limits.table_elements,
                memory_now: 0,
                pending: 0,
            },
            clock,
            rng: entropy.host,
            wasi_rngs,
            effects: Vec::new(),
            failed_reads: Vec::new(),
            effect_bytes: 0,
            tick_request: None,
            label,
            call_ticks: 0,
            kv: KvAccess::new(kv),
            profiler: None,
            said: None,
        };
        let mut store = Store::new(sandbox.engine(), data);
        store.limiter(|d| &mut d.limits);
        // At every epoch tick a running call yields to the runtime, so other
        // rooms on this thread keep going; past its budget it traps.
        let (budget, timeout_ms) = (sandbox.limits.call_timeout_ticks, sandbox.limits.call_timeout_ms);
        store.epoch_deadline_callback(move |mut ctx| {
            // Sampled here, while the guest's frames are on the stack.
            if let Some(mut profiling) = ctx.data_mut().profiler.take()
                && std::time::Instant::now() < profiling.until
            {
                profiling.profiler.sample(&ctx, super::EPOCH_TICK);
                ctx.data_mut().profiler = Some(profiling);
            }
            let data = ctx.data_mut();
            data.call_ticks += 1;
            if data.call_ticks >= budget {
                return Err(Deadline(timeout_ms).into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let room = {
            // Start functions run guest code too: tick at the calls' pace.
            let _in_call = InCall::new(&sandbox.in_call);
            match &code.pre {
                super::Pre::V2(pre) => Bound::V2(
                    pre.instantiate_async(&mut store)
                        .await
                        .map_err(InstantiateError::classify)?,
                ),
                super::Pre::V1(pre) => Bound::V1(
                    pre.instantiate_async(&mut store)
                        .await
                        .map_err(InstantiateError::classify)?,
                ),
            }
        };
        sandbox.live.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let component = match &code.pre {
            super::Pre::V2(pre) => pre.instance_pre().component().clone(),
            super::Pre::V1(pre) => pre.instance_pre().component().clone(),
        };
        Ok(Self {
            component,
            profiling: sandbox.profiling.clone(),
            store,
            room,
            replay: None,
            _live: LiveInstance(sandbox.live.clone()),
            in_call: sandbox.in_call.clone(),
            timeout_ms: sandbox.limits.call_timeout_ms,
            wall: wall_limit(sandbox.limits.call_timeout_ms),
            metrics: None,
        })
    }

    /// Prepares a call; the call counts as running until the returned
    /// guard drops (also when the call's future is dropped mid-call).
    fn begin(&mut self, now_ms: u64, input: bool, export: Export) -> Call {
        let replay = if input { self.replay.take() } else { None };
        let data = self.store.data_mut();
        data.kv.begin(input, replay);
        data.clock.set_ms(now_ms);
        data.effects.clear();
        data.effect_bytes = 0;
        data.call_ticks = 0;
        data.said = None;
        self.store.set_epoch_deadline(1);
        Call {
            _running: InCall::new(&self.in_call),
            export,
            started: std::time::Instant::now(),
        }
    }

    fn finish<T>(&mut self, r: wasmtime::Result<T>, call: Call) -> CallResult<T> {
        let r = r.map_err(|e| {
            let data = self.store.data_mut();
            data.effects.clear();
            data.failed_reads = data.kv.discard();
            GuestFault {
                said: data.said.take(),
                ..GuestFault::from_error(e)
            }
        });
        if let Some(m) = &self.metrics {
            m.call(call.export, call.started.elapsed().as_secs_f64());
            if let Err(fault) = &r {
                m.fault(fault.kind.code());
            }
        }
        r
    }

    /// Bytes of linear memory the instance holds (its memories grow, never
    /// shrink).
    pub fn memory_in_use(&self) -> usize {
        self.store.data().limits.memory_now
    }

    /// Whether a profile is under way (and not past its time).
    pub fn profiling(&self) -> bool {
        self.store
            .data()
            .profiler
            .as_ref()
            .is_some_and(|p| std::time::Instant::now() < p.until)
    }

    /// Starts sampling the guest's calls (see `RoomData::profiler`) for a
    /// profile named `name`, dropped if still running at `until`.
    pub fn start_profile(&mut self, name: &str, until: std::time::Instant) -> anyhow::Result<()> {
        let profiler = wasmtime::GuestProfiler::new_component(
            self.store.engine(),
            name,
            super::EPOCH_TICK,
            self.component.clone(),
            std::iter::empty(),
        )?;
        self.profiling.extend(until);
        self.store.data_mut().profiler = Some(Profiling {
            profiler: Box::new(profiler),
            until,
        });
        Ok(())
    }

    /// The profile under way, taken out (to move it to the instance that
    /// replaces this one, or to finish it); none past its time.
    pub fn take_profiler(&mut self) -> Option<Profiling> {
        self.store
            .data_mut()
            .profiler
            .take()
            .filter(|p| std::time::Instant::now() < p.until)
    }

    /// Goes on sampling with `profiling` (of an instance of the same code).
    pub fn put_profiler(&mut self, profiling: Option<Profiling>) {
        self.store.data_mut().profiler = profiling;
    }

    /// From now on, time this instance's calls and count its faults in
    /// its game's metrics (a live room's instance; not a replay's).
    pub fn count_in(&mut self, metrics: Arc<GameMetrics>) {
        self.metrics = Some(metrics);
    }

    /// `init(room, config)`.
    pub async fn init(&mut self, now_ms: u64, room: &str, config: &[u8]) -> CallResult<Result<(), String>> {
        let call = self.begin(now_ms, false, Export::Init);
        let r = call_export!(self, call_init(room, config), |r| r);
        self.finish(r, call)
    }

    /// `on-join(player)`.
    /// `user` is the player's verified identity, if any (games built
    /// against 0.1.0 do not see it).
    pub async fn on_join(
        &mut self,
        now_ms: u64,
        id: u64,
        name: &str,
        user: Option<&Identity>,
    ) -> CallResult<Result<(), Rejection>> {
        let call = self.begin(now_ms, true, Export::OnJoin);
        let player = Player {
            id,
            name: name.to_owned(),
            user: user.cloned(),
        };
        let old = v1::respawn::game::types::Player {
            id,
            name: name.to_owned(),
        };
        let (wall, ms) = (self.wall, self.timeout_ms);
        let r = match &self.room {
            Bound::V2(r) => bounded(wall, ms, r.respawn_game_game().call_on_join(&mut self.store, &player)).await,
            Bound::V1(r) => bounded(wall, ms, r.respawn_game_game().call_on_join(&mut self.store, &old))
                .await
                .map(|a| a.map_err(Rejection::from)),
        };
        self.finish(r, call)
    }

    /// `on-leave(player)`.
    pub async fn on_leave(&mut self, now_ms: u64, id: u64) -> CallResult<()> {
        let call = self.begin(now_ms, true, Export::OnLeave);
        let r = call_export!(self, call_on_leave(id), |r| r);
        self.finish(r, call)
    }

    /// `on-message(player, payload)`.
    pub async fn on_message(&mut self, now_ms: u64, id: u64, payload: &[u8]) -> CallResult<Result<(), Rejection>> {
        let call = self.begin(now_ms, true, Export::OnMessage);
        let r = call_export!(self, call_on_message(id, payload), |a| a.map_err(Rejection::from));
        self.finish(r, call)
    }

    /// `on-tick(now)`.
    pub async fn on_tick(&mut self, now_ms: u64) -> CallResult<()> {
        let call = self.begin(now_ms, true, Export::OnTick);
        let r = call_export!(self, call_on_tick(now_ms), |r| r);
        self.finish(r, call)
    }

    /// `snapshot()`.
    pub async fn snapshot(&mut self, now_ms: u64) -> CallResult<Vec<u8>> {
        let call = self.begin(now_ms, false, Export::Snapshot);
        let r = call_export!(self, call_snapshot(), |r| r);
        self.finish(r, call)
    }

    /// `restore(state)`.
    pub async fn restore(&mut self, now_ms: u64, state: &[u8]) -> CallResult<Result<(), String>> {
        let call = self.begin(now_ms, false, Export::Restore);
        let r = call_export!(self, call_restore(state), |r| r);
        self.finish(r, call)
    }

    /// The next input call is a replay: its storage reads are answered
    /// with `reads` (what the first run saw) and its writes dropped.
    pub fn replaying(&mut self, reads: Vec<KvRead>) {
        self.replay = Some(reads);
    }

    /// What the last input call read from and wrote to the game's
    /// storage; the writes are the caller's to apply.
    pub fn take_kv(&mut self) -> KvEffects {
        self.store.data_mut().kv.take()
    }

    /// What the last call read from the game's storage before it failed.
    pub fn take_failed_reads(&mut self) -> Vec<KvRead> {
        std::mem::take(&mut self.store.data_mut().failed_reads)
    }

    /// Whether a replayed call asked storage something else than the first
    /// run did (a nondeterministic game, or a host bug); cleared on read.
    pub fn take_divergence(&mut self) -> bool {
        std::mem::take(&mut self.store.data_mut().kv.diverged)
    }

    /// The effects of the last call, in the order the guest produced them.
    pub fn take_effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.store.data_mut().effects.drain(..)
    }

    /// Where the instance's random streams stand.
    pub fn entropy_position(&self) -> EntropyPosition {
        let data = self.store.data();
        EntropyPosition {
            host: data.rng.get_word_pos(),
            wasi_secure: data.wasi_rngs[0].position(),
            wasi_insecure: data.wasi_rngs[1].position(),
        }
    }

    /// Puts the instance's random streams where `at` says, so it draws
    /// what an earlier instance of the same room drew from there.
    pub fn seek_entropy(&mut self, at: EntropyPosition) {
        let data = self.store.data_mut();
        data.rng.set_word_pos(at.host);
        data.wasi_rngs[0].seek(at.wasi_secure);
        data.wasi_rngs[1].seek(at.wasi_insecure);
    }

    /// The tick interval the guest asked for during the last calls, if any.
    pub fn take_tick_request(&mut self) -> Option<u32> {
        self.store.data_mut().tick_request.take()
    }

    /// The last call's effects and tick request, left in place.
    pub fn pending(&self) -> (&[Effect], Option<u32>) {
        let data = self.store.data();
        (&data.effects, data.tick_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SandboxConfig;

    fn sandbox(pooling: bool, max_instances: u32, memory_mib: u32) -> Sandbox {
        Sandbox::new(&SandboxConfig {
            pooling,
            max_instances,
            memory_mib,
            ..SandboxConfig::default()
        })
        .expect("sandbox")
    }

    #[tokio::test]
    async fn instantiation_failures_are_told_apart_by_type() {
        // A full pool is the host's capacity, whatever wasmtime's words.
        let pool = sandbox(true, 2, 64);
        let echo = crate::testing::module(&pool, "echo", "echo", "1.0.0");
        let _a = GuestInstance::new(&pool, &echo.code, "a".into(), 1, None)
            .await
            .expect("first");
        let _b = GuestInstance::new(&pool, &echo.code, "b".into(), 2, None)
            .await
            .expect("second");
        let third = GuestInstance::new(&pool, &echo.code, "c".into(), 3, None).await.err();
        assert!(matches!(third, Some(InstantiateError::PoolExhausted(_))), "{third:?}");
        // A memory limit below what the module needs at start is the
        // limiter's refusal.
        let small = sandbox(false, 16, 1);
        let echo = crate::testing::module(&small, "echo", "echo", "1.0.0");
        let tight = GuestInstance::new(&small, &echo.code, "d".into(), 4, None).await.err();
        assert!(matches!(tight, Some(InstantiateError::OverLimit(_))), "{tight:?}");
    }

    #[tokio::test]
    async fn every_instance_caps_its_wasi_resource_table() {
        let sb = sandbox(false, 4, 64);
        let echo = crate::testing::module(&sb, "echo", "echo", "1.0.0");
        let guest = GuestInstance::new(&sb, &echo.code, "t".into(), 1, None)
            .await
            .expect("instance");
        assert_eq!(guest.store.data().table.max_capacity(), MAX_WASI_RESOURCES);
    }

    #[test]
    fn a_crash_signature_skips_the_panic_machinery_and_symbol_hashes() {
        let fault = GuestFault {
            kind: FaultKind::Trap,
            detail: "error while executing at wasm backtrace:\n    0:  0x1c2ca - <unknown>!abort\n    \
                     1:  0x1791a - <unknown>!std[aed8c7328796cffa]::sys::pal::wasi::abort_internal\n    \
                     2:  0x16c31 - <unknown>!__rustc[b1da763420d39311]::rust_panic\n    \
                     3:  0x22c83 - <unknown>!std[aed8]::sys::backtrace::__rust_end_short_backtrace::<std[aed8]::panicking::panic_handler::{closure#0}, !>\n    \
                     4:  0x2b237 - <unknown>!core[c52e]::panicking::panic_bounds_check\n    \
                     5:  0x1000 - <unknown>!faulty[0123abcd]::Faulty::on_message\n    \
                     6:  0x2000 - <unknown>!respawn_guest_sdk[99]::runtime::dispatch_message"
                .into(),
            said: Some("guest panicked: index out of bounds".into()),
        };
        assert_eq!(
            fault.signature(),
            "trap:faulty::Faulty::on_message < respawn_guest_sdk::runtime::dispatch_message"
        );
        let bare = GuestFault {
            kind: FaultKind::Timeout,
            detail: "guest call ran past its 100 ms deadline".into(),
            said: None,
        };
        assert_eq!(bare.signature(), "timeout:");
        let engine = GuestFault {
            kind: FaultKind::Trap,
            detail: "error while executing at wasm backtrace:\n    0: 0x8bf9eb - <unknown>!<wasm function 12608>\n    \
                     1: 0x1ad65c - <unknown>!<wasm function 4450>"
                .into(),
            said: Some(
                "uncaught exception in onMessage: TypeError: o is null\nplay@bundle.js:3:7\nonMessage@bundle.js:9:1\n@bundle.js:20:2"
                    .into(),
            ),
        };
        assert_eq!(
            engine.signature(),
            "trap:play < onMessage",
            "frames that name nothing give way to the stack the guest reported, not its message"
        );
        let stackless = GuestFault {
            said: Some("uncaught exception in onTick: thrown value: \"boom\"".into()),
            ..engine.clone()
        };
        assert_eq!(stackless.signature(), "trap:<an error without a stack>");
        let c_panic = GuestFault {
            kind: FaultKind::Trap,
            detail: "error while executing at wasm backtrace:\n    0:  0x4c1 - <unknown>!rs_panic\n    \
                     1:  0x52d - <unknown>!check_invariant\n    \
                     2:  0x61e - <unknown>!exports_respawn_game_game_on_message"
                .into(),
            said: Some("guest panicked: invariant broken".into()),
        };
        assert_eq!(
            c_panic.signature(),
            "trap:check_invariant < exports_respawn_game_game_on_message",
            "the C SDK's panic is machinery, like Rust's"
        );
        let deadline = GuestFault {
            kind: FaultKind::Timeout,
            detail: "guest call ran past its 100 ms deadline".into(),
            said: Some("an earlier error line\nf@x.js:1:1".into()),
        };
        assert_eq!(
            deadline.signature(),
            "timeout:",
            "no backtrace: the error line is not this fault's"
        );
    }
}
