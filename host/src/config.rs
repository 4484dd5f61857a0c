//! The host's configuration: a TOML file whose every key has a default, so
//! `respawn serve` runs with no file at all.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a config file was refused. Start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config {path} is invalid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        message: String,
    },
    /// A value is out of its allowed range.
    #[error("config value `{key}` {problem}")]
    Invalid {
        /// The dotted key.
        key: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

/// The whole host configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Player listeners and connection limits.
    pub net: NetConfig,
    /// Where game modules come from.
    pub modules: ModulesConfig,
    /// Room lifecycle.
    pub rooms: RoomsConfig,
    /// Per-instance limits of the WebAssembly sandbox.
    pub sandbox: SandboxConfig,
    /// Per-game settings, by game name. Each game's `config` table is handed
    /// to its rooms' `init` as JSON.
    pub games: BTreeMap<String, GameConfig>,
    /// Which keys may sign game code.
    pub trust: TrustConfig,
    /// Where the host keeps its own files.
    pub state: StateConfig,
    /// Versions kept per game.
    pub slots: SlotsConfig,
    /// The operator API used by the `respawn` CLI.
    pub admin: AdminConfig,
    /// Restarting rooms whose game failed.
    pub supervision: SupervisionConfig,
    /// Watching a newly promoted version, and rolling it back on its own.
    pub probation: ProbationConfig,
    /// Stopping the host.
    pub shutdown: ShutdownConfig,
    /// What reaches the disk, and when: rooms, seats and game storage.
    pub storage: StorageConfig,
    /// Who may join: signed join tickets, identities, bans, per-user
    /// limits.
    pub auth: AuthConfig,
    /// TLS on the player listeners (WebSocket, TCP) and the demo site.
    pub tls: Option<TlsConfig>,
    /// Crash capsules, and the hot-fix gate that replays them.
    pub capsules: CapsulesConfig,
    /// Metrics, spans, log format, profiling, crash events.
    pub observability: ObservabilityConfig,
    /// Several hosts as one fleet over NATS JetStream (see the README's
    /// "Cluster"); unset, the host stands alone on its SQLite database.
    pub cluster: Option<ClusterConfig>,
}

/// One node of a fleet: rooms, their journals and checkpoints, seats and
/// room ownership live in NATS JetStream, replicated by its Raft groups,
/// so a node's rooms come back on a survivor when it dies.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's name, unique in the fleet (letters, digits, `-`, `_`).
    pub node: String,
    /// The NATS servers to connect to (any of the cluster's; the client
    /// fails over between them).
    pub urls: Vec<String>,
    /// The WebSocket URL players are sent to for rooms this node owns
    /// (default: `ws://` and the `net.ws` listener's address).
    pub advertise_ws: Option<String>,
    /// The TCP address players are sent to (default: `net.tcp`).
    pub advertise_tcp: Option<String>,
    /// How often the node renews its lease on its rooms.
    pub heartbeat_ms: u64,
    /// A node that could not renew its lease for this long stops serving
    /// its rooms (they are about to move).
    pub lease_ms: u64,
    /// A node not heard from for this long is dead: survivors take its
    /// rooms. Must exceed `lease_ms` by two heartbeats, so the old owner
    /// has stopped first.
    pub dead_after_ms: u64,
    /// Copies JetStream keeps of every stream and bucket (1, 3 or 5).
    pub replicas: usize,
    /// Prefix of the streams, buckets and subjects, so fleets can share
    /// one NATS cluster.
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node: String::new(),
            urls: vec!["nats://127.0.0.1:4222".into()],
            advertise_ws: None,
            advertise_tcp: None,
            heartbeat_ms: 500,
            lease_ms: 1500,
            dead_after_ms: 3000,
            replicas: 3,
            prefix: "respawn".into(),
        }
    }
}

/// Seeing inside the host (see the README's "Observability").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObservabilityConfig {
    /// Count on the message path for `/metrics` (frames, bytes, call
    /// durations, errors). Off: those series stay at zero.
    pub metrics: bool,
    /// Log inside spans for connections (player, transport, peer) and
    /// rooms (game, room, version).
    pub spans: bool,
    /// `text` (for people) or `json` (one object per line, spans included).
    pub log_format: LogFormat,
    /// Sample the host's heap for `/debug/pprof/heap` (jemalloc's sampling
    /// profiler, one sample per 512 KiB allocated on average).
    pub heap_profiling: bool,
    /// Send crash events to Sentry.
    pub sentry: Option<SentryConfig>,
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            metrics: true,
            spans: true,
            log_format: LogFormat::Text,
            heap_profiling: true,
            sentry: None,
        }
    }
}

/// How the host's log is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where crash events go.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentryConfig {
    /// The project's DSN (`http://` or `https://`).
    pub dsn: String,
    /// The `environment` of every event (`production`, `staging`).
    #[serde(default = "default_environment")]
    pub environment: String,
}

fn default_environment() -> String {
    "production".into()
}

/// Crash capsules (`<state.dir>/capsules/`) and the hot-fix gate (see the
/// README's "Crash capsules").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapsulesConfig {
    /// Crash signatures kept (one capsule each); the oldest go.
    pub keep: usize,
    /// Replace player payloads (messages, names, identities) and the
    /// room's state in capsules: they still show the fault, but cannot
    /// be replayed (nor gate a fix).
    pub redact: bool,
    /// Replay a game's recent capsules against a version before it is
    /// promoted, and refuse it (`gate_failed`) if any still faults.
    pub gate: bool,
    /// Capsules the gate replays at most (the newest).
    pub gate_capsules: usize,
    /// Capsules older than this (since they last struck) are not replayed.
    pub gate_max_age_hours: u64,
}

impl Default for CapsulesConfig {
    fn default() -> Self {
        Self {
            keep: 100,
            redact: false,
            gate: true,
            gate_capsules: 20,
            gate_max_age_hours: 24 * 7,
        }
    }
}

/// Join tickets (see the README's "Player authentication").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Whether every join needs a valid ticket. Off, a join may still
    /// carry one (and is then checked); without one the player has no
    /// verified identity.
    pub required: bool,
    /// The `iss` a ticket must carry; not checked when unset.
    pub issuer: Option<String>,
    /// The `aud` a ticket must carry; not checked when unset.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Public keys (or an HS256 secret) tickets are signed with.
    pub keys: Vec<TicketKey>,
    /// A JSON Web Key Set file (`{"keys": [...]}`), such as an account
    /// service publishes; its keys are used besides `keys`.
    pub jwks_file: Option<PathBuf>,
    /// Ticket claims handed to the game with the user id, by name.
    pub claims: Vec<String>,
    /// A user has at most one seat per room: a second connection of the
    /// same user that joins the room takes the seat over, as a resume does.
    pub one_seat_per_user: bool,
    /// Joins one user may make per minute, over all connections and
    /// addresses, on average.
    pub user_joins_per_minute: u32,
    /// Joins one user may make in a burst.
    pub user_join_burst: u32,
    /// Frames one user may send per second, over all its connections.
    pub user_rate_per_sec: u32,
    /// Frames one user may send in a burst.
    pub user_rate_burst: u32,
    /// Serves short-lived tickets for any name at `/dev/ticket` on the
    /// demo site, signed with a key made at start. For development only:
    /// anyone who reaches the site gets any identity.
    pub dev_issuer: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            required: false,
            issuer: None,
            audience: None,
            leeway_secs: 30,
            keys: Vec::new(),
            jwks_file: None,
            claims: Vec::new(),
            one_seat_per_user: true,
            user_joins_per_minute: 60,
            user_join_burst: 20,
            user_rate_per_sec: 100,
            user_rate_burst: 200,
            dev_issuer: false,
        }
    }
}

/// A key that signs join tickets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TicketKey {
    /// The `kid` tickets signed with it carry; a ticket without a `kid`
    /// is tried against every key of its algorithm.
    #[serde(default)]
    pub kid: Option<String>,
    /// `EdDSA`, `RS256`, `ES256`, or `HS256` (a shared secret: development
    /// and tests only).
    pub alg: String,
    /// A PEM public key (`EdDSA`, `RS256`, `ES256`), or a file holding
    /// the secret (`HS256`).
    pub file: PathBuf,
}

/// The certificate the player listeners and the demo site present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first. Replacing the file (and the key)
    /// takes effect for new connections without a restart.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// How much a crash of the host may lose (see the README's "Durability").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Rooms reach the disk only when the host stops gracefully: a crash
    /// loses every room.
    Off,
    /// Checkpoints reach the disk: a crash loses the inputs since a room's
    /// last checkpoint.
    Checkpoint,
    /// Every input reaches the disk within the group-commit window: a
    /// crash loses at most that window.
    Journal,
    /// A player's `ack`, and every frame an input caused, goes out only
    /// once the input is on disk: nothing acknowledged is lost.
    Strict,
}

impl Durability {
    /// Whether inputs are journaled on disk.
    pub fn journals(self) -> bool {
        matches!(self, Durability::Journal | Durability::Strict)
    }
    /// Whether checkpoints are written as they are taken.
    pub fn checkpoints(self) -> bool {
        self != Durability::Off
    }
}

/// The embedded database (SQLite, `<state.dir>/respawn.db`) that keeps
/// rooms, seats and game storage across a crash.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// What a crash may lose.
    pub durability: Durability,
    /// How long the writer waits, after the first write of a commit, for
    /// more to share it (0: none; writes that arrive while a commit is
    /// syncing share the next one anyway). Unset: 1 ms under `strict`,
    /// whose acks wait for it, and 10 ms under the other levels, where
    /// nobody waits and fewer, larger commits cost less CPU.
    pub group_commit_ms: Option<u64>,
    /// The most writes one commit takes.
    pub group_commit_max: usize,
    /// The largest value a game may store under one key.
    pub kv_max_value_bytes: u32,
    /// Bytes of keys and values one game may keep.
    pub kv_quota_mib: u64,
}

impl StorageConfig {
    /// The group-commit wait in force: the configured one, or the level's.
    pub fn group_commit(&self) -> std::time::Duration {
        let ms = self.group_commit_ms.unwrap_or(match self.durability {
            Durability::Strict => 1,
            Durability::Off | Durability::Checkpoint | Durability::Journal => 10,
        });
        std::time::Duration::from_millis(ms)
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Journal,
            group_commit_ms: None,
            group_commit_max: 1024,
            kv_max_value_bytes: 64 << 10,
            kv_quota_mib: 16,
        }
    }
}

/// Restarting rooms whose game failed, in the spirit of Erlang/OTP
/// supervisors: a failed instance is replaced and brought back to the
/// room's last good state; too many failures in a window close the room.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionConfig {
    /// Restarts a room may have within `window_ms`; one more closes it.
    pub max_restarts: u32,
    /// The window for `max_restarts`, in milliseconds.
    pub window_ms: u64,
    /// Inputs between two checkpoints of a room's state. A restart
    /// replays at most this many inputs.
    pub checkpoint_every: u32,
    /// After each checkpoint the room goes on in a fresh instance restored
    /// from it, the one a restart or a capsule's replay builds, so what a
    /// game's memory holds beyond its snapshot (std's per-map hash seeds,
    /// a `HashMap`'s layout, caches) is the same live and in replay. Off:
    /// one instantiation fewer per checkpoint, and a game whose outputs
    /// depend on such things may diverge in replay.
    pub fresh_at_checkpoint: bool,
    /// A room's first checkpoint after it opens, recovers or moves to
    /// another version comes after between half and all of
    /// `checkpoint_every` inputs, chosen by its seed (and the time-based
    /// checkpoint, 10 s after the first input since the last one, is
    /// shortened in the same proportion: 5 to 10 s). Rooms opened or
    /// swapped together and fed alike would otherwise all checkpoint at
    /// the same moment, a wave of snapshots and writes that shows as a
    /// latency spike. Off: no shortened first span (a test that counts
    /// inputs between checkpoints).
    pub stagger_checkpoints: bool,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        Self {
            max_restarts: 5,
            window_ms: 30_000,
            checkpoint_every: 64,
            fresh_at_checkpoint: true,
            stagger_checkpoints: true,
        }
    }
}

/// After a promotion the new version is on probation: if its calls fail
/// too often, or a room of it restarts too often, the host rolls back.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbationConfig {
    /// How long a new version is watched, in milliseconds (0: never).
    pub window_ms: u64,
    /// Failed calls (traps, timeouts, memory) over calls that trigger a
    /// rollback.
    pub max_error_rate: f64,
    /// Calls needed before the rate counts.
    pub min_calls: u64,
    /// Distinct players (ticks count as one more) whose inputs must have
    /// failed before a version is rolled back: one player cannot roll back
    /// a release on purpose.
    pub min_players: usize,
    /// A version whose 99th-percentile call time is more than this many
    /// times its predecessor's is rolled back (0: latency is not watched).
    pub max_latency_ratio: f64,
}

impl Default for ProbationConfig {
    fn default() -> Self {
        Self {
            window_ms: 60_000,
            max_error_rate: 0.05,
            min_calls: 20,
            min_players: 2,
            max_latency_ratio: 5.0,
        }
    }
}

/// Stopping the host on SIGTERM or Ctrl-C.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// The host exits within this many milliseconds of the signal, whether
    /// or not every room has checkpointed and every player has been told.
    pub timeout_ms: u64,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { timeout_ms: 10_000 }
    }
}

/// Which keys may sign game code.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Trusted public keys: OpenSSH `ssh-ed25519 ...` lines.
    pub keys: Vec<String>,
    /// A folder of `*.pub` files (OpenSSH lines or wasmsign2 public keys).
    pub dir: PathBuf,
    /// Development only: load unsigned modules, with a warning on every
    /// load. Signed modules must still verify.
    pub allow_unsigned: bool,
    /// Keys that may sign only some games: key fingerprint (`SHA256:...`,
    /// as `respawn status` shows signers) to the games it may sign. Keys
    /// not listed may sign any game.
    pub scopes: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for TrustConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            dir: PathBuf::from(".respawn/trust"),
            allow_unsigned: false,
            scopes: Default::default(),
        }
    }
}

/// Where the host keeps its own files: the slot store, the audit log and
/// the admin token.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// The folder (created if missing).
    pub dir: PathBuf,
    /// Keep compiled code of the slots in `<dir>/cache`, so a restart does
    /// not recompile every version (artifacts are authenticated with a key
    /// only this host knows).
    pub code_cache: bool,
    /// Where the code cache lives instead of `dir` (its `cache/` and
    /// `cache.key`). Hosts of one machine may share one, so a big guest (a
    /// JavaScript engine takes seconds to compile) compiles once for all.
    pub code_cache_dir: Option<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".respawn"),
            code_cache: true,
            code_cache_dir: None,
        }
    }
}

/// Versions kept per game.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SlotsConfig {
    /// Versions kept compiled (and on disk) per game, the active one
    /// included.
    pub keep: usize,
}

impl Default for SlotsConfig {
    fn default() -> Self {
        Self { keep: 5 }
    }
}

/// The operator API.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Listen address, or `"off"`. Keep it on loopback: it can swap code.
    #[serde(deserialize_with = "listen_addr")]
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 7702))),
        }
    }
}

/// Player listeners and connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// WebSocket listener address, or `"off"`. Port 0 picks a free port.
    #[serde(deserialize_with = "listen_addr")]
    pub ws: Option<SocketAddr>,
    /// Newline-delimited JSON TCP listener address, or `"off"`.
    #[serde(deserialize_with = "listen_addr")]
    pub tcp: Option<SocketAddr>,
    /// Connections the kernel may hold for the ws, tcp and web listeners
    /// before the host accepts them (the `listen` backlog; Linux caps it at
    /// `net.core.somaxconn`). A burst beyond it (every player connecting
    /// after a restart) is dropped by the kernel, and a TCP client, which
    /// waits for the host's `welcome`, may hang for good: after a SYN
    /// cookie the kernel can drop the handshake's last packet, leaving the
    /// connection open on the client's side only.
    pub listen_backlog: u32,
    /// Largest accepted client message, in bytes.
    pub max_message_bytes: usize,
    /// Read buffer per connection, in bytes: allocated when the connection
    /// opens, so it is a good part of an idle connection's memory. Larger
    /// frames still arrive whole (the buffer grows for them).
    pub read_buffer_bytes: usize,
    /// Frames to a connection are gathered up to this many bytes before a
    /// write; everything queued is written and flushed at once anyway.
    pub write_buffer_bytes: usize,
    /// Frames queued for one player before the player counts as too slow
    /// and is disconnected.
    pub outbound_queue: usize,
    /// Open player connections beyond which new ones are refused
    /// (`server_full`).
    pub max_connections: usize,
    /// Open connections from one source address beyond which its new ones
    /// are refused (`too_many_connections`). Players behind one NAT share
    /// an address: raise it for LAN events.
    pub max_connections_per_address: usize,
    /// Seats kept for a resume at once, in total; a dropped player beyond
    /// it leaves the room at once.
    pub max_parked: usize,
    /// Seats kept for a resume at once per source address.
    pub max_parked_per_address: usize,
    /// Memory all seats' replay buffers (the frames kept for a resume) may
    /// keep together, in MiB; beyond it each seat keeps only its last
    /// frames (a resume then reports more as `lost`).
    pub replay_budget_mib: usize,
    /// A connection that sent nothing for this long is closed, in
    /// milliseconds.
    pub idle_timeout_ms: u64,
    /// The host pings a connection it has not heard from for this long
    /// (WebSocket ping, or a `ping` line on TCP), in milliseconds.
    pub heartbeat_ms: u64,
    /// A write to a player that does not complete within this many
    /// milliseconds closes the connection (`slow_consumer`).
    pub write_timeout_ms: u64,
    /// Frames a connection may send per second, on average.
    pub rate_per_sec: u32,
    /// Frames a connection may send in a burst above the average.
    pub rate_burst: u32,
    /// How long a dropped player's seat is kept for `resume`, in
    /// milliseconds (0: a drop leaves the room at once).
    pub resume_grace_ms: u64,
    /// Frames all connections from one source address may send per
    /// second together, on average (players behind one NAT share it).
    pub address_rate_per_sec: u32,
    /// Frames one address may send in a burst.
    pub address_rate_burst: u32,
    /// Joins one source address may make per minute, on average.
    pub address_joins_per_minute: u32,
    /// Joins one address may make in a burst.
    pub address_join_burst: u32,
    /// The demo site's listen address, or `"off"`.
    #[serde(deserialize_with = "listen_addr")]
    pub web: Option<SocketAddr>,
}

fn listen_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(d)?;
    if text == "off" {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("`{text}` is not `off` or an address like 127.0.0.1:7700 ({e})")))
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            ws: Some(SocketAddr::from(([127, 0, 0, 1], 7700))),
            tcp: Some(SocketAddr::from(([127, 0, 0, 1], 7701))),
            listen_backlog: 4096,
            max_message_bytes: 64 * 1024,
            read_buffer_bytes: 2048,
            write_buffer_bytes: 16 * 1024,
            outbound_queue: 256,
            max_connections: 10_000,
            max_connections_per_address: 512,
            max_parked: 10_000,
            max_parked_per_address: 512,
            replay_budget_mib: 256,
            idle_timeout_ms: 60_000,
            heartbeat_ms: 15_000,
            write_timeout_ms: 10_000,
            rate_per_sec: 100,
            rate_burst: 200,
            resume_grace_ms: 30_000,
            address_rate_per_sec: 5_000,
            address_rate_burst: 10_000,
            address_joins_per_minute: 1_200,
            address_join_burst: 300,
            web: Some(SocketAddr::from(([127, 0, 0, 1], 7703))),
        }
    }
}

/// Where game modules come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModulesConfig {
    /// The folder of signed `*.wasm` components, loaded at start-up and
    /// watched for new versions.
    pub dir: PathBuf,
    /// Watch the folder and hot-load new versions.
    pub watch: bool,
    /// A file counts as complete once it has not changed for this long,
    /// in milliseconds. Writing to a hidden temporary name and renaming
    /// into place needs no wait at all.
    pub debounce_ms: u64,
}

impl Default for ModulesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("modules"),
            watch: true,
            debounce_ms: 100,
        }
    }
}

/// Room lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// How long an empty room lives on before it closes, in milliseconds.
    pub linger_ms: u64,
    /// Commands queued for one room before senders wait.
    pub inbox: usize,
    /// Players one room admits, whatever its game says.
    pub max_players: usize,
    /// The shortest tick interval a guest may ask for, in milliseconds.
    pub min_tick_ms: u32,
    /// Rooms one connection may create per minute on average
    /// (`too_many_rooms` beyond); joining an existing room is free.
    pub create_per_minute: u32,
    /// Rooms one connection may create in a burst.
    pub create_burst: u32,
    /// Rooms one source address may create per minute, all its
    /// connections together.
    pub create_per_minute_per_address: u32,
    /// Rooms one source address may create in a burst.
    pub create_burst_per_address: u32,
    /// Memory all rooms' journals (the inputs since each checkpoint) may
    /// keep together, in MiB; beyond it rooms checkpoint at their next
    /// input instead of every `supervision.checkpoint_every`.
    pub journal_budget_mib: usize,
    /// A room that took no input for this long, and does not tick,
    /// checkpoints and frees its instance (memory, stack, pool slot) until
    /// the next input rebuilds it from the checkpoint; 0: never. Needs
    /// `supervision.fresh_at_checkpoint` (the rebuilt instance is the one
    /// a checkpoint goes on in anyway).
    pub sleep_after_ms: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            linger_ms: 10_000,
            inbox: 1024,
            max_players: 256,
            min_tick_ms: 10,
            create_per_minute: 30,
            create_burst: 10,
            create_per_minute_per_address: 600,
            create_burst_per_address: 100,
            journal_budget_mib: 256,
            sleep_after_ms: 10_000,
        }
    }
}

impl Config {
    /// The admission limits of `[net]` and `[rooms]`.
    pub fn admission_limits(&self) -> crate::net::admission::Limits {
        crate::net::admission::Limits {
            connections: self.net.max_connections,
            connections_per_address: self.net.max_connections_per_address,
            parked: self.net.max_parked,
            parked_per_address: self.net.max_parked_per_address,
            rooms_per_minute_per_address: self.rooms.create_per_minute_per_address,
            rooms_burst_per_address: self.rooms.create_burst_per_address,
            address: crate::session::rate::AllowanceRates {
                joins_per_minute: self.net.address_joins_per_minute,
                join_burst: self.net.address_join_burst,
                frames_per_sec: self.net.address_rate_per_sec,
                frame_burst: self.net.address_rate_burst,
            },
        }
    }
}

impl NetConfig {
    /// `idle_timeout_ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// `heartbeat_ms` as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    /// `resume_grace_ms` as a duration.
    pub fn resume_grace(&self) -> Duration {
        Duration::from_millis(self.resume_grace_ms)
    }
}

impl RoomsConfig {
    /// `linger_ms` as a duration.
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }
}

/// Per-instance limits of the WebAssembly sandbox.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Pre-allocate instance slots (wasmtime's pooling allocator) for fast
    /// room creation; off uses on-demand allocation.
    pub pooling: bool,
    /// Instances that can exist at once (the pool's size). Rooms may use
    /// half: a hot swap briefly needs a second instance per room.
    pub max_instances: u32,
    /// Linear memory one instance may grow to, in MiB.
    pub memory_mib: u32,
    /// Time one guest call may compute before it traps, in milliseconds
    /// (counted in epoch ticks while its code runs). A call that waits
    /// inside WASI instead is cut at twice this plus 20 ms of wall time.
    pub call_timeout_ms: u64,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            pooling: true,
            max_instances: 20_000,
            memory_mib: 64,
            call_timeout_ms: 100,
        }
    }
}

/// Settings of one game.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GameConfig {
    /// Handed to every room's `init` as JSON.
    pub config: Option<toml::Table>,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges the types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range<T: PartialOrd + std::fmt::Display>(key: &'static str, v: T, lo: T, hi: T) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError::Invalid {
                    key,
                    problem: format!("is {v}; it must be between {lo} and {hi}"),
                });
            }
            Ok(())
        }
        range("net.max_message_bytes", self.net.max_message_bytes, 256, 16 << 20)?;
        range("net.read_buffer_bytes", self.net.read_buffer_bytes, 256, 16 << 20)?;
        range("net.write_buffer_bytes", self.net.write_buffer_bytes, 0, 16 << 20)?;
        range("net.outbound_queue", self.net.outbound_queue, 1, 1 << 20)?;
        range("net.max_connections", self.net.max_connections, 1, 1 << 24)?;
        range(
            "net.max_connections_per_address",
            self.net.max_connections_per_address,
            1,
            1 << 24,
        )?;
        range("net.max_parked", self.net.max_parked, 0, 1 << 24)?;
        range("net.listen_backlog", self.net.listen_backlog, 16, 65_535)?;
        range("net.replay_budget_mib", self.net.replay_budget_mib, 1, 1 << 20)?;
        range(
            "net.max_parked_per_address",
            self.net.max_parked_per_address,
            0,
            1 << 24,
        )?;
        range("net.idle_timeout_ms", self.net.idle_timeout_ms, 100, 86_400_000)?;
        range("net.heartbeat_ms", self.net.heartbeat_ms, 50, self.net.idle_timeout_ms)?;
        range("net.write_timeout_ms", self.net.write_timeout_ms, 10, 600_000)?;
        range("net.rate_per_sec", self.net.rate_per_sec, 1, 1_000_000)?;
        range("net.rate_burst", self.net.rate_burst, 1, 1_000_000)?;
        range("net.resume_grace_ms", self.net.resume_grace_ms, 0, 3_600_000)?;
        range("net.address_rate_per_sec", self.net.address_rate_per_sec, 1, 10_000_000)?;
        range("net.address_rate_burst", self.net.address_rate_burst, 1, 10_000_000)?;
        range(
            "net.address_joins_per_minute",
            self.net.address_joins_per_minute,
            1,
            10_000_000,
        )?;
        range("net.address_join_burst", self.net.address_join_burst, 1, 10_000_000)?;
        range("auth.leeway_secs", self.auth.leeway_secs, 0, 3600)?;
        range(
            "auth.user_joins_per_minute",
            self.auth.user_joins_per_minute,
            1,
            10_000_000,
        )?;
        range("auth.user_join_burst", self.auth.user_join_burst, 1, 10_000_000)?;
        range("auth.user_rate_per_sec", self.auth.user_rate_per_sec, 1, 10_000_000)?;
        range("auth.user_rate_burst", self.auth.user_rate_burst, 1, 10_000_000)?;
        range("supervision.max_restarts", self.supervision.max_restarts, 0, 10_000)?;
        range("supervision.window_ms", self.supervision.window_ms, 1, 86_400_000)?;
        range(
            "supervision.checkpoint_every",
            self.supervision.checkpoint_every,
            1,
            1_000_000,
        )?;
        range("probation.window_ms", self.probation.window_ms, 0, 86_400_000)?;
        range("probation.max_error_rate", self.probation.max_error_rate, 0.0, 1.0)?;
        range("probation.min_calls", self.probation.min_calls, 1, 1 << 40)?;
        range("probation.min_players", self.probation.min_players, 1, 1 << 20)?;
        range(
            "probation.max_latency_ratio",
            self.probation.max_latency_ratio,
            0.0,
            1e6,
        )?;
        range("shutdown.timeout_ms", self.shutdown.timeout_ms, 100, 600_000)?;
        if let Some(ms) = self.storage.group_commit_ms {
            range("storage.group_commit_ms", ms, 0, 1_000)?;
        }
        range("storage.group_commit_max", self.storage.group_commit_max, 1, 1 << 20)?;
        range(
            "storage.kv_max_value_bytes",
            self.storage.kv_max_value_bytes,
            1,
            16 << 20,
        )?;
        range("capsules.keep", self.capsules.keep, 1, 100_000)?;
        range("capsules.gate_capsules", self.capsules.gate_capsules, 1, 10_000)?;
        range("storage.kv_quota_mib", self.storage.kv_quota_mib, 1, 1 << 20)?;
        range("rooms.inbox", self.rooms.inbox, 1, 1 << 20)?;
        range("rooms.max_players", self.rooms.max_players, 1, 1 << 20)?;
        range("rooms.min_tick_ms", self.rooms.min_tick_ms, 1, 60_000)?;
        range("rooms.linger_ms", self.rooms.linger_ms, 0, 86_400_000)?;
        range("rooms.create_per_minute", self.rooms.create_per_minute, 1, 1_000_000)?;
        range("rooms.journal_budget_mib", self.rooms.journal_budget_mib, 1, 1 << 20)?;
        range("rooms.create_burst", self.rooms.create_burst, 1, 1_000_000)?;
        range(
            "rooms.create_per_minute_per_address",
            self.rooms.create_per_minute_per_address,
            1,
            1_000_000,
        )?;
        range(
            "rooms.create_burst_per_address",
            self.rooms.create_burst_per_address,
            1,
            1_000_000,
        )?;
        // One slot would hold only the active version: an update would
        // push itself out before it could be promoted.
        range("slots.keep", self.slots.keep, 2, 1000)?;
        range("sandbox.max_instances", self.sandbox.max_instances, 2, 100_000)?;
        range("sandbox.memory_mib", self.sandbox.memory_mib, 1, 4096)?;
        range("sandbox.call_timeout_ms", self.sandbox.call_timeout_ms, 1, 60_000)?;
        if self.net.ws.is_none() && self.net.tcp.is_none() {
            return Err(ConfigError::Invalid {
                key: "net",
                problem: "disables both listeners; set `ws` or `tcp`".into(),
            });
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
            if self.storage.durability == Durability::Off {
                return Err(ConfigError::Invalid {
                    key: "storage.durability",
                    problem: "is `off`, with [cluster]: a node's rooms could not move when it dies; use `checkpoint`, `journal` or `strict`".into(),
                });
            }
        }
        for name in self.games.keys() {
            if !crate::modules::is_valid_game_name(name) {
                return Err(ConfigError::Invalid {
                    key: "games",
                    problem: format!(
                        "has `{name}`, which is not a game name (lowercase letters, digits, `-`, `_`; 1 to 32)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The JSON handed to `init` for rooms of `game`.
    pub fn game_init_config(&self, game: &str) -> Vec<u8> {
        self.games
            .get(game)
            .and_then(|g| g.config.as_ref())
            .and_then(|t| serde_json::to_vec(t).ok())
            .unwrap_or_else(|| b"{}".to_vec())
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, problem: String| Err(ConfigError::Invalid { key, problem });
        let name_ok = |s: &str| {
            !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !name_ok(&self.node) {
            return invalid(
                "cluster.node",
                format!(
                    "is `{}`; name the node with 1 to 64 letters, digits, `-` or `_`",
                    self.node
                ),
            );
        }
        if !name_ok(&self.prefix) {
            return invalid(
                "cluster.prefix",
                format!("is `{}`; use 1 to 64 letters, digits, `-` or `_`", self.prefix),
            );
        }
        if self.urls.is_empty() {
            return invalid("cluster.urls", "is empty; list the NATS servers".into());
        }
        if ![1, 3, 5].contains(&self.replicas) {
            return invalid(
                "cluster.replicas",
                format!("is {}; it must be 1, 3 or 5", self.replicas),
            );
        }
        if !(50..=60_000).contains(&self.heartbeat_ms) {
            return invalid(
                "cluster.heartbeat_ms",
                format!("is {}; it must be between 50 and 60000", self.heartbeat_ms),
            );
        }
        if self.lease_ms < 2 * self.heartbeat_ms {
            return invalid(
                "cluster.lease_ms",
                format!(
                    "is {}; it must be at least two heartbeats ({} ms)",
                    self.lease_ms,
                    2 * self.heartbeat_ms
                ),
            );
        }
        // A lapsed lease is noticed within a heartbeat, and a heartbeat
        // gives up after another.
        if self.dead_after_ms < self.lease_ms + 2 * self.heartbeat_ms {
            return invalid(
                "cluster.dead_after_ms",
                format!(
                    "is {}; it must exceed lease_ms by two heartbeats ({} ms), so a cut-off owner stops before its rooms move",
                    self.dead_after_ms,
                    self.lease_ms + 2 * self.heartbeat_ms
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_timings_must_let_an_owner_stop_before_its_rooms_move() {
        let ok = Config::parse("[cluster]\nnode = \"a\"\n").unwrap();
        assert_eq!(ok.cluster.unwrap().replicas, 3);
        for (text, key) in [
            ("[cluster]\n", "cluster.node"),
            ("[cluster]\nnode = \"a.b\"\n", "cluster.node"),
            ("[cluster]\nnode = \"a\"\nreplicas = 2\n", "cluster.replicas"),
            ("[cluster]\nnode = \"a\"\nurls = []\n", "cluster.urls"),
            ("[cluster]\nnode = \"a\"\nlease_ms = 600\n", "cluster.lease_ms"),
            (
                "[cluster]\nnode = \"a\"\ndead_after_ms = 2400\n",
                "cluster.dead_after_ms",
            ),
            (
                "[cluster]\nnode = \"a\"\n[storage]\ndurability = \"off\"\n",
                "storage.durability",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }

    #[test]
    fn empty_text_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.net.ws, Some("127.0.0.1:7700".parse().unwrap()));
        assert_eq!(c.modules.dir, PathBuf::from("modules"));
        assert!(c.sandbox.pooling);
    }

    #[test]
    fn unknown_keys_and_bad_ranges_are_refused_with_the_key() {
        let err = Config::parse("[net]\nmax_mesage_bytes = 5\n").unwrap_err().to_string();
        assert!(err.contains("max_mesage_bytes"), "{err}");
        let err = Config::parse("[net]\nmax_message_bytes = 5\n").unwrap_err().to_string();
        assert!(err.contains("net.max_message_bytes"), "{err}");
        let err = Config::parse("[rooms]\nlinger_ms = -1\n").unwrap_err().to_string();
        assert!(err.contains("linger_ms"), "{err}");
        let err = Config::parse("[games.\"Bad Name\"]\n").unwrap_err().to_string();
        assert!(err.contains("Bad Name"), "{err}");
        for keep in [0, 1] {
            let err = Config::parse(&format!("[slots]\nkeep = {keep}\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("slots.keep"),
                "keep = {keep} leaves no room for an update: {err}"
            );
        }
        let err = Config::parse("[net]\nread_buffer_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("net.read_buffer_bytes"), "{err}");
    }

    #[test]
    fn listeners_can_be_turned_off_but_not_both() {
        let c = Config::parse("[net]\ntcp = \"off\"\nws = \"0.0.0.0:9000\"\n").unwrap();
        assert_eq!(c.net.tcp, None);
        assert_eq!(c.net.ws, Some("0.0.0.0:9000".parse().unwrap()));
        let err = Config::parse("[net]\ntcp = \"off\"\nws = \"off\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("both listeners"), "{err}");
        let err = Config::parse("[net]\ntcp = \"localhost\"\n").unwrap_err().to_string();
        assert!(err.contains("localhost"), "{err}");
    }

    #[test]
    fn game_config_becomes_init_json() {
        let c = Config::parse("[games.chat.config]\nmotd = \"hi\"\nslots = 3\n").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&c.game_init_config("chat")).unwrap();
        assert_eq!(v, serde_json::json!({"motd": "hi", "slots": 3}));
        assert_eq!(c.game_init_config("echo"), b"{}");
    }
}
