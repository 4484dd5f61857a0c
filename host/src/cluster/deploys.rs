//! Deploy decisions across the fleet. An operator's `promote`,
//! `rollback`, `pin` or `unpin`, a probation's automatic rollback, and a
//! version promoted as it arrived in the modules folder, are taken on one
//! node; that node writes the game's resulting active version
//! and pin to the deploys bucket, and every other node makes the same
//! version active (migrating its rooms, as a hot swap does) and pins the
//! same way. The bucket holds the last decision per game, so a node that
//! starts or comes back converges on it too. The modules themselves travel
//! through [`super::modules`]; a decision naming a version not here yet is
//! applied when it arrives.

use super::Cluster;
use crate::deploy::{Deployer, Trigger};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;

/// A game's deploy state as one node decided it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Decision {
    /// The active version.
    active: String,
    /// Whether the game is pinned.
    pinned: bool,
    /// The node that decided, and its run (its own decisions come back to
    /// it through the watch and are skipped).
    node: String,
    incarnation: u64,
}

/// Publishes this node's decisions in the order they are taken, and
/// follows the fleet's.
pub fn start(cluster: Arc<Cluster>, deployer: Arc<Deployer>) {
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    deployer.on_decision(move |game| {
        let _ = tx.send(game.to_owned());
    });
    tokio::spawn(publish(cluster.clone(), deployer.clone(), rx));
    tokio::spawn(follow(cluster, deployer));
}

async fn publish(cluster: Arc<Cluster>, deployer: Arc<Deployer>, mut decided: mpsc::UnboundedReceiver<String>) {
    while let Some(game) = decided.recv().await {
        let games = deployer.games();
        let Some(active) = games.active(&game) else { continue };
        let decision = Decision {
            active: active.version.to_string(),
            pinned: games.pinned(&game),
            node: cluster.cfg.node.clone(),
            incarnation: cluster.incarnation.load(Ordering::Acquire),
        };
        let Ok(value) = serde_json::to_vec(&decision) else {
            continue;
        };
        match cluster.stores.deploys.put(&game, value.into()).await {
            Ok(_) => {
                tracing::info!(%game, version = %decision.active, pinned = decision.pinned, "decision passed on to the fleet")
            }
            Err(e) => {
                tracing::error!(%game, "cannot pass the decision on to the fleet (the other nodes keep theirs): {e}")
            }
        }
    }
}

/// Applies the other nodes' decisions for as long as the host runs.
async fn follow(cluster: Arc<Cluster>, deployer: Arc<Deployer>) {
    loop {
        match cluster.stores.deploys.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    if entry.operation == async_nats::jetstream::kv::Operation::Put {
                        apply_entry(&cluster, &deployer, &entry.key, entry.revision, &entry.value).await;
                    }
                }
            }
            Err(e) => tracing::debug!("cannot watch the fleet's deploy decisions: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(cluster.cfg.heartbeat_ms)).await;
    }
}

/// The version the fleet last made active for `game`, if any; `Err`: the
/// bucket could not be read.
pub(super) async fn decided_version(cluster: &Cluster, game: &str) -> Result<Option<semver::Version>, ()> {
    let Some(value) = cluster.stores.deploys.get(game).await.map_err(|_| ())? else {
        return Ok(None);
    };
    Ok(serde_json::from_slice::<Decision>(&value)
        .ok()
        .and_then(|d| d.active.parse().ok()))
}

/// Applies the fleet's last decision on `game` again: a version it names
/// may have just arrived here.
pub(super) async fn apply_latest(cluster: &Cluster, deployer: &Arc<Deployer>, game: &str) {
    if let Ok(Some(entry)) = cluster.stores.deploys.entry(game).await {
        apply_entry(cluster, deployer, game, entry.revision, &entry.value).await;
    }
}

/// The revision of each game's decision last applied in full here.
/// Decisions are applied one at a time, and one older than what was applied
/// is skipped: the watch and a module's arrival may both bring one.
static APPLIED: std::sync::OnceLock<tokio::sync::Mutex<HashMap<String, u64>>> = std::sync::OnceLock::new();

async fn apply_entry(cluster: &Cluster, deployer: &Arc<Deployer>, game: &str, revision: u64, value: &[u8]) {
    let Ok(d) = serde_json::from_slice::<Decision>(value) else {
        tracing::warn!(%game, "a deploy decision this host cannot read is ignored");
        return;
    };
    let mut applied = APPLIED.get_or_init(Default::default).lock().await;
    if applied.get(game).is_some_and(|r| *r >= revision) {
        return;
    }
    // This node's own decision is in force here already, unless another
    // node's older one was applied since.
    let own = d.node == cluster.cfg.node
        && d.incarnation == cluster.incarnation.load(Ordering::Acquire)
        && in_force(deployer, game, &d);
    if own || apply(deployer, game, &d).await {
        applied.insert(game.to_owned(), revision);
    }
}

/// Whether this node runs what `d` decided.
fn in_force(deployer: &Deployer, game: &str, d: &Decision) -> bool {
    let games = deployer.games();
    games.active(game).is_some_and(|m| m.version.to_string() == d.active) && games.pinned(game) == d.pinned
}

/// `false`: not applied in full (the version decided is not here yet, or
/// the promotion failed), to be tried again.
async fn apply(deployer: &Arc<Deployer>, game: &str, d: &Decision) -> bool {
    let Ok(version) = d.active.parse::<semver::Version>() else {
        tracing::warn!(%game, version = %d.active, "the fleet's decision names no version");
        return true;
    };
    let games = deployer.games();
    if games.active(game).is_none_or(|m| m.version != version) {
        if games.get(game, &version).is_err() {
            tracing::warn!(
                %game, %version, node = %d.node,
                "the fleet made a version active that this node has not loaded yet; it follows once the version arrives"
            );
            return false;
        }
        match deployer.promote_forced(game, &version, Trigger::Fleet, true).await {
            Ok(p) => tracing::info!(%game, %version, node = %d.node, rooms = p.rooms, "followed the fleet's decision"),
            Err(e) => {
                tracing::error!(%game, %version, node = %d.node, "cannot follow the fleet's decision: {e}");
                return false;
            }
        }
    }
    if games.pinned(game) != d.pinned
        && let Err(e) = deployer.pin_for_fleet(game, d.pinned)
    {
        tracing::error!(%game, "cannot pin as the fleet decided: {e}");
        return false;
    }
    true
}
