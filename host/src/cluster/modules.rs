//! Modules across the fleet. Every version a node loads (verified, from
//! its modules folder or its slot store) goes into the fleet's object store
//! as `<game>/<version>/<digest>`, signed bytes as they are; every node
//! fetches the versions it lacks, verifies them against its own trust
//! folder like any file, compiles them, and loads them without promoting:
//! which version runs stays the fleet's decision ([`super::deploys`]),
//! applied again once the module is here. The store keeps the newest
//! `slots.keep` versions of each game, as every node's slots do.

use super::Cluster;
use crate::deploy::Deployer;
use crate::modules::loader::MAX_MODULE_BYTES;
use crate::modules::{GameModule, Rejection};
use futures_util::StreamExt;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// An object's name: which version of which game, built how.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectName {
    game: String,
    version: semver::Version,
    digest: String,
}

impl ObjectName {
    fn of(module: &GameModule) -> Self {
        Self {
            game: module.name.clone(),
            version: module.version.clone(),
            digest: module.digest().to_owned(),
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let mut parts = name.split('/');
        let (game, version, digest) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !crate::modules::is_valid_game_name(game) {
            return None;
        }
        if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Self {
            game: game.to_owned(),
            version: version.parse().ok()?,
            digest: digest.to_owned(),
        })
    }
}

impl std::fmt::Display for ObjectName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.game, self.version, self.digest)
    }
}

/// Ships the versions this node loads, and loads the ones other nodes
/// shipped. Fetched files wait in `inbox` while they are verified.
pub fn start(cluster: Arc<Cluster>, deployer: Arc<Deployer>, inbox: PathBuf, keep: usize) {
    let (tx, rx) = mpsc::unbounded_channel::<Arc<GameModule>>();
    // The hook first: a version loaded meanwhile is sent twice, not never.
    let hook = tx.clone();
    deployer.on_loaded(move |module| {
        let _ = hook.send(module.clone());
    });
    for module in deployer.games().modules() {
        let _ = tx.send(module);
    }
    tokio::spawn(publish(cluster.clone(), rx, keep));
    tokio::spawn(follow(cluster, deployer, inbox));
}

async fn publish(cluster: Arc<Cluster>, mut loaded: mpsc::UnboundedReceiver<Arc<GameModule>>, keep: usize) {
    while let Some(module) = loaded.recv().await {
        let name = ObjectName::of(&module);
        let key = name.to_string();
        // A deleted object still answers `info`: shipped again then.
        if cluster.stores.modules.info(&key).await.is_ok_and(|i| !i.deleted) {
            continue;
        }
        let mut bytes = module.source.bytes();
        match cluster.stores.modules.put(key.as_str(), &mut bytes).await {
            Ok(_) => tracing::info!(game = %name.game, version = %name.version, "version shipped to the fleet"),
            Err(e) => {
                tracing::error!(game = %name.game, version = %name.version, "cannot ship the version to the fleet (the other nodes get it when this node restarts, or drop the file on another node): {e}");
                continue;
            }
        }
        prune(&cluster, &name.game, keep).await;
    }
}

/// Deletes the versions of `game` older than its newest `keep`, except
/// the one the fleet last made active (a rollback may have gone far back).
async fn prune(cluster: &Cluster, game: &str, keep: usize) {
    // Without knowing what the fleet runs, nothing is deleted.
    let Ok(active) = super::deploys::decided_version(cluster, game).await else {
        return;
    };
    let Ok(mut list) = cluster.stores.modules.list().await else {
        return;
    };
    let mut versions = Vec::new();
    while let Some(Ok(info)) = list.next().await {
        if let Some(name) = ObjectName::parse(&info.name).filter(|n| n.game == game) {
            versions.push(name);
        }
    }
    versions.sort_by(|a, b| b.version.cmp(&a.version));
    for old in versions
        .into_iter()
        .skip(keep)
        .filter(|v| Some(&v.version) != active.as_ref())
    {
        if let Err(e) = cluster.stores.modules.delete(old.to_string()).await {
            tracing::debug!(game, version = %old.version, "cannot forget an old version in the fleet's store: {e}");
        }
    }
}

/// Loads every version the fleet has that this node lacks, for as long
/// as the host runs.
async fn follow(cluster: Arc<Cluster>, deployer: Arc<Deployer>, inbox: PathBuf) {
    if let Err(e) = tokio::fs::create_dir_all(&inbox).await {
        tracing::error!(dir = %inbox.display(), "cannot make the folder for the fleet's modules; none will be loaded: {e}");
        return;
    }
    // Versions this node refused (its trusted keys, a version conflict):
    // not fetched again until it restarts.
    let mut refused: HashSet<ObjectName> = HashSet::new();
    loop {
        match cluster.stores.modules.watch_with_history().await {
            Ok(mut watch) => {
                while let Some(entry) = watch.next().await {
                    let Ok(info) = entry else { continue };
                    if info.deleted {
                        continue;
                    }
                    let Some(name) = ObjectName::parse(&info.name) else {
                        tracing::warn!(object = %info.name, "an object this host did not write is in the fleet's modules store; ignored");
                        continue;
                    };
                    let games = deployer.games();
                    if refused.contains(&name)
                        || games
                            .get(&name.game, &name.version)
                            .is_ok_and(|m| m.digest() == name.digest)
                    {
                        continue;
                    }
                    if info.size as u64 > MAX_MODULE_BYTES {
                        tracing::error!(game = %name.game, version = %name.version, size = info.size, "the fleet's module is over the module size limit; not loaded");
                        continue;
                    }
                    if !fetch_and_load(&cluster, &deployer, &inbox, &name).await {
                        refused.insert(name);
                    }
                }
            }
            Err(e) => tracing::debug!("cannot watch the fleet's modules: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(cluster.cfg.heartbeat_ms)).await;
    }
}

/// `false`: this node refused the version (fetching it again would not
/// change that).
async fn fetch_and_load(
    cluster: &Cluster,
    deployer: &Arc<Deployer>,
    inbox: &std::path::Path,
    name: &ObjectName,
) -> bool {
    let mut bytes = Vec::new();
    let read = match cluster.stores.modules.get(name.to_string()).await {
        Ok(object) => object
            .take(MAX_MODULE_BYTES + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = read {
        tracing::error!(game = %name.game, version = %name.version, "cannot fetch the fleet's module: {e}");
        return true;
    }
    let file = inbox.join(format!("{}-{}-{}.wasm", name.game, name.version, &name.digest[..16]));
    if let Err(e) = crate::util::write_atomic(&file, &bytes) {
        tracing::error!(file = %file.display(), "cannot keep the fleet's module for loading: {e}");
        return true;
    }
    // Refusals are logged and audited as for any file, with their code.
    let offered = deployer.offer_from_fleet(&file).await;
    // The slot store holds what was loaded.
    let _ = std::fs::remove_file(&file);
    match offered {
        Ok(Some(module)) => {
            tracing::info!(game = %module.name, version = %module.version, "loaded a version from the fleet");
            super::deploys::apply_latest(cluster, deployer, &module.name).await;
            true
        }
        Ok(None) => true,
        // Remembered: refusals the same bytes would meet again; not a
        // failed read of the file, which may pass.
        Err(why) => matches!(why, Rejection::Read(_)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_round_trip_and_foreign_names_are_refused() {
        let name = ObjectName {
            game: "chat".into(),
            version: "1.2.3-rc.1".parse().expect("version"),
            digest: "ab".repeat(32),
        };
        assert_eq!(ObjectName::parse(&name.to_string()), Some(name));
        for foreign in [
            "chat",
            "chat/1.0.0",
            "chat/x/".to_owned().as_str(),
            &format!("chat/1.0.0/{}", "zz".repeat(32)),
            &format!("chat/1.0.0/{}/extra", "ab".repeat(32)),
            &format!("../1.0.0/{}", "ab".repeat(32)),
        ] {
            assert_eq!(ObjectName::parse(foreign), None, "{foreign}");
        }
    }
}
