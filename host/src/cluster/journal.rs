//! The fleet's [`Backend`]: the store's writer thread hands it groups of
//! writes, and it turns each room's share into one or two records on the
//! room's subject, published with the sequence the room's last record had
//! (so a write of an owner that lost the room fails instead of landing),
//! all rooms at once, and returns when JetStream has them replicated.
//!
//! A room's checkpoint is written as a new base with a rollup: JetStream
//! drops everything before it on the subject, so a room's records never
//! grow past a checkpoint's worth of journal.

use super::Cluster;
use super::record::{self, Record, RoomOp};
use crate::storage::kv::KvWrites;
use crate::storage::{Backend, Loaded, Op, RoomRef, StorageError};
use async_nats::HeaderMap;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// A room's checkpoints kept in its base: the newest, and the one before
/// in case the newest will not restore.
const KEEP_CHECKPOINTS: usize = 2;

/// What this node knows of a room it owns: enough to write its next base.
#[derive(Debug, Clone, Default)]
pub(crate) struct RoomLog {
    /// The sequence of the room's last record (0: none).
    pub seq: u64,
    /// The revision of this node's claim in the owners bucket.
    pub owner_rev: u64,
    seed: u64,
    checkpoints: Vec<record::Checkpoint>,
    seats: BTreeMap<u64, String>,
    /// The highest player id the room ever had (kept in its base, so ids
    /// of players who left are not handed out again after a failover).
    max_player: u64,
    /// The room closed and was released: what it still sends is dropped,
    /// and a room opened afresh under its name claims it again.
    closed: bool,
}

impl RoomLog {
    /// A room claimed afresh.
    pub fn new(seq: u64, owner_rev: u64) -> Self {
        Self {
            seq,
            owner_rev,
            ..Self::default()
        }
    }

    /// A room adopted from its records.
    pub fn adopted(seq: u64, owner_rev: u64, replayed: &record::Replayed) -> Self {
        Self {
            seq,
            owner_rev,
            seed: replayed.seed.unwrap_or(0),
            checkpoints: replayed.checkpoints.clone(),
            seats: replayed.seats.clone(),
            max_player: replayed.max_player,
            closed: false,
        }
    }

    fn base(&self) -> Record {
        Record::Base {
            seed: self.seed,
            checkpoints: self.checkpoints.clone(),
            seats: self.seats.iter().map(|(p, h)| (*p, h.clone())).collect(),
            max_player: self.max_player,
        }
    }
}

/// Why a record was not published.
pub(super) enum Unpublished {
    /// Another node wrote the room since: this node no longer owns it.
    Fenced,
    /// JetStream did not take it.
    Failed(String),
    /// Larger than the NATS servers' `max_payload`: it never will.
    TooLarge(String),
}

/// The outcome of one room's share of a commit.
enum RoomOutcome {
    /// On the subject; the log as it now stands.
    Written(RoomLog),
    /// Another node owns the room now: its writes are dropped and the
    /// room is stopped here.
    Fenced,
    /// Not written (JetStream unreachable): retried with the commit.
    Failed(String),
}

/// Rooms' writes to JetStream.
pub struct JetStreamBackend {
    cluster: Arc<Cluster>,
    /// Rooms whose share of the commit being retried is already written.
    done: HashSet<RoomRef>,
}

impl JetStreamBackend {
    /// A backend writing through `cluster`.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self {
            cluster,
            done: HashSet::new(),
        }
    }
}

impl Backend for JetStreamBackend {
    fn load(&mut self) -> Result<Loaded, StorageError> {
        let cluster = self.cluster.clone();
        let kv = cluster
            .rt
            .block_on(cluster.load_kv())
            .map_err(|e| self.error(format!("{e:#}")))?;
        let bans = cluster
            .rt
            .block_on(load_bans(&cluster.stores.kv))
            .map_err(|e| self.error(format!("{e:#}")))?;
        Ok(Loaded {
            kv,
            bans,
            ..Loaded::default()
        })
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StorageError> {
        let cluster = self.cluster.clone();
        cluster.rt.block_on(self.commit_async(ops))
    }
}

impl JetStreamBackend {
    fn error(&self, why: String) -> StorageError {
        StorageError::Io {
            path: format!("nats:{}", self.cluster.names.rooms_stream()).into(),
            why,
        }
    }

    async fn commit_async(&mut self, ops: &[Op]) -> Result<(), StorageError> {
        let mut rooms: Vec<(RoomRef, Vec<&Op>)> = Vec::new();
        let mut at: HashMap<&RoomRef, usize> = HashMap::new();
        let mut kv: Vec<(&str, &KvWrites)> = Vec::new();
        let mut bans: Vec<&Op> = Vec::new();
        for op in ops {
            let key = match op {
                Op::Room { key, .. }
                | Op::Checkpoint { key, .. }
                | Op::SeatGone { key, .. }
                | Op::Close { key }
                | Op::Seat(crate::storage::StoredSeat { key, .. }) => key,
                Op::Append { key, kv: writes, .. } => {
                    if !writes.is_empty() {
                        kv.push((&key.game, writes));
                    }
                    key
                }
                Op::Kv { game, writes } => {
                    kv.push((game, writes));
                    continue;
                }
                // Player ids are kept unique per room by adoption (see
                // `failover`).
                Op::PlayerIds { .. } => continue,
                Op::Ban(_) | Op::Unban { .. } => {
                    bans.push(op);
                    continue;
                }
            };
            if self.done.contains(key) {
                continue;
            }
            let i = *at.entry(key).or_insert_with(|| {
                rooms.push((key.clone(), Vec::new()));
                rooms.len() - 1
            });
            rooms[i].1.push(op);
        }
        let cluster = &self.cluster;
        let written = futures_util::future::join_all(rooms.iter().map(|(room, ops)| async move {
            let log = crate::lock(&cluster.logs).get(room).cloned();
            (room, write_room(cluster, room, log, ops).await)
        }));
        let (written, kv_result, bans_result) =
            tokio::join!(written, write_kv(cluster, &kv), write_bans(cluster, &bans));
        let mut failed = None;
        let mut fenced = Vec::new();
        for (room, outcome) in written {
            match outcome {
                RoomOutcome::Written(log) => {
                    crate::lock(&cluster.logs).insert(room.clone(), log);
                    self.done.insert(room.clone());
                }
                RoomOutcome::Fenced => {
                    crate::lock(&cluster.logs).remove(room);
                    tracing::warn!(game = %room.game, room = %room.room, "another node owns this room now: it stops here");
                    fenced.push(room);
                    self.done.insert(room.clone());
                }
                RoomOutcome::Failed(why) => failed = Some(why),
            }
        }
        // Stopped before this commit counts as durable: what they hold
        // was not written and must never go out.
        if let Some(host) = cluster.host.get() {
            let stops = fenced.iter().map(|r| host.rooms.evict(&r.game, &r.room));
            futures_util::future::join_all(stops).await;
        }
        if let Err(why) = kv_result.and(bans_result) {
            failed = Some(why);
        }
        match failed {
            Some(why) => Err(self.error(why)),
            None => {
                self.done.clear();
                Ok(())
            }
        }
    }
}

/// Writes one room's share of a commit: a base when it has a checkpoint
/// (or the room is new), then its other writes.
async fn write_room(cluster: &Cluster, room: &RoomRef, log: Option<RoomLog>, ops: &[&Op]) -> RoomOutcome {
    let Some(mut log) = log else {
        // No log: this node does not own the room (it lost it).
        return RoomOutcome::Fenced;
    };
    let mut rollup = false;
    let mut pending: Vec<RoomOp> = Vec::new();
    let mut seats_put: Vec<String> = Vec::new();
    let mut seats_gone: Vec<String> = Vec::new();
    for op in ops {
        if log.closed {
            // A room's first write is its `Room`: anything else is the
            // closed room's last words.
            let Op::Room { fresh: true, .. } = op else { continue };
            let seq = match cluster.last_seq(room).await {
                Ok(seq) => seq,
                Err(e) => return RoomOutcome::Failed(e.to_string()),
            };
            match cluster
                .stores
                .owners
                .create(super::names::room_key(room), cluster.owner_value())
                .await
            {
                Ok(rev) => log = RoomLog::new(seq, rev),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return RoomOutcome::Fenced,
                Err(e) => return RoomOutcome::Failed(format!("claiming the room again: {e}")),
            }
        }
        match op {
            Op::Room { seed, fresh, .. } => {
                log.seed = *seed;
                // A room written again at shutdown (not fresh) keeps its
                // records: its checkpoint follows, and rolls them up.
                if *fresh {
                    log.checkpoints.clear();
                    log.max_player = 0;
                    seats_gone.extend(std::mem::take(&mut log.seats).into_values());
                    pending.clear();
                    rollup = true;
                }
            }
            Op::Checkpoint { checkpoint, .. } => {
                log.checkpoints.push(checkpoint.as_ref().into());
                let excess = log.checkpoints.len().saturating_sub(KEEP_CHECKPOINTS);
                log.checkpoints.drain(..excess);
                let from = checkpoint.at_index;
                // Seats are in the base; journal before it is covered.
                pending.retain(|op| matches!(op, RoomOp::Append { index, .. } if *index >= from));
                rollup = true;
            }
            Op::Append {
                index, entry, joined, ..
            } => {
                log.max_player = log.max_player.max(joined.unwrap_or(0));
                pending.push(RoomOp::Append {
                    index: *index,
                    entry: record::entry(entry),
                    joined: *joined,
                });
            }
            Op::Seat(seat) => {
                log.max_player = log.max_player.max(seat.player);
                log.seats.insert(seat.player, seat.token_hash.clone());
                seats_put.push(seat.token_hash.clone());
                pending.push(RoomOp::Seat {
                    player: seat.player,
                    token_hash: seat.token_hash.clone(),
                });
            }
            Op::SeatGone { player, .. } => {
                if let Some(hash) = log.seats.remove(player) {
                    seats_gone.push(hash);
                }
                pending.push(RoomOp::SeatGone { player: *player });
            }
            Op::Close { .. } => {
                if let Err(outcome) = close(cluster, room, &log).await {
                    return outcome;
                }
                log = RoomLog {
                    closed: true,
                    ..RoomLog::default()
                };
                (rollup, seats_put, seats_gone) = (false, Vec::new(), Vec::new());
                pending.clear();
            }
            Op::Kv { .. } | Op::PlayerIds { .. } | Op::Ban(_) | Op::Unban { .. } => {}
        }
    }
    let mut records = Vec::new();
    if rollup {
        records.push((log.base(), true));
    }
    if !pending.is_empty() {
        records.push((Record::Ops { ops: pending }, false));
    }
    for (rec, rollup) in records {
        match publish(cluster, room, log.seq, &rec, rollup).await {
            Ok(seq) => log.seq = seq,
            Err(Unpublished::Fenced) => return RoomOutcome::Fenced,
            Err(Unpublished::Failed(why)) => return RoomOutcome::Failed(why),
            Err(Unpublished::TooLarge(why)) => {
                // Retrying would hold up every room's writes for ever:
                // this room stops instead, saying why.
                tracing::error!(
                    game = %room.game, room = %room.room,
                    "the room's record is larger than NATS allows ({why}): the room stops; raise max_payload on the NATS servers"
                );
                return RoomOutcome::Fenced;
            }
        }
    }
    let room_key = super::names::room_key(room);
    let seats = seats_put
        .iter()
        .map(|h| cluster.stores.seats.put(h, room_key.clone().into_bytes().into()))
        .collect::<Vec<_>>();
    for r in futures_util::future::join_all(seats).await {
        if let Err(e) = r {
            return RoomOutcome::Failed(format!("writing a seat: {e}"));
        }
    }
    for h in seats_gone {
        let _ = cluster.stores.seats.purge(&h).await;
    }
    RoomOutcome::Written(log)
}

/// Publishes one record after the room's record `after`; its sequence.
pub(super) async fn publish(
    cluster: &Cluster,
    room: &RoomRef,
    after: u64,
    rec: &Record,
    rollup: bool,
) -> Result<u64, Unpublished> {
    let payload = serde_json::to_vec(rec).map_err(|e| Unpublished::Failed(e.to_string()))?;
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        after.to_string().as_str(),
    );
    // The same record sent again (a retried commit, an ack that timed
    // out) is recognised by JetStream and answered with its first
    // sequence, before the sequence check could refuse it.
    let id = format!(
        "{}/{}/{}/{after}",
        super::names::room_key(room),
        cluster.cfg.node,
        cluster.incarnation.load(std::sync::atomic::Ordering::Acquire)
    );
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    if rollup {
        headers.insert(async_nats::header::NATS_ROLLUP, "sub");
    }
    let too_large = |e: &async_nats::jetstream::context::PublishError| e.kind() == PublishErrorKind::MaxPayloadExceeded;
    let sent = cluster
        .js
        .publish_with_headers(cluster.names.room_subject(room), headers, payload.into())
        .await;
    let ack = match sent {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match ack {
        Ok(ack) => Ok(ack.sequence),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Err(Unpublished::Fenced),
        Err(e) if too_large(&e) => Err(Unpublished::TooLarge(e.to_string())),
        Err(e) => Err(Unpublished::Failed(e.to_string())),
    }
}

/// A room closed empty: its records, seats and claim go.
async fn close(cluster: &Cluster, room: &RoomRef, log: &RoomLog) -> Result<(), RoomOutcome> {
    let key = super::names::room_key(room);
    // Only this node's claim: one taken over meanwhile stays.
    match cluster
        .stores
        .owners
        .purge_expect_revision(&key, Some(log.owner_rev))
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == kv::PurgeErrorKind::WrongLastRevision => {
            // Released already (a retried commit), or another node's now.
            match cluster.stores.owners.entry(key.clone()).await {
                Ok(Some(e)) if e.operation == kv::Operation::Put => return Err(RoomOutcome::Fenced),
                Ok(_) => {}
                Err(e) => return Err(RoomOutcome::Failed(format!("releasing the room: {e}"))),
            }
        }
        Err(e) => return Err(RoomOutcome::Failed(format!("releasing the room: {e}"))),
    }
    // Only its records: a node that claims the name next writes after.
    let purge = cluster
        .stores
        .stream
        .purge()
        .filter(cluster.names.room_subject(room))
        .sequence(log.seq + 1);
    if let Err(e) = purge.await {
        tracing::warn!(game = %room.game, room = %room.room, "the closed room's records stay: {e}");
    }
    for hash in log.seats.values() {
        let _ = cluster.stores.seats.purge(hash).await;
    }
    Ok(())
}

/// Writes games' storage: the bucket's last write per key wins across the
/// fleet (every node follows the bucket in order). A value carries its
/// writer's incarnation, for diagnosis.
async fn write_kv(cluster: &Cluster, writes: &[(&str, &KvWrites)]) -> Result<(), String> {
    let me = cluster.incarnation.load(std::sync::atomic::Ordering::Acquire);
    let mut puts = Vec::new();
    for (game, writes) in writes {
        for (key, value) in writes.iter() {
            let k = super::names::scoped_key(game, key);
            let value = value.as_ref().map(|v| {
                let mut bytes = Vec::with_capacity(8 + v.len());
                bytes.extend_from_slice(&me.to_be_bytes());
                bytes.extend_from_slice(v);
                bytes
            });
            puts.push(put_or_delete(&cluster.stores.kv, k, value));
        }
    }
    for r in futures_util::future::join_all(puts).await {
        r.map_err(|e| format!("writing game storage: {e}"))?;
    }
    Ok(())
}

/// Puts `value` under `key`, or deletes the key for `None`.
async fn put_or_delete(store: &kv::Store, key: String, value: Option<Vec<u8>>) -> Result<(), String> {
    match value {
        Some(v) => store.put(key, v.into()).await.map(drop).map_err(|e| e.to_string()),
        None => store.delete(key).await.map_err(|e| e.to_string()),
    }
}

/// The kv bucket's keys for bans: not a game's name, so never a game's
/// storage.
const BANS: &str = "_bans";

/// Writes bans and lifted bans to the fleet (loaded at a node's start).
async fn write_bans(cluster: &Cluster, ops: &[&Op]) -> Result<(), String> {
    for op in ops {
        let (user, value) = match op {
            Op::Ban(ban) => (&ban.user, Some(serde_json::to_vec(ban).map_err(|e| e.to_string())?)),
            Op::Unban { user } => (user, None),
            _ => continue,
        };
        put_or_delete(&cluster.stores.kv, super::names::scoped_key(BANS, user), value)
            .await
            .map_err(|e| format!("writing a ban: {e}"))?;
    }
    Ok(())
}

/// The bans the fleet holds, for the start.
async fn load_bans(store: &kv::Store) -> anyhow::Result<Vec<crate::auth::Ban>> {
    let mut bans = Vec::new();
    let mut keys = store.keys().await?;
    while let Some(key) = keys.next().await {
        let key = key?;
        if !key.starts_with(BANS) {
            continue;
        }
        if let Some(entry) = store.entry(key).await?
            && entry.operation == kv::Operation::Put
            && let Ok(ban) = serde_json::from_slice(&entry.value)
        {
            bans.push(ban);
        }
    }
    Ok(bans)
}

/// A game-storage write read back: the game, the key, and the value with
/// its writer's incarnation (`None`: deleted).
struct KvRow {
    game: String,
    key: String,
    value: Option<(u64, Vec<u8>)>,
}

/// A kv bucket entry as the game-storage write it records.
fn kv_row(entry: &kv::Entry) -> Option<KvRow> {
    // A game's storage key reads back as a room's would (`scoped_key`);
    // `_bans` keys are not a game's and read as nothing.
    let room = super::names::parse_room_key(&entry.key)?;
    let value = match entry.operation {
        kv::Operation::Put => {
            let (writer, v) = entry.value.split_at_checked(8)?;
            Some((u64::from_be_bytes(writer.try_into().ok()?), v.to_vec()))
        }
        kv::Operation::Delete | kv::Operation::Purge => None,
    };
    Some(KvRow {
        game: room.game,
        key: room.room,
        value,
    })
}

/// Every game's storage, for the start.
pub(super) async fn load_kv(store: &kv::Store) -> anyhow::Result<Vec<(String, String, Vec<u8>)>> {
    let mut rows = Vec::new();
    let mut keys = store.keys().await?;
    while let Some(key) = keys.next().await {
        if let Some(entry) = store.entry(key?).await?
            && let Some(KvRow {
                game,
                key,
                value: Some((_, value)),
            }) = kv_row(&entry)
        {
            rows.push((game, key, value));
        }
    }
    Ok(rows)
}

/// Applies the fleet's writes to games' storage in the bucket's order.
pub async fn follow_kv(cluster: Arc<Cluster>, spaces: Arc<crate::storage::kv::KvSpaces>) {
    loop {
        match cluster.stores.kv.watch_with_history(">").await {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    let Some(KvRow { game, key, value }) = kv_row(&entry) else {
                        continue;
                    };
                    // This node's own writes too: every node applies the
                    // bucket's order, so all end with its last value.
                    let value = value.map(|(_, v)| v);
                    spaces.game(&game).apply(&BTreeMap::from([(key, value)]));
                }
            }
            Err(e) => tracing::debug!("cannot follow the games' storage: {e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(cluster.cfg.heartbeat_ms)).await;
    }
}
