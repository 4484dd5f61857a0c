//! Who is in the fleet: each node writes a heartbeat to the nodes bucket
//! every `heartbeat_ms`, which is also its lease on all its rooms, and
//! every node watches the bucket. Liveness is judged on the watcher's own
//! clock (when it last saw a heartbeat), never by comparing clocks across
//! machines, except for records read at start (aged by their store time).

use super::{Cluster, Owner};
use crate::protocol::NodeAddress;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A node's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Its name.
    pub node: String,
    /// Its current run.
    pub incarnation: u64,
    /// Where players reach it over WebSocket.
    pub ws: Option<String>,
    /// Where players reach it over TCP.
    pub tcp: Option<String>,
    /// Rooms it serves.
    pub rooms: usize,
    /// Its host version.
    pub host: String,
}

/// A node as `respawn status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Its name.
    pub node: String,
    /// Whether its heartbeat is fresh.
    pub alive: bool,
    /// Whether it is the node answering.
    pub this: bool,
    /// Since its last heartbeat.
    pub seen_ms_ago: u64,
    /// Rooms it serves.
    pub rooms: usize,
    /// Where players reach it.
    pub ws: Option<String>,
    /// Where players reach it over TCP.
    pub tcp: Option<String>,
    /// Its host version.
    pub host: String,
}

/// The nodes as this one last heard of them.
#[derive(Default)]
pub(super) struct View {
    seen: Mutex<BTreeMap<String, (NodeRecord, Instant)>>,
}

impl View {
    /// A heartbeat that is `age` old.
    pub fn saw(&self, record: NodeRecord, age: Duration) {
        let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
        let mut seen = crate::lock(&self.seen);
        match seen.get(&record.node) {
            // An older record read late does not undo a newer one.
            Some((old, when)) if old.incarnation == record.incarnation && *when > at => {}
            _ => {
                seen.insert(record.node.clone(), (record, at));
            }
        }
    }

    /// Whether `owner`'s run has a fresh heartbeat.
    pub fn alive(&self, owner: &Owner, dead_after: Duration) -> bool {
        crate::lock(&self.seen)
            .get(&owner.node)
            .is_some_and(|(r, at)| r.incarnation == owner.incarnation && at.elapsed() < dead_after)
    }

    /// Where players reach `node`.
    pub fn address(&self, node: &str) -> Option<NodeAddress> {
        crate::lock(&self.seen).get(node).map(|(r, _)| NodeAddress {
            id: r.node.clone(),
            ws: r.ws.clone(),
            tcp: r.tcp.clone(),
        })
    }

    /// The live nodes' names, sorted: every node computes the same list
    /// from the same heartbeats, which spreads orphaned rooms.
    pub fn live(&self, dead_after: Duration) -> Vec<String> {
        crate::lock(&self.seen)
            .iter()
            .filter(|(_, (_, at))| at.elapsed() < dead_after)
            .map(|(n, _)| n.clone())
            .collect()
    }

    pub fn status(&self, me: &str, dead_after: Duration) -> Vec<NodeStatus> {
        crate::lock(&self.seen)
            .values()
            .map(|(r, at)| NodeStatus {
                node: r.node.clone(),
                alive: at.elapsed() < dead_after,
                this: r.node == me,
                seen_ms_ago: at.elapsed().as_millis() as u64,
                rooms: r.rooms,
                ws: r.ws.clone(),
                tcp: r.tcp.clone(),
                host: r.host.clone(),
            })
            .collect()
    }
}

/// A fresh incarnation number.
pub(super) fn new_incarnation() -> u64 {
    use rand::TryRng;
    rand::rngs::SysRng.try_next_u64().unwrap_or_else(|_| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    })
}

/// How old a stored entry is, by the server's store time.
fn age(entry: &async_nats::jetstream::kv::Entry) -> Duration {
    let stored = entry.created.unix_timestamp_nanos();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    Duration::from_nanos((now - stored).clamp(0, u64::MAX as i128) as u64)
}

fn record(entry: &async_nats::jetstream::kv::Entry) -> Option<NodeRecord> {
    (entry.operation == async_nats::jetstream::kv::Operation::Put)
        .then(|| serde_json::from_slice(&entry.value).ok())
        .flatten()
}

/// Reads every node's last heartbeat, aged by when it was stored.
pub(super) async fn prime(cluster: &Cluster) -> anyhow::Result<()> {
    let mut keys = cluster.stores.nodes.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if let Some(entry) = cluster.stores.nodes.entry(key).await?
            && let Some(r) = record(&entry)
        {
            cluster.view.saw(r, age(&entry));
        }
    }
    Ok(())
}

/// Follows the nodes bucket for as long as the host runs (watching again
/// after the link comes back).
pub(super) async fn watch_nodes(cluster: Arc<Cluster>) {
    loop {
        match cluster.stores.nodes.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    if let Some(r) = record(&entry) {
                        // The last heartbeats replayed when the watch
                        // starts may be old; live ones are fresh (a clock
                        // off by less than `dead_after_ms` changes
                        // nothing).
                        let age = age(&entry);
                        let dead_after = Duration::from_millis(cluster.cfg.dead_after_ms);
                        cluster.view.saw(r, if age > dead_after { age } else { Duration::ZERO });
                    }
                }
            }
            Err(e) => tracing::debug!("cannot watch the fleet's nodes: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(cluster.cfg.heartbeat_ms)).await;
    }
}

/// The heartbeat: renews the lease every `heartbeat_ms`. A lease that
/// lapses stops every room of this node (players are told `room_moved`):
/// once the node is dead to the others, they adopt those rooms, and by
/// then nothing runs them here. The node comes back as a new incarnation.
pub(super) async fn run(cluster: Arc<Cluster>) {
    let period = Duration::from_millis(cluster.cfg.heartbeat_ms);
    let lease = Duration::from_millis(cluster.cfg.lease_ms);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let renewed = cluster.heartbeat().await;
        let lapsed = crate::lock(&cluster.renewed).elapsed() > lease;
        match renewed {
            Ok(()) if cluster.cut_off.swap(false, Ordering::AcqRel) => {
                tracing::warn!(
                    node = %cluster.cfg.node,
                    "back in touch with the fleet as a new incarnation; the rooms this node had are adopted afresh"
                );
            }
            Ok(()) => {}
            Err(e) if lapsed && !cluster.cut_off.swap(true, Ordering::AcqRel) => {
                tracing::error!(
                    node = %cluster.cfg.node,
                    "lease lapsed ({e}): stopping every room of this node; players are sent to resume elsewhere"
                );
                // Whatever this run owned is an orphan from now on.
                cluster.incarnation.store(new_incarnation(), Ordering::Release);
                if let Some(host) = cluster.host.get() {
                    host.rooms.evict_all().await;
                }
                crate::lock(&cluster.logs).clear();
            }
            Err(e) => tracing::debug!("heartbeat failed: {e}"),
        }
    }
}
