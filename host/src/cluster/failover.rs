//! Adopting orphaned rooms: rooms whose owner is dead (no fresh heartbeat
//! of its incarnation) are taken over by the survivors, spread over them
//! by a hash of the room every node computes alike. Adoption is a
//! compare-and-set on the room's owner key, then a `claimed` record that
//! fences the old owner's writes, then the room's records read back and
//! recovered the way a restarted host recovers its rooms, seats parked
//! for their players' resumes.

use super::journal::{RoomLog, Unpublished};
use super::names::{parse_room_key, room_key};
use super::record::{Record, Replayed};
use super::{Cluster, ClusterError, Owner, engine};
use crate::net::admission::Admission;
use crate::room::Rooms;
use crate::session::Sessions;
use crate::storage::{Loaded, RoomRef};
use async_nats::jetstream::{kv, stream};
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// JetStream requests one adoption has under way at once.
const CONCURRENT_REQUESTS: usize = 256;

/// The parts of the host adoption hands rooms and seats to.
pub struct Host {
    /// The live rooms.
    pub rooms: Arc<Rooms>,
    /// The players' sessions (seats are parked there).
    pub sessions: Arc<Sessions>,
    /// Connection admission (parked seats count against it).
    pub admission: Arc<Admission>,
}

/// Takes `room` over from its dead owner, whose claim has revision `rev`.
/// `false` if another node was quicker. Call with the room's lock held
/// ([`Cluster::room_lock`]).
pub(super) async fn adopt(cluster: &Cluster, room: &RoomRef, rev: u64) -> Result<bool, ClusterError> {
    let Some(host) = cluster.host.get() else {
        return Err(ClusterError::CutOff);
    };
    // A node without the game could not serve the room: it leaves it to
    // one that can.
    if host.rooms.games.active(&room.game).is_none() {
        return Err(ClusterError::Engine(format!(
            "the game {} is not loaded on this node",
            room.game
        )));
    }
    let key = room_key(room);
    let owner_rev = match cluster.stores.owners.update(&key, cluster.owner_value(), rev).await {
        Ok(r) => r,
        Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(false),
        Err(e) => return Err(engine(e)),
    };
    recover_owned(cluster, host, room, owner_rev).await?;
    Ok(true)
}

/// Brings back a room this node owns (its claim has revision
/// `owner_rev`) from its records: a `claimed` record first, which fences
/// any earlier owner's writes, then the room recovered the way a restarted
/// host recovers its rooms, seats parked. A room with no records yet
/// starts afresh. Call with the room's lock held.
pub(super) async fn recover_owned(
    cluster: &Cluster,
    host: &Host,
    room: &RoomRef,
    owner_rev: u64,
) -> Result<(), ClusterError> {
    let started = Instant::now();
    let claimed = Record::Claimed {
        node: cluster.cfg.node.clone(),
    };
    // The old owner may write between the read and the claim (if it is
    // not as dead as it looks): then the claim fails, and the room is read
    // again.
    for _ in 0..3 {
        let (replayed, last) = read_room(cluster, room).await?;
        let seq = match super::journal::publish(cluster, room, last, &claimed, false).await {
            Ok(seq) => seq,
            Err(Unpublished::Fenced) => continue,
            Err(Unpublished::Failed(why) | Unpublished::TooLarge(why)) => return Err(ClusterError::Engine(why)),
        };
        let log = RoomLog::adopted(seq, owner_rev, &replayed);
        let max_player = replayed.max_player;
        let Some((stored, seats)) = replayed.into_stored(room).map_err(engine)? else {
            // Claimed but never written: the room starts afresh here.
            crate::lock(&cluster.logs).insert(room.clone(), log);
            return Ok(());
        };
        crate::lock(&cluster.logs).insert(room.clone(), log);
        host.sessions.reserve_players_above(max_player);
        let loaded = Loaded {
            rooms: vec![stored],
            seats,
            ..Loaded::default()
        };
        let parked = host.rooms.recover(loaded).await;
        let seats = parked.len();
        host.sessions.park_recovered(parked, &host.admission);
        tracing::info!(
            game = %room.game,
            room = %room.room,
            seats,
            ms = started.elapsed().as_millis() as u64,
            "adopted a room from a dead node"
        );
        return Ok(());
    }
    Err(ClusterError::Engine(format!(
        "the room {}/{} kept being written by its old owner",
        room.game, room.room
    )))
}

/// Takes over many orphaned rooms at once (each with the revision of its
/// dead owner's claim), as [`adopt`] does one: the claims, the reads of
/// the rooms' records and the `claimed` records are made concurrently, and
/// the rooms are recovered together (one catch-up, not one per room). A
/// room whose old owner wrote after the read, or whose read failed, is
/// adopted alone. The rooms' locks are held until their seats are parked.
async fn adopt_all(cluster: &Cluster, host: &Host, rooms: Vec<(RoomRef, u64)>) {
    let started = Instant::now();
    let mut locks = Vec::new();
    for (room, rev) in rooms {
        if host.rooms.games.active(&room.game).is_none() {
            tracing::warn!(game = %room.game, room = %room.room, "cannot adopt the room: its game is not loaded on this node");
            continue;
        }
        let lock = cluster.room_lock(&room).await;
        // Adopted meanwhile (a player's join or resume did it).
        if !crate::lock(&cluster.logs).contains_key(&room) {
            locks.push((lock, room, rev));
        }
    }
    let claims: Vec<_> = locks
        .iter()
        .map(|(_, room, rev)| {
            let (room, rev, owners) = (room.clone(), *rev, &cluster.stores.owners);
            let value = cluster.owner_value();
            async move {
                let claim = owners.update(&room_key(&room), value, rev).await;
                (room, claim)
            }
        })
        .collect();
    let claims: Vec<_> = futures_util::stream::iter(claims)
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await;
    let mut won: HashMap<RoomRef, u64> = HashMap::new();
    for (room, claim) in claims {
        match claim {
            Ok(owner_rev) => {
                won.insert(room.clone(), owner_rev);
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(e) => tracing::warn!(game = %room.game, room = %room.room, "cannot adopt the room now: {e}"),
        }
    }
    if won.is_empty() {
        return;
    }
    let mut read = read_rooms(cluster, &won).await;
    let claimed = Record::Claimed {
        node: cluster.cfg.node.clone(),
    };
    let fenced: Vec<_> = won
        .into_iter()
        .map(|(room, owner_rev)| {
            let (read, claimed) = (read.remove(&room), &claimed);
            async move {
                let claim = match read {
                    None => Err(None),
                    Some((replayed, last)) => match super::journal::publish(cluster, &room, last, claimed, false).await
                    {
                        Ok(seq) => Ok((seq, replayed)),
                        Err(Unpublished::Fenced) => Err(None),
                        Err(Unpublished::Failed(why) | Unpublished::TooLarge(why)) => Err(Some(why)),
                    },
                };
                (room, owner_rev, claim)
            }
        })
        .collect();
    let fenced: Vec<_> = futures_util::stream::iter(fenced)
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect()
        .await;
    let mut loaded = Loaded::default();
    let mut alone = Vec::new();
    for (room, owner_rev, claim) in fenced {
        match claim {
            Ok((seq, replayed)) => {
                let log = RoomLog::adopted(seq, owner_rev, &replayed);
                host.sessions.reserve_players_above(replayed.max_player);
                match replayed.into_stored(&room) {
                    Ok(Some((stored, seats))) => {
                        loaded.rooms.push(stored);
                        loaded.seats.extend(seats);
                    }
                    // Claimed but never written: the room starts afresh here.
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(game = %room.game, room = %room.room, "the adopted room's records do not read: {e}");
                        continue;
                    }
                }
                crate::lock(&cluster.logs).insert(room, log);
            }
            // Written after the read (or not read): again, alone.
            Err(None) => alone.push((room, owner_rev)),
            Err(Some(why)) => {
                tracing::warn!(game = %room.game, room = %room.room, "cannot claim the adopted room: {why}")
            }
        }
    }
    let rooms = loaded.rooms.len();
    let parked = host.rooms.recover(loaded).await;
    let seats = parked.len();
    host.sessions.park_recovered(parked, &host.admission);
    let singles: Vec<_> = alone
        .into_iter()
        .map(|(room, owner_rev)| async move {
            if let Err(e) = recover_owned(cluster, host, &room, owner_rev).await {
                tracing::warn!(game = %room.game, room = %room.room, "cannot adopt the room now: {e}");
            }
        })
        .collect();
    let alone = singles.len();
    futures_util::stream::iter(singles)
        .buffer_unordered(CONCURRENT_REQUESTS)
        .collect::<Vec<()>>()
        .await;
    tracing::info!(
        rooms,
        seats,
        read_alone = alone,
        ms = started.elapsed().as_millis() as u64,
        "adopted rooms from a dead node"
    );
    drop(locks);
}

/// The records of `rooms` in order, and the sequence of each one's last,
/// read concurrently. Rooms with no records, or whose read failed, are
/// missing from the answer (they are then read alone).
async fn read_rooms(cluster: &Cluster, rooms: &HashMap<RoomRef, u64>) -> HashMap<RoomRef, (Replayed, u64)> {
    let reads: Vec<_> = rooms
        .keys()
        .map(|room| async move { (room.clone(), read_room(cluster, room).await) })
        .collect();
    futures_util::stream::iter(reads)
        .buffer_unordered(CONCURRENT_REQUESTS)
        .filter_map(|(room, read)| async move {
            match read {
                Ok((replayed, last)) if last > 0 => Some((room, (replayed, last))),
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(game = %room.game, room = %room.room, "cannot read the room's records: {e}");
                    None
                }
            }
        })
        .collect()
        .await
}

/// A room's records in order, and the sequence of the last (0: none).
async fn read_room(cluster: &Cluster, room: &RoomRef) -> Result<(Replayed, u64), ClusterError> {
    let subject = cluster.names.room_subject(room);
    let mut replayed = Replayed::default();
    let (mut from, mut last) = (1, 0);
    loop {
        let got = cluster
            .stores
            .stream
            .raw_message_builder()
            .sequence(from)
            .next_by_subject(subject.clone())
            .send()
            .await;
        match got {
            Ok(m) => {
                replayed.apply(room, m.sequence, &m.payload).map_err(engine)?;
                last = m.sequence;
                from = m.sequence + 1;
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => break,
            Err(e) => return Err(engine(e)),
        }
    }
    Ok((replayed, last))
}

/// Which survivor adopts `room`: the same on every node that sees the
/// same live nodes.
fn preferred(room: &RoomRef, live: usize) -> usize {
    // FNV-1a: stable across builds and machines, unlike `DefaultHasher`.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.game.bytes().chain([0]).chain(room.room.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    (h % live.max(1) as u64) as usize
}

/// Follows the owners bucket and adopts orphans, for as long as the host
/// runs.
pub(super) async fn run(cluster: Arc<Cluster>) {
    let owners: Arc<Mutex<HashMap<RoomRef, (Owner, u64)>>> = Arc::default();
    tokio::spawn(follow_owners(cluster.clone(), owners.clone()));
    let adopting: Arc<Mutex<HashSet<RoomRef>>> = Arc::default();
    let mut orphaned_at: HashMap<RoomRef, Instant> = HashMap::new();
    let dead_after = cluster.dead_after();
    let mut tick = tokio::time::interval(Duration::from_millis(cluster.cfg.heartbeat_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if cluster.cut_off.load(std::sync::atomic::Ordering::Acquire) {
            continue;
        }
        let live = cluster.view.live(dead_after);
        let Some(me) = live.iter().position(|n| *n == cluster.cfg.node) else {
            continue;
        };
        let orphans: Vec<(RoomRef, u64)> = crate::lock(&owners)
            .iter()
            .filter(|(_, (owner, _))| !cluster.alive(owner))
            .map(|(room, (_, rev))| (room.clone(), *rev))
            .collect();
        let now = Instant::now();
        orphaned_at.retain(|room, _| orphans.iter().any(|(r, _)| r == room));
        let mut batch = Vec::new();
        for (room, rev) in orphans {
            let since = *orphaned_at.entry(room.clone()).or_insert(now);
            // The preferred survivor first; anyone once it has had a while.
            let mine = preferred(&room, live.len()) == me || since.elapsed() > dead_after;
            if mine && crate::lock(&adopting).insert(room.clone()) {
                batch.push((room, rev));
            }
        }
        if batch.is_empty() {
            continue;
        }
        let (cluster, adopting) = (cluster.clone(), adopting.clone());
        tokio::spawn(async move {
            let Some(host) = cluster.host.get() else { return };
            let rooms: Vec<RoomRef> = batch.iter().map(|(r, _)| r.clone()).collect();
            adopt_all(&cluster, host, batch).await;
            let mut adopting = crate::lock(&adopting);
            for room in &rooms {
                adopting.remove(room);
            }
        });
    }
}

/// Keeps `owners` as the owners bucket says, watching again after the
/// link comes back.
async fn follow_owners(cluster: Arc<Cluster>, owners: Arc<Mutex<HashMap<RoomRef, (Owner, u64)>>>) {
    loop {
        match cluster.stores.owners.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    let Some(room) = parse_room_key(&entry.key) else {
                        continue;
                    };
                    let owner = (entry.operation == kv::Operation::Put)
                        .then(|| serde_json::from_slice::<Owner>(&entry.value).ok())
                        .flatten();
                    let mut map = crate::lock(&owners);
                    match owner {
                        Some(o) => map.insert(room, (o, entry.revision)),
                        None => map.remove(&room),
                    };
                }
            }
            Err(e) => tracing::debug!("cannot watch the rooms' owners: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(cluster.cfg.heartbeat_ms)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PINNED: [usize; 3] = [1, 0, 0];

    #[test]
    fn every_survivor_picks_the_same_adopter_and_rooms_spread_over_them() {
        let rooms: Vec<RoomRef> = (0..300)
            .map(|i| RoomRef {
                game: "chat".into(),
                room: format!("r{i}"),
            })
            .collect();
        let mut per = [0; 3];
        for r in &rooms {
            per[preferred(r, 3)] += 1;
        }
        // Pinned values: a change of the hash would split a fleet of old
        // and new hosts over who adopts what.
        assert_eq!(
            [
                preferred(&rooms[0], 3),
                preferred(&rooms[1], 3),
                preferred(&rooms[2], 3)
            ],
            PINNED
        );
        assert!(per.iter().all(|n| *n > 60), "{per:?}");
        assert_eq!(preferred(&rooms[0], 0), 0);
    }
}
