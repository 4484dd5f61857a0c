//! Prometheus metrics, in the text exposition format on the admin API's
//! `/metrics` (token as a bearer credential; the scrape config is in the
//! README). Base units, `_total` counters, `_seconds` histograms, the
//! `respawn_` prefix, and no per-player or per-room label: games,
//! versions, transports, exports and codes are the only labels, so the
//! number of series stays bounded by what operators deploy.
//!
//! What the message path counts is counted where it happens (a relaxed
//! atomic add on a handle resolved once per connection, room or call
//! site); what the host already keeps (deploy counters, rooms per
//! version, queue depths) is read when Prometheus scrapes.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Whether the message path counts (`observability.metrics`). Read on
/// every counted event, so off really is off.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// The host's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Turns counting on the message path on or off (start-up).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether the message path counts.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Guest call durations: from 10 µs (a chat message) to the call
/// deadline's order (100 ms) and past it.
const CALL_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The guest exports a call duration is labelled with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    /// `init`.
    Init,
    /// `on-join`.
    OnJoin,
    /// `on-message`.
    OnMessage,
    /// `on-leave`.
    OnLeave,
    /// `on-tick`.
    OnTick,
    /// `snapshot`.
    Snapshot,
    /// `restore`.
    Restore,
}

impl Export {
    const ALL: [Export; 7] = [
        Export::Init,
        Export::OnJoin,
        Export::OnMessage,
        Export::OnLeave,
        Export::OnTick,
        Export::Snapshot,
        Export::Restore,
    ];

    /// The WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Export::Init => "init",
            Export::OnJoin => "on-join",
            Export::OnMessage => "on-message",
            Export::OnLeave => "on-leave",
            Export::OnTick => "on-tick",
            Export::Snapshot => "snapshot",
            Export::Restore => "restore",
        }
    }
}

/// Fault kinds, as [`crate::sandbox::FaultKind::code`] names them.
const FAULT_KINDS: [&str; 4] = ["trap", "timeout", "out_of_memory", "effect_flood"];

/// One game's handles, resolved once and shared by its rooms.
pub struct GameMetrics {
    calls: Vec<Histogram>,
    faults: Vec<IntCounter>,
    /// Players who joined a room of the game.
    pub joins: IntCounter,
    /// Players who left one (or were removed).
    pub leaves: IntCounter,
    /// Rooms restarted after a fault.
    pub restarts: IntCounter,
    /// Rooms closed for good by failures (each writes a crash report).
    pub crashes: IntCounter,
    /// Frames the game's rooms queued for players.
    pub frames: IntCounter,
    /// Rooms of the game asleep now (their instance freed while quiet).
    pub asleep: IntGauge,
}

impl GameMetrics {
    /// A guest call of `export` took `secs`.
    pub fn call(&self, export: Export, secs: f64) {
        if enabled() {
            self.calls[export as usize].observe(secs);
        }
    }

    /// A guest call failed with a fault of kind `code`.
    pub fn fault(&self, code: &str) {
        if let Some(i) = FAULT_KINDS.iter().position(|k| *k == code) {
            self.faults[i].inc();
        }
    }
}

/// One transport's handles.
#[derive(Clone)]
pub struct TransportMetrics {
    /// Open connections.
    pub open: IntGauge,
    /// Frames read from players.
    pub frames_in: IntCounter,
    /// Frames written to players.
    pub frames_out: IntCounter,
    /// Payload bytes read.
    pub bytes_in: IntCounter,
    /// Payload bytes written.
    pub bytes_out: IntCounter,
}

/// Everything exported.
pub struct Metrics {
    registry: Registry,
    connections: IntGaugeVec,
    connections_total: IntCounterVec,
    frames_in: IntCounterVec,
    frames_out: IntCounterVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    protocol_errors: IntCounterVec,
    joins: IntCounterVec,
    leaves: IntCounterVec,
    call_seconds: HistogramVec,
    faults: IntCounterVec,
    restarts: IntCounterVec,
    crashes: IntCounterVec,
    room_frames: IntCounterVec,
    rooms_asleep: IntGaugeVec,
    /// Players cut off for not reading their frames.
    pub slow_consumers: IntCounter,
    resumes: IntCounterVec,
    /// Room operations by operators (kick, close, say).
    pub room_operations: IntCounterVec,
    // Read at scrape time.
    rooms: IntGaugeVec,
    probation: IntGaugeVec,
    canary: IntGaugeVec,
    inbox_max: IntGauge,
    outbound_max: IntGauge,
    instances: IntGauge,
    instance_slots: IntGauge,
    parked_seats: IntGauge,
    module_loads: IntCounter,
    module_rejections: IntCounterVec,
    promotions: IntCounter,
    rollbacks: IntCounterVec,
    aborted: IntCounter,
    gate: IntCounterVec,
    games: Mutex<HashMap<String, Arc<GameMetrics>>>,
    /// Held while a scrape brings the scrape-time figures up to date.
    rendering: Mutex<()>,
    /// `protocol_errors` per code, by the code's discriminant.
    error_codes: Mutex<Vec<Option<IntCounter>>>,
    transports: Mutex<HashMap<&'static str, TransportMetrics>>,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("a valid metric name");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric name");
    registry.register(Box::new(c.clone())).expect("registered once");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("a valid metric name");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

fn gauges(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid metric name");
    registry.register(Box::new(g.clone())).expect("registered once");
    g
}

impl Metrics {
    fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        if let Err(e) = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self())) {
            tracing::warn!("process metrics unavailable: {e}");
        }
        let call_seconds = HistogramVec::new(
            HistogramOpts::new(
                "respawn_guest_call_duration_seconds",
                "Guest call durations, by export.",
            )
            .buckets(CALL_BUCKETS.to_vec()),
            &["game", "export"],
        )
        .expect("a valid metric name");
        r.register(Box::new(call_seconds.clone())).expect("registered once");
        Self {
            connections: gauges(&r, "respawn_connections", "Open player connections.", &["transport"]),
            connections_total: counters(
                &r,
                "respawn_connections_total",
                "Player connections accepted.",
                &["transport"],
            ),
            frames_in: counters(
                &r,
                "respawn_frames_received_total",
                "Frames read from players.",
                &["transport"],
            ),
            frames_out: counters(
                &r,
                "respawn_frames_sent_total",
                "Frames written to players.",
                &["transport"],
            ),
            bytes_in: counters(
                &r,
                "respawn_received_bytes_total",
                "Frame payload bytes read from players.",
                &["transport"],
            ),
            bytes_out: counters(
                &r,
                "respawn_sent_bytes_total",
                "Frame payload bytes written to players.",
                &["transport"],
            ),
            protocol_errors: counters(
                &r,
                "respawn_protocol_errors_total",
                "Error frames sent to players, by code.",
                &["code"],
            ),
            joins: counters(&r, "respawn_joins_total", "Players who joined a room.", &["game"]),
            leaves: counters(&r, "respawn_leaves_total", "Players who left a room.", &["game"]),
            call_seconds,
            faults: counters(
                &r,
                "respawn_guest_faults_total",
                "Guest calls that failed, by kind (trap, timeout, out_of_memory, effect_flood).",
                &["game", "kind"],
            ),
            restarts: counters(
                &r,
                "respawn_room_restarts_total",
                "Rooms restarted from their checkpoint after a fault.",
                &["game"],
            ),
            crashes: counters(
                &r,
                "respawn_room_crashes_total",
                "Rooms closed for good by failures, each with a crash report.",
                &["game"],
            ),
            room_frames: counters(
                &r,
                "respawn_room_frames_total",
                "Frames rooms queued for their players, by game.",
                &["game"],
            ),
            rooms_asleep: gauges(
                &r,
                "respawn_rooms_asleep",
                "Rooms asleep: quiet, their instance freed until the next input (rooms.sleep_after_ms).",
                &["game"],
            ),
            slow_consumers: counter(
                &r,
                "respawn_slow_consumers_total",
                "Players cut off for not reading their frames.",
            ),
            resumes: counters(&r, "respawn_resumes_total", "Seat resumes, by outcome.", &["outcome"]),
            room_operations: counters(
                &r,
                "respawn_room_operations_total",
                "Operators' room operations, by kind.",
                &["operation"],
            ),
            rooms: gauges(&r, "respawn_rooms", "Live rooms.", &["game", "version"]),
            probation: gauges(
                &r,
                "respawn_probation",
                "1 while the game's active version is on probation.",
                &["game"],
            ),
            canary: gauges(&r, "respawn_canary", "1 while the game runs a canary.", &["game"]),
            inbox_max: gauge(
                &r,
                "respawn_room_inbox_depth_max",
                "The deepest room inbox (commands waiting), over all rooms.",
            ),
            outbound_max: gauge(
                &r,
                "respawn_player_queue_depth_max",
                "The deepest player outbound queue (frames waiting), over all rooms.",
            ),
            instances: gauge(&r, "respawn_instances", "Live guest instances."),
            instance_slots: gauge(&r, "respawn_instance_slots", "Guest instance slots in the pool."),
            parked_seats: gauge(&r, "respawn_parked_seats", "Seats waiting for their player to resume."),
            module_loads: counter(&r, "respawn_module_loads_total", "Module versions loaded into slots."),
            module_rejections: counters(
                &r,
                "respawn_module_rejections_total",
                "Module files rejected, by reason.",
                &["reason"],
            ),
            promotions: counter(
                &r,
                "respawn_promotions_total",
                "Versions promoted (updates and promotions).",
            ),
            rollbacks: counters(&r, "respawn_rollbacks_total", "Rollbacks, by who made them.", &["by"]),
            aborted: counter(
                &r,
                "respawn_promotions_aborted_total",
                "Promotions aborted because a room could not move.",
            ),
            gate: counters(
                &r,
                "respawn_gate_total",
                "Hot-fix gate verdicts that held a version back or were forced.",
                &["outcome"],
            ),
            games: Mutex::new(HashMap::new()),
            error_codes: Mutex::new(Vec::new()),
            rendering: Mutex::new(()),
            transports: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// The handles of `game`, shared by its rooms.
    pub fn game(&self, game: &str) -> Arc<GameMetrics> {
        let mut games = crate::lock(&self.games);
        if let Some(g) = games.get(game) {
            return g.clone();
        }
        let g = Arc::new(GameMetrics {
            calls: Export::ALL
                .iter()
                .map(|e| self.call_seconds.with_label_values(&[game, e.name()]))
                .collect(),
            faults: FAULT_KINDS
                .iter()
                .map(|k| self.faults.with_label_values(&[game, k]))
                .collect(),
            joins: self.joins.with_label_values(&[game]),
            leaves: self.leaves.with_label_values(&[game]),
            restarts: self.restarts.with_label_values(&[game]),
            crashes: self.crashes.with_label_values(&[game]),
            frames: self.room_frames.with_label_values(&[game]),
            asleep: self.rooms_asleep.with_label_values(&[game]),
        });
        games.insert(game.to_owned(), g.clone());
        g
    }

    /// The handles of a transport (`ws`, `tcp`), for one connection.
    pub fn transport(&self, name: &'static str) -> TransportMetrics {
        let mut transports = crate::lock(&self.transports);
        let t = transports
            .entry(name)
            .or_insert_with(|| TransportMetrics {
                open: self.connections.with_label_values(&[name]),
                frames_in: self.frames_in.with_label_values(&[name]),
                frames_out: self.frames_out.with_label_values(&[name]),
                bytes_in: self.bytes_in.with_label_values(&[name]),
                bytes_out: self.bytes_out.with_label_values(&[name]),
            })
            .clone();
        self.connections_total.with_label_values(&[name]).inc();
        t
    }

    /// An error frame with `code` went to a player.
    pub fn protocol_error(&self, code: respawn_protocol::ErrorCode) {
        if !enabled() {
            return;
        }
        let i = code as usize;
        let mut codes = crate::lock(&self.error_codes);
        if codes.len() <= i {
            codes.resize(i + 1, None);
        }
        codes[i]
            .get_or_insert_with(|| {
                let name = serde_json::to_value(code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_else(|| "unknown".into());
                self.protocol_errors.with_label_values(&[name])
            })
            .inc();
    }

    /// A resume ended with `outcome` (`resumed`, `failed`).
    pub fn resume(&self, outcome: &str) {
        self.resumes.with_label_values(&[outcome]).inc();
    }

    /// Brings what is read at scrape time up to date, then renders every
    /// metric in the text exposition format.
    pub fn render(&self, now: &Snapshot) -> String {
        // One scrape at a time: another's reset must not empty the series
        // this one set, nor two catch-ups add the same difference.
        let _one = crate::lock(&self.rendering);
        self.rooms.reset();
        for ((game, version), n) in &now.rooms {
            self.rooms.with_label_values(&[game, version]).set(*n as i64);
        }
        self.probation.reset();
        self.canary.reset();
        for (game, on_probation, canary) in &now.games {
            self.probation.with_label_values(&[game]).set(i64::from(*on_probation));
            self.canary.with_label_values(&[game]).set(i64::from(*canary));
        }
        self.inbox_max.set(now.inbox_max as i64);
        self.outbound_max.set(now.outbound_max as i64);
        self.instances.set(now.instances as i64);
        self.instance_slots.set(now.instance_slots as i64);
        self.parked_seats.set(now.parked_seats as i64);
        let c = &now.counters;
        catch_up(&self.module_loads, c.loaded);
        for (reason, n) in &c.rejections {
            catch_up(&self.module_rejections.with_label_values(&[reason]), *n);
        }
        catch_up(&self.promotions, c.promotions);
        catch_up(&self.rollbacks.with_label_values(&["operator"]), c.rollbacks);
        catch_up(&self.rollbacks.with_label_values(&["automatic"]), c.auto_rollbacks);
        catch_up(&self.aborted, c.aborted);
        catch_up(&self.gate.with_label_values(&["refused"]), c.gate_refused);
        catch_up(&self.gate.with_label_values(&["forced"]), c.gate_forced);
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| {
                tracing::error!("cannot render the metrics: {e}");
                String::new()
            })
    }
}

/// Moves a counter up to a total kept elsewhere (counters never go down).
fn catch_up(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// What is read at scrape time.
#[derive(Default)]
pub struct Snapshot {
    /// Live rooms per (game, version).
    pub rooms: Vec<((String, String), usize)>,
    /// Per game: on probation, running a canary.
    pub games: Vec<(String, bool, bool)>,
    /// The deepest room inbox.
    pub inbox_max: usize,
    /// The deepest player queue.
    pub outbound_max: usize,
    /// Live guest instances.
    pub instances: usize,
    /// Instance slots in the pool.
    pub instance_slots: usize,
    /// Seats parked for a resume.
    pub parked_seats: usize,
    /// Deploy counters.
    pub counters: crate::deploy::Counters,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A private registry's worth of families, rendered: what a scrape
    /// reads, with the scrape-time figures in it and counters that catch
    /// up with totals kept elsewhere (and never go down).
    #[test]
    fn a_scrape_renders_live_figures_and_counters_only_go_up() {
        let m = Metrics::new();
        let game = m.game("chat");
        game.joins.inc();
        game.call(Export::OnMessage, 0.000_3);
        game.fault("timeout");
        game.fault("not_a_kind");
        let t = m.transport("tcp");
        t.frames_out.inc_by(5);
        m.protocol_error(respawn_protocol::ErrorCode::RateLimited);
        m.protocol_error(respawn_protocol::ErrorCode::RateLimited);
        let mut snapshot = Snapshot {
            rooms: vec![(("chat".into(), "1.0.0".into()), 3)],
            games: vec![("chat".into(), true, false)],
            inbox_max: 7,
            ..Snapshot::default()
        };
        snapshot.counters.promotions = 4;
        let text = m.render(&snapshot);
        for line in [
            "respawn_rooms{game=\"chat\",version=\"1.0.0\"} 3",
            "respawn_probation{game=\"chat\"} 1",
            "respawn_canary{game=\"chat\"} 0",
            "respawn_room_inbox_depth_max 7",
            "respawn_promotions_total 4",
            "respawn_joins_total{game=\"chat\"} 1",
            "respawn_guest_faults_total{game=\"chat\",kind=\"timeout\"} 1",
            "respawn_frames_sent_total{transport=\"tcp\"} 5",
            "respawn_connections_total{transport=\"tcp\"} 1",
            "respawn_protocol_errors_total{code=\"rate_limited\"} 2",
            "respawn_guest_call_duration_seconds_bucket{export=\"on-message\",game=\"chat\",le=\"0.0005\"} 1",
            "respawn_guest_call_duration_seconds_bucket{export=\"on-message\",game=\"chat\",le=\"0.00025\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        // A room gone, a total that went down (it cannot): the room's
        // series goes, the counter stays.
        snapshot.rooms.clear();
        snapshot.counters.promotions = 2;
        let text = m.render(&snapshot);
        assert!(!text.contains("respawn_rooms{"), "{text}");
        assert!(text.contains("respawn_promotions_total 4"), "{text}");
    }
}
