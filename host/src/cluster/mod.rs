//! A fleet of hosts over NATS JetStream (`[cluster]`). JetStream's Raft
//! groups replicate everything a room needs to come back elsewhere: its
//! records (a stream, [`record`]), who owns it (a bucket), the nodes'
//! heartbeats (a bucket), where each resume token's seat is (a bucket), and
//! the games' storage (a bucket). Nothing here is consensus of our own:
//! ownership is JetStream's compare-and-set on a key's revision, and
//! fencing is its expected-last-sequence check on a room's subject.
//!
//! - A node's heartbeat is its lease on all its rooms ([`membership`]). A
//!   node that cannot renew it for `lease_ms` stops its rooms and players
//!   are told `room_moved`; a node not heard from for `dead_after_ms` is
//!   dead, and survivors adopt its rooms from their records ([`failover`]).
//! - A player may connect to any node: a join or resume for a room owned
//!   elsewhere is answered `room_elsewhere` with the owner's address.
//! - Rooms write through [`journal::JetStreamBackend`], the same
//!   [`crate::storage::Backend`] the single-node host has in SQLite.

pub mod deploys;
pub mod failover;
pub mod journal;
pub mod membership;
pub mod modules;
pub mod names;
pub mod record;

use crate::config::{ClusterConfig, NetConfig};
use crate::protocol::NodeAddress;
use crate::storage::RoomRef;
use anyhow::Context as _;
use async_nats::jetstream::{self, kv, stream};
use membership::View;
use names::{Names, room_key};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a starting node waits for JetStream to be ready.
const JETSTREAM_WAIT: Duration = Duration::from_secs(30);

/// How long one JetStream request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Who owns a room, as its key in the owners bucket says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// The node.
    pub node: String,
    /// Which run of it: a node that restarts, or lost its lease, comes
    /// back as a new incarnation, and the old one's rooms are orphans.
    pub incarnation: u64,
}

/// A room's lock (see [`Cluster::room_lock`]); forgotten by the map when
/// nobody else waits for it.
pub(super) struct RoomLock<'a> {
    cluster: &'a Cluster,
    room: RoomRef,
    lock: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for RoomLock<'_> {
    fn drop(&mut self) {
        let mut map = crate::lock(&self.cluster.placing);
        // The map's, this one's and the guard's: nobody waits.
        if Arc::strong_count(&self.lock) <= 3 {
            map.remove(&self.room);
        }
    }
}

/// Where a room is to be served.
#[derive(Debug, Clone)]
pub enum Place {
    /// Here: this node owns it (it may have just adopted it).
    Here,
    /// On another node.
    Elsewhere(NodeAddress),
}

/// Why the fleet could not place a room.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This node cannot reach JetStream (or lost its lease).
    #[error("this node is cut off from the fleet's storage; try another node or again later")]
    CutOff,
    /// JetStream answered with an error.
    #[error("the fleet's storage failed: {0}")]
    Engine(String),
}

fn engine(e: impl std::fmt::Display) -> ClusterError {
    ClusterError::Engine(e.to_string())
}

/// This node's part of the fleet.
pub struct Cluster {
    cfg: ClusterConfig,
    names: Names,
    incarnation: AtomicU64,
    /// Where players reach this node (set once the listeners are bound).
    address: Mutex<NodeAddress>,
    js: jetstream::Context,
    stores: Stores,
    /// What the backend knows of each room this node owns.
    logs: Mutex<HashMap<RoomRef, journal::RoomLog>>,
    /// Rooms whose ownership is being decided here (see `room_lock`).
    placing: Mutex<HashMap<RoomRef, Arc<tokio::sync::Mutex<()>>>>,
    view: View,
    /// Set while the lease is lapsed: rooms are refused until it is
    /// renewed (as a new incarnation).
    cut_off: AtomicBool,
    renewed: Mutex<Instant>,
    host: OnceLock<failover::Host>,
    rt: tokio::runtime::Handle,
}

/// The fleet's stream, buckets and object store, created with `replicas`
/// copies by the first node to start.
async fn open(js: &jetstream::Context, cfg: &ClusterConfig, names: &Names) -> anyhow::Result<Stores> {
    let stream = js
        .get_or_create_stream(stream::Config {
            name: names.rooms_stream(),
            subjects: vec![names.rooms_subjects()],
            num_replicas: cfg.replicas,
            allow_rollup: true,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("opening the JetStream stream {}", names.rooms_stream()))?;
    // A bucket's stream made by hand, as JetStream's KV convention has it
    // (async-nats's own bucket creation reads account fields a 2.9 server
    // does not send).
    let bucket = |name: String, max_age: Duration| async move {
        if let Ok(store) = js.get_key_value(&name).await {
            return Ok(store);
        }
        let window = Duration::from_secs(120);
        js.get_or_create_stream(stream::Config {
            name: format!("KV_{name}"),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: 1,
            max_age,
            duplicate_window: if max_age.is_zero() { window } else { max_age.min(window) },
            storage: stream::StorageType::File,
            num_replicas: cfg.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the JetStream bucket {name}"))?;
        js.get_key_value(&name)
            .await
            .with_context(|| format!("opening the JetStream bucket {name}"))
    };
    // Heartbeats of nodes long gone expire on their own.
    let nodes = bucket(names.nodes_bucket(), Duration::from_millis(cfg.dead_after_ms) * 20).await?;
    let owners = bucket(names.owners_bucket(), Duration::ZERO).await?;
    let seats = bucket(names.seats_bucket(), Duration::ZERO).await?;
    let kv = bucket(names.kv_bucket(), Duration::ZERO).await?;
    let deploys = bucket(names.deploys_bucket(), Duration::ZERO).await?;
    let modules = modules_store(js, cfg, &names.modules_bucket()).await?;
    Ok(Stores {
        stream,
        nodes,
        owners,
        seats,
        kv,
        deploys,
        modules,
    })
}

/// An object store's stream made by hand, as JetStream's convention has
/// it (async-nats's own creation sends fields a 2.9 server refuses).
async fn modules_store(
    js: &jetstream::Context,
    cfg: &ClusterConfig,
    name: &str,
) -> anyhow::Result<jetstream::object_store::ObjectStore> {
    if let Ok(store) = js.get_object_store(name).await {
        return Ok(store);
    }
    js.get_or_create_stream(stream::Config {
        name: format!("OBJ_{name}"),
        subjects: vec![format!("$O.{name}.C.>"), format!("$O.{name}.M.>")],
        storage: stream::StorageType::File,
        num_replicas: cfg.replicas,
        allow_rollup: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating the JetStream object store {name}"))?;
    js.get_object_store(name)
        .await
        .with_context(|| format!("opening the JetStream object store {name}"))
}

/// The fleet's stream, buckets and object store, opened.
struct Stores {
    /// Every room's records.
    stream: stream::Stream,
    /// The nodes' heartbeats.
    nodes: kv::Store,
    /// Who owns each room.
    owners: kv::Store,
    /// Which room each resume token's seat is in.
    seats: kv::Store,
    /// The games' storage.
    kv: kv::Store,
    /// The last deploy decision per game.
    deploys: kv::Store,
    /// The signed modules the nodes loaded.
    modules: jetstream::object_store::ObjectStore,
}

impl Cluster {
    /// Connects to NATS and makes sure the fleet's stream and buckets
    /// exist (created with `replicas` copies by the first node).
    pub async fn connect(cfg: &ClusterConfig, net: &NetConfig) -> anyhow::Result<Arc<Self>> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("respawn {}", cfg.node))
            .request_timeout(Some(REQUEST_TIMEOUT))
            .retry_on_initial_connect()
            .connect(cfg.urls.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {}", cfg.urls.join(", ")))?;
        let js = jetstream::new(client);
        let names = Names::new(&cfg.prefix);
        // NATS may still be electing its JetStream leaders (a fleet and its
        // NATS cluster starting together): wait for it, a while.
        let waiting = Instant::now();
        let stores = loop {
            match open(&js, cfg, &names).await {
                Ok(opened) => break opened,
                Err(e) if waiting.elapsed() < JETSTREAM_WAIT => {
                    tracing::warn!("JetStream is not ready yet, trying again: {e:#}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let address = NodeAddress {
            id: cfg.node.clone(),
            ws: cfg.advertise_ws.clone().or_else(|| net.ws.map(|a| format!("ws://{a}"))),
            tcp: cfg.advertise_tcp.clone().or_else(|| net.tcp.map(|a| a.to_string())),
        };
        let address = Mutex::new(address);
        let cluster = Arc::new(Self {
            cfg: cfg.clone(),
            names,
            incarnation: AtomicU64::new(membership::new_incarnation()),
            address,
            js,
            stores,
            logs: Mutex::new(HashMap::new()),
            placing: Mutex::new(HashMap::new()),
            view: View::default(),
            cut_off: AtomicBool::new(false),
            renewed: Mutex::new(Instant::now()),
            host: OnceLock::new(),
            rt: tokio::runtime::Handle::current(),
        });
        membership::prime(&cluster).await.context("reading the fleet's nodes")?;
        Ok(cluster)
    }

    /// The addresses the listeners were bound to, for what `advertise_*`
    /// leaves unset (a port chosen by the system included).
    pub fn set_listeners(&self, ws: Option<std::net::SocketAddr>, tcp: Option<std::net::SocketAddr>) {
        let mut a = crate::lock(&self.address);
        if self.cfg.advertise_ws.is_none() {
            a.ws = ws.map(|w| format!("ws://{w}"));
        }
        if self.cfg.advertise_tcp.is_none() {
            a.tcp = tcp.map(|t| t.to_string());
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.cfg.node
    }

    fn me(&self) -> Owner {
        Owner {
            node: self.cfg.node.clone(),
            incarnation: self.incarnation.load(Ordering::Acquire),
        }
    }

    fn dead_after(&self) -> Duration {
        Duration::from_millis(self.cfg.dead_after_ms)
    }

    /// Whether `owner` is serving: this node's current run, or a node
    /// whose heartbeat with that incarnation is fresh.
    fn alive(&self, owner: &Owner) -> bool {
        if owner.node == self.cfg.node {
            return owner.incarnation == self.incarnation.load(Ordering::Acquire)
                && !self.cut_off.load(Ordering::Acquire);
        }
        self.view.alive(owner, self.dead_after())
    }

    /// Where `room` is to be served: here if nobody owns it (this node
    /// claims it) or its owner is dead (this node adopts it, state and
    /// seats included), else on its live owner.
    pub async fn place(&self, room: &RoomRef) -> Result<Place, ClusterError> {
        if self.cut_off.load(Ordering::Acquire) {
            return Err(ClusterError::CutOff);
        }
        let key = room_key(room);
        // One decision per room at a time on this node: two joins, or a
        // join and the failover loop, never adopt or start it twice.
        let _room = self.room_lock(room).await;
        for _ in 0..4 {
            let entry = self.stores.owners.entry(key.clone()).await.map_err(engine)?;
            let current = entry.filter(|e| e.operation == kv::Operation::Put);
            let Some(entry) = current else {
                if let Some(rev) = self.claim_free(&key).await? {
                    self.start_log(room, rev).await?;
                    return Ok(Place::Here);
                }
                continue;
            };
            let owner: Option<Owner> = serde_json::from_slice(&entry.value).ok();
            match owner {
                Some(o) if o == self.me() => {
                    // Owned here but not written from here yet: an
                    // adoption that failed half-way, say. Its records come
                    // back; a blank room would roll them up.
                    if !crate::lock(&self.logs).contains_key(room) {
                        let host = self.host.get().ok_or(ClusterError::CutOff)?;
                        failover::recover_owned(self, host, room, entry.revision).await?;
                    }
                    return Ok(Place::Here);
                }
                Some(o) if self.alive(&o) => {
                    return match self.view.address(&o.node) {
                        Some(addr) => Ok(Place::Elsewhere(addr)),
                        None => Err(ClusterError::Engine(format!("node {} has no address", o.node))),
                    };
                }
                // Dead, or not a value this host writes: taken over.
                _ => {
                    if failover::adopt(self, room, entry.revision).await? {
                        return Ok(Place::Here);
                    }
                }
            }
        }
        Err(ClusterError::Engine("the room's owner kept changing".into()))
    }

    /// The room's lock on this node, held while its ownership is decided.
    pub(super) async fn room_lock(&self, room: &RoomRef) -> RoomLock<'_> {
        let lock = crate::lock(&self.placing).entry(room.clone()).or_default().clone();
        let guard = lock.clone().lock_owned().await;
        RoomLock {
            cluster: self,
            room: room.clone(),
            lock,
            _guard: guard,
        }
    }

    /// Claims a room nobody owns; `None` if it did not work (another node
    /// was quicker, or the request failed): the caller looks again.
    async fn claim_free(&self, key: &str) -> Result<Option<u64>, ClusterError> {
        match self.stores.owners.create(key, self.owner_value()).await {
            Ok(rev) => Ok(Some(rev)),
            Err(e) => {
                tracing::debug!(room = key, "claiming the room did not work: {e}");
                Ok(None)
            }
        }
    }

    fn owner_value(&self) -> bytes::Bytes {
        serde_json::to_vec(&self.me()).unwrap_or_default().into()
    }

    /// Starts writing a room this node now owns: its subject's last
    /// sequence is where its writes continue (and what fences anyone
    /// else's).
    async fn start_log(&self, room: &RoomRef, owner_rev: u64) -> Result<(), ClusterError> {
        let seq = self.last_seq(room).await?;
        crate::lock(&self.logs).insert(room.clone(), journal::RoomLog::new(seq, owner_rev));
        Ok(())
    }

    /// The sequence of the last record on a room's subject (0: none).
    async fn last_seq(&self, room: &RoomRef) -> Result<u64, ClusterError> {
        match self
            .stores
            .stream
            .get_last_raw_message_by_subject(&self.names.room_subject(room))
            .await
        {
            Ok(m) => Ok(m.sequence),
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(engine(e)),
        }
    }

    /// Where a seat's room is, from its resume token's hash: `None` if the
    /// fleet knows no such seat.
    pub async fn locate_seat(&self, token_hash: &str) -> Result<Option<(RoomRef, Place)>, ClusterError> {
        let Some(value) = self.stores.seats.get(token_hash).await.map_err(engine)? else {
            return Ok(None);
        };
        let Some(room) = std::str::from_utf8(&value).ok().and_then(names::parse_room_key) else {
            return Ok(None);
        };
        let place = self.place(&room).await?;
        Ok(Some((room, place)))
    }

    /// The games' storage as the fleet holds it, for the start.
    pub async fn load_kv(&self) -> anyhow::Result<Vec<(String, String, Vec<u8>)>> {
        journal::load_kv(&self.stores.kv).await
    }

    /// The nodes of the fleet, for `respawn status`.
    pub fn nodes(&self) -> Vec<membership::NodeStatus> {
        self.view.status(&self.cfg.node, self.dead_after())
    }

    /// Writes this node's heartbeat; renews its lease on its rooms.
    async fn heartbeat(&self) -> Result<(), ClusterError> {
        let rooms = self.host.get().map_or(0, |h| h.rooms.count());
        let address = crate::lock(&self.address).clone();
        let record = membership::NodeRecord {
            node: self.cfg.node.clone(),
            incarnation: self.incarnation.load(Ordering::Acquire),
            ws: address.ws,
            tcp: address.tcp,
            rooms,
            host: env!("CARGO_PKG_VERSION").into(),
        };
        let value = serde_json::to_vec(&record).map_err(engine)?;
        let put = self.stores.nodes.put(&self.cfg.node, value.into());
        // Within a heartbeat, so a lapsed lease is noticed in time.
        match tokio::time::timeout(Duration::from_millis(self.cfg.heartbeat_ms), put).await {
            Ok(Ok(_)) => {
                *crate::lock(&self.renewed) = Instant::now();
                self.view.saw(record, Duration::ZERO);
                Ok(())
            }
            Ok(Err(e)) => Err(engine(e)),
            Err(_) => Err(ClusterError::CutOff),
        }
    }

    /// Hands this node's rooms and players to the fleet's loops, and
    /// starts them: heartbeats, the views of nodes and owners, failover.
    pub fn start(self: &Arc<Self>, host: failover::Host) {
        if self.host.set(host).is_err() {
            return;
        }
        tokio::spawn(membership::run(self.clone()));
        tokio::spawn(membership::watch_nodes(self.clone()));
        tokio::spawn(failover::run(self.clone()));
    }
}
