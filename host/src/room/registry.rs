//! Finds or creates the room for a `(game, room)` pair, and forgets rooms
//! that close.

use super::task::RoomTask;
use super::{Frames, JoinError, Joined, PlayerId, RoomCmd, RoomHandle};
use crate::config::Config;
use crate::modules::{GameModule, Games};
use crate::sandbox::Sandbox;
use rand::{SeedableRng, TryRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// A game and a room name within it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(crate) struct RoomKey {
    pub game: String,
    pub room: String,
}

/// All live rooms of the host.
pub struct Rooms {
    live: Mutex<HashMap<RoomKey, RoomHandle>>,
    pub(crate) sandbox: Arc<Sandbox>,
    pub(crate) games: Arc<Games>,
    pub(crate) config: Arc<Config>,
    next_id: AtomicU64,
    seeds: Mutex<rand::rngs::ChaCha8Rng>,
    /// Set at shutdown: no room is created any more.
    closing: AtomicBool,
    /// Every room's journal together (`rooms.journal_budget_mib`).
    pub(crate) journal_budget: Arc<crate::budget::Budget>,
    /// The database rooms write to (none: nothing outlives the process).
    pub(crate) store: Option<Arc<crate::storage::Store>>,
    /// Every game's storage.
    pub(crate) kv: Option<Arc<crate::storage::kv::KvSpaces>>,
    /// Where faults leave their capsules.
    pub(crate) capsules: Arc<crate::capsule::folder::Folder>,
    /// The fleet this host is a node of (`[cluster]`), which says where
    /// each room lives.
    cluster: std::sync::OnceLock<Arc<crate::cluster::Cluster>>,
    /// Rooms replaying their journals at once: one per core. Hundreds of
    /// rooms coming back together (a restart, a node's failover) would
    /// otherwise interleave their guest calls until each ran past its
    /// wall-clock bound, and rooms would be set aside for being slow.
    pub(crate) recovering: Arc<tokio::sync::Semaphore>,
}

/// How long a migration waits for every room to be ready before aborting.
/// Each room prepares between two inputs, and guest calls are bounded by
/// their deadline, so this is only reached by a wedged room.
const MIGRATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Operators' commands queued per room: a migration or a shutdown at a
/// time, rarely more.
const CONTROL_QUEUE: usize = 4;

/// How long a join waits for its room's answer.
const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// How long stopping a moved room may take (a guest call in flight is
/// bounded by its deadline).
const EVICT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How often a join retries a room that closed under it.
const JOIN_ATTEMPTS: usize = 3;

/// Who joins: the player, its display name, its verified identity, and
/// the hash of its resume token (kept with the seat).
#[derive(Clone, Copy)]
pub struct Joiner<'a> {
    /// The player's id.
    pub player: PlayerId,
    /// The display name.
    pub name: &'a str,
    /// The verified identity, when the player joined with a ticket.
    pub user: Option<&'a crate::auth::User>,
    /// SHA-256 of the resume token, when the host keeps seats.
    pub seat: Option<&'a str>,
}

impl Rooms {
    /// An empty registry; rooms keep their state in `store` and games
    /// their data in `kv`, when given.
    pub fn new(
        sandbox: Arc<Sandbox>,
        games: Arc<Games>,
        config: Arc<Config>,
        store: Option<Arc<crate::storage::Store>>,
        kv: Option<Arc<crate::storage::kv::KvSpaces>>,
    ) -> Arc<Self> {
        let mut os = rand::rngs::SysRng;
        let seed = os.try_next_u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let journal_budget = config.rooms.journal_budget_mib << 20;
        let capsules = Arc::new(crate::capsule::folder::Folder::open(
            &config.state.dir,
            config.capsules.keep,
        ));
        Arc::new(Self {
            capsules,
            live: Mutex::new(HashMap::new()),
            sandbox,
            games,
            config,
            next_id: AtomicU64::new(1),
            seeds: Mutex::new(rand::rngs::ChaCha8Rng::seed_from_u64(seed)),
            closing: AtomicBool::new(false),
            journal_budget: crate::budget::Budget::new(journal_budget),
            store,
            kv,
            cluster: std::sync::OnceLock::new(),
            recovering: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
        })
    }

    /// The fleet this host is a node of, if any.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.get()
    }

    /// Makes this host a node of `cluster`: a room is created here only
    /// once the fleet says this node owns it.
    pub fn join_fleet(&self, cluster: Arc<crate::cluster::Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Brings back every room the database holds, all at once (not on
    /// their first join): each on the version that wrote its checkpoint if
    /// that version is loaded, else on the game's active one. Returns the
    /// seats to park for their players' resumes. Rooms of a game that is
    /// not loaded stay in the database for a later start.
    pub async fn recover(self: &Arc<Self>, loaded: crate::storage::Loaded) -> Vec<super::RecoveredSeat> {
        let mut seats: HashMap<RoomKey, HashMap<PlayerId, String>> = HashMap::new();
        for seat in loaded.seats {
            let key = RoomKey {
                game: seat.key.game,
                room: seat.key.room,
            };
            seats.entry(key).or_default().insert(seat.player, seat.token_hash);
        }
        let mut waiting = Vec::new();
        for stored in loaded.rooms {
            let key = RoomKey {
                game: stored.key.game.clone(),
                room: stored.key.room.clone(),
            };
            let wrote = stored.checkpoints.last().and_then(|cp| {
                let version = cp.version.parse().ok()?;
                self.games
                    .get(&key.game, &version)
                    .ok()
                    .filter(|m| m.digest() == cp.digest)
            });
            let Some(module) = wrote.or_else(|| self.games.active(&key.game)) else {
                tracing::warn!(game = %key.game, room = %key.room, "game not loaded: its room stays in the database for a later start");
                continue;
            };
            let (done, rx) = oneshot::channel();
            let recovery = super::task::recovery_of(stored, seats.remove(&key).unwrap_or_default(), done);
            self.spawn(key, module, Some(recovery));
            waiting.push(rx);
        }
        let mut out = Vec::new();
        for rx in waiting {
            if let Ok(seats) = rx.await {
                out.extend(seats);
            }
        }
        self.catch_up().await;
        out
    }

    /// Rooms recovered on the version that wrote their checkpoint move to
    /// their game's active version (promoted meanwhile, say at this
    /// start), the way a hot swap moves them; if they cannot, they stay.
    async fn catch_up(&self) {
        let behind: Vec<(String, Arc<GameModule>)> = self
            .running_counts()
            .into_keys()
            .filter_map(|(game, digest)| {
                let active = self.games.active(&game)?;
                (active.digest() != digest).then_some((game, active))
            })
            .collect();
        for (game, active) in behind {
            let Some(swap) = self.games.swap_lock(&game) else {
                continue;
            };
            let _migrating = swap.write().await;
            match self.migrate(&game, &active).await {
                Ok(n) => {
                    tracing::info!(%game, version = %active.version, rooms = n, "recovered rooms moved to the active version")
                }
                Err(why) => {
                    tracing::warn!(%game, version = %active.version, "recovered rooms stay on the version that saved them: {}", why.join("; "))
                }
            }
        }
    }

    /// Puts a player into a room, creating the room if needed. On success
    /// returns the room and the player's queue of frames from it.
    pub async fn join(
        self: &Arc<Self>,
        game: &str,
        room: &str,
        joiner: Joiner<'_>,
        may_create: &mut (dyn FnMut() -> bool + Send),
    ) -> Result<(RoomHandle, Joined, Frames), JoinError> {
        let mut last = JoinError::Closed("the room closed while joining".into());
        let unknown = || JoinError::UnknownGame {
            game: game.to_owned(),
            loaded: self.games.names().join(", "),
        };
        let swap = self.games.swap_lock(game).ok_or_else(unknown)?;
        for _ in 0..JOIN_ATTEMPTS {
            // In a fleet, a room is created here only if this node owns
            // it (asked again on each attempt: the room may have moved).
            if let Some(cluster) = self.cluster.get()
                && self.handle(game, room).is_none()
            {
                let key = crate::storage::RoomRef {
                    game: game.to_owned(),
                    room: room.to_owned(),
                };
                match cluster.place(&key).await {
                    Ok(crate::cluster::Place::Here) => {}
                    Ok(crate::cluster::Place::Elsewhere(node)) => return Err(JoinError::Elsewhere(node)),
                    Err(e) => {
                        tracing::warn!(%game, %room, "cannot place the room in the fleet: {e}");
                        return Err(JoinError::StorageUnavailable);
                    }
                }
            }
            // No room is created while the game's rooms migrate.
            let handle = {
                let _creating = swap.read().await;
                self.get_or_create(game, room, &mut *may_create)?
            };
            let (outbound, queue) = crate::mailbox::channel(self.config.net.outbound_queue);
            let overflow = tokio_util::sync::CancellationToken::new();
            let (reply, answer) = oneshot::channel();
            let cmd = RoomCmd::Join {
                player: joiner.player,
                name: joiner.name.to_owned(),
                user: joiner.user.cloned(),
                outbound,
                overflow: overflow.clone(),
                seat: joiner.seat.map(str::to_owned),
                reply,
            };
            if handle.tx.send(cmd).await.is_err() {
                continue;
            }
            // A reply held for a commit that does not come (a failing disk
            // under `strict`) gives up; the room then sees the player leave.
            let answer = match tokio::time::timeout(JOIN_WAIT, answer).await {
                Ok(answer) => answer,
                Err(_) => return Err(JoinError::StorageUnavailable),
            };
            match answer {
                Ok(Ok(joined)) => return Ok((handle, joined, Frames { queue, overflow })),
                // The room was closing when the join arrived: a fresh one
                // is created on the next attempt, unless the host is
                // shutting down.
                Ok(Err(JoinError::Closed(why))) if !self.closing.load(Ordering::Acquire) => {
                    last = JoinError::Closed(why)
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {}
            }
        }
        Err(last)
    }

    /// The live room, or a new one if `may_create` allows (asked only
    /// when a room would be created).
    fn get_or_create(
        self: &Arc<Self>,
        game: &str,
        room: &str,
        may_create: &mut dyn FnMut() -> bool,
    ) -> Result<RoomHandle, JoinError> {
        let key = RoomKey {
            game: game.to_owned(),
            room: room.to_owned(),
        };
        // Looked up before the registry's lock is taken, never under it:
        // under `live` only leaf locks are taken (a room's version, the
        // admission budgets), so no order of locks can cycle through it
        // (the caller's swap lock keeps the active version from changing
        // meanwhile).
        let module = self
            .games
            .for_new_room(game, room)
            .ok_or_else(|| JoinError::UnknownGame {
                game: game.to_owned(),
                loaded: self.games.names().join(", "),
            })?;
        let mut live = crate::lock(&self.live);
        if let Some(h) = live.get(&key).filter(|h| !h.tx.is_closed()) {
            return Ok(h.clone());
        }
        if self.closing.load(Ordering::Acquire) {
            return Err(JoinError::Closed("the host is shutting down".into()));
        }
        // A migration needs a second instance per room for a moment: rooms
        // may use half the instance pool, so a hot swap always fits.
        if live.len() >= self.max_rooms() {
            return Err(JoinError::NoCapacity);
        }
        if !may_create() {
            return Err(JoinError::TooManyRooms);
        }
        Ok(self.spawn_locked(&mut live, key, module, None))
    }

    /// Starts a room's task (a recovered room's if `recovery`).
    fn spawn(
        self: &Arc<Self>,
        key: RoomKey,
        module: Arc<GameModule>,
        recovery: Option<super::task::Recovery>,
    ) -> RoomHandle {
        let mut live = crate::lock(&self.live);
        self.spawn_locked(&mut live, key, module, recovery)
    }

    fn spawn_locked(
        self: &Arc<Self>,
        live: &mut std::sync::MutexGuard<'_, HashMap<RoomKey, RoomHandle>>,
        key: RoomKey,
        module: Arc<GameModule>,
        recovery: Option<super::task::Recovery>,
    ) -> RoomHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let seed = match &recovery {
            Some(r) => r.stored.seed,
            None => crate::lock(&self.seeds).try_next_u64().unwrap_or(id),
        };
        let (tx, rx) = mpsc::channel(self.config.rooms.inbox);
        let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
        let running = Arc::new(Mutex::new(module.clone()));
        let handle = RoomHandle {
            id,
            tx,
            control,
            running: running.clone(),
        };
        live.insert(key.clone(), handle.clone());
        // Its own root, not inside the span of the connection whose join
        // created it: every line the room logs carries game, room and
        // version (`observability.spans`).
        let span = if self.config.observability.spans {
            tracing::info_span!(parent: None, "room", game = %key.game, room = %key.room, version = %module.version)
        } else {
            tracing::Span::none()
        };
        let mut task = RoomTask::new(self.clone(), key, id, module, seed, running);
        if let Some(recovery) = recovery {
            task = task.recovering(recovery);
        }
        tokio::spawn(tracing::Instrument::instrument(task.run(rx, control_rx), span));
        handle
    }

    /// The live room `game`/`room`, if any.
    pub fn handle(&self, game: &str, room: &str) -> Option<RoomHandle> {
        let key = RoomKey {
            game: game.to_owned(),
            room: room.to_owned(),
        };
        crate::lock(&self.live).get(&key).cloned()
    }

    /// Every live room's key and handle, copied out of the registry's lock.
    pub(crate) fn live_handles(&self) -> Vec<(RoomKey, RoomHandle)> {
        crate::lock(&self.live)
            .iter()
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }

    /// Forgets a room if the registry still points at this instance of it.
    /// After this no new command can reach it.
    pub(crate) fn retire(&self, key: &RoomKey, id: u64) {
        let mut live = crate::lock(&self.live);
        if live.get(key).is_some_and(|h| h.id == id) {
            live.remove(key);
        }
    }

    /// Whether the host is shutting down (no room is created any more).
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Rooms that may exist at once: half the instance pool.
    pub fn max_rooms(&self) -> usize {
        (self.config.sandbox.max_instances as usize / 2).max(1)
    }

    /// Live rooms right now.
    pub fn count(&self) -> usize {
        crate::lock(&self.live).len()
    }

    /// Live rooms per `(game, digest of the version they run)`. Taken
    /// before any other lock, like every use of the registry's lock.
    pub fn running_counts(&self) -> HashMap<(String, String), usize> {
        let live = crate::lock(&self.live);
        let mut counts = HashMap::new();
        for (k, h) in live.iter() {
            let digest = crate::lock(&h.running).digest().to_owned();
            *counts.entry((k.game.clone(), digest)).or_insert(0) += 1;
        }
        counts
    }

    /// Up to `n` live rooms of `game` that run `digest`, by name.
    pub(crate) fn rooms_running(&self, game: &str, digest: &str, n: usize) -> Vec<String> {
        let live = crate::lock(&self.live);
        let mut rooms: Vec<String> = live
            .iter()
            .filter(|(k, h)| k.game == game && crate::lock(&h.running).digest() == digest)
            .map(|(k, _)| k.room.clone())
            .collect();
        rooms.sort();
        rooms.truncate(n);
        rooms
    }

    /// Tells a room to feed a shadow; `false` if it is gone.
    pub(crate) async fn shadow(&self, game: &str, room: &str, feed: crate::deploy::shadow::Feed) -> bool {
        let key = RoomKey {
            game: game.to_owned(),
            room: room.to_owned(),
        };
        let handle = crate::lock(&self.live).get(&key).cloned();
        match handle {
            Some(h) => h.control.send(RoomCmd::Shadow { feed }).await.is_ok(),
            None => false,
        }
    }

    /// Removes every player of `user` from every room (a ban), telling
    /// them `reason`. Returns how many rooms were told.
    pub fn kick_user(&self, user: &str, reason: &str) -> usize {
        let handles: Vec<RoomHandle> = crate::lock(&self.live).values().cloned().collect();
        let mut told = 0;
        for h in handles {
            let cmd = RoomCmd::KickUser {
                user: user.to_owned(),
                reason: reason.to_owned(),
            };
            // A room whose control queue is full (a slow start, a burst of
            // bans) gets the kick as soon as it has room; nobody waits.
            match h.control.try_send(cmd) {
                Ok(()) => told += 1,
                Err(mpsc::error::TrySendError::Full(cmd)) => {
                    told += 1;
                    tokio::spawn(async move { h.control.send(cmd).await });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        told
    }

    /// Stops a room another node owns now (see [`RoomCmd::Moved`]),
    /// waiting until it has.
    pub async fn evict(&self, game: &str, room: &str) {
        if let Some(h) = self.handle(game, room) {
            Self::evict_handles(vec![h]).await;
        }
    }

    /// Stops every room: this node lost its lease on them.
    pub async fn evict_all(&self) {
        let handles: Vec<RoomHandle> = crate::lock(&self.live).values().cloned().collect();
        Self::evict_handles(handles).await;
    }

    async fn evict_handles(handles: Vec<RoomHandle>) {
        let stops = handles.into_iter().map(|h| async move {
            let (done, rx) = oneshot::channel();
            if h.control.send(RoomCmd::Moved { done }).await.is_ok() {
                let _ = rx.await;
            }
        });
        let _ = tokio::time::timeout(EVICT_WAIT, futures_util::future::join_all(stops)).await;
    }

    /// Host shutdown: no room is created any more; every room saves its
    /// state and closes. Waits up to `timeout`, sending included. Returns
    /// how many rooms confirmed.
    pub async fn shutdown(&self, timeout: std::time::Duration) -> usize {
        let handles: Vec<RoomHandle> = {
            // Under the registry's lock: a room created after this sees
            // the flag; one created before is in the list.
            let live = crate::lock(&self.live);
            self.closing.store(true, Ordering::Release);
            live.values().cloned().collect()
        };
        let mut confirmed = 0;
        let _ = tokio::time::timeout(timeout, async {
            let mut waiting = Vec::with_capacity(handles.len());
            for h in handles {
                let (done, rx) = oneshot::channel();
                if h.control.send(RoomCmd::Shutdown { done }).await.is_ok() {
                    waiting.push(rx);
                }
            }
            for rx in waiting {
                if rx.await.is_ok() {
                    confirmed += 1;
                }
            }
        })
        .await;
        confirmed
    }

    /// Moves every live room of `game` to `module`, all or none: each room
    /// snapshots its state and restores it into a new instance between two
    /// of its inputs; if any room cannot, every room stays where it was.
    /// Returns how many rooms switched, or why the migration was aborted.
    /// Hold the game's swap lock for writing around this.
    pub async fn migrate(&self, game: &str, module: &Arc<GameModule>) -> Result<usize, Vec<String>> {
        self.migrate_then(game, module, || Ok(())).await
    }

    /// [`migrate`](Self::migrate), with `decide` run once every room is
    /// ready and before any of them switches: a promotion records its
    /// decision there, so no player sees a version the host would not come
    /// back on after a crash. An error from it aborts the migration.
    pub async fn migrate_then(
        &self,
        game: &str,
        module: &Arc<GameModule>,
        decide: impl FnOnce() -> Result<(), String>,
    ) -> Result<usize, Vec<String>> {
        self.migrate_where(game, None, module, decide).await
    }

    /// [`Rooms::migrate_then`] for the rooms of `game` that run the version
    /// with digest `only` (all of them when `None`): a canary's rooms.
    pub async fn migrate_where(
        &self,
        game: &str,
        only: Option<&str>,
        module: &Arc<GameModule>,
        decide: impl FnOnce() -> Result<(), String>,
    ) -> Result<usize, Vec<String>> {
        let handles: Vec<RoomHandle> = {
            let live = crate::lock(&self.live);
            live.iter()
                .filter(|(k, h)| k.game == game && only.is_none_or(|d| crate::lock(&h.running).digest() == d))
                .map(|(_, h)| h.clone())
                .collect()
        };
        let deadline = tokio::time::Instant::now() + MIGRATION_TIMEOUT;
        let mut pending = Vec::with_capacity(handles.len());
        let mut failures = Vec::new();
        for h in &handles {
            let (ready_tx, ready_rx) = oneshot::channel();
            let (decide_tx, decide_rx) = oneshot::channel();
            let cmd = RoomCmd::Swap {
                module: module.clone(),
                ready: ready_tx,
                decision: decide_rx,
            };
            match tokio::time::timeout_at(deadline, h.control.send(cmd)).await {
                Ok(Ok(())) => pending.push((ready_rx, decide_tx)),
                // A room that closed meanwhile has nothing left to migrate.
                Ok(Err(_)) => {}
                Err(_) => {
                    failures.push(format!("a room's control queue stayed full for {MIGRATION_TIMEOUT:?}"));
                    break;
                }
            }
        }
        let mut switched = 0;
        let collect = async {
            for (ready, _) in &mut pending {
                match ready.await {
                    Ok(Ok(())) => switched += 1,
                    Ok(Err(why)) => failures.push(why.to_string()),
                    Err(_) => {}
                }
            }
        };
        if tokio::time::timeout_at(deadline, collect).await.is_err() {
            failures.push(format!("rooms did not get ready within {MIGRATION_TIMEOUT:?}"));
        }
        if failures.is_empty()
            && let Err(why) = decide()
        {
            failures.push(why);
        }
        let commit = failures.is_empty();
        // A room that is ready waits for this decision, however long the
        // others took; dropping the sender would abort it.
        for (_, decide) in pending {
            let _ = decide.send(commit);
        }
        if commit { Ok(switched) } else { Err(failures) }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// Waits for a thread, failing the test if it has not finished within
    /// `limit` (a deadlocked thread never does).
    fn finishes<T>(what: &str, handle: std::thread::JoinHandle<T>, limit: Duration) -> T {
        let deadline = Instant::now() + limit;
        while !handle.is_finished() {
            assert!(Instant::now() < deadline, "{what} is stuck: a lock-order deadlock");
            std::thread::sleep(Duration::from_millis(10));
        }
        handle.join().expect("thread")
    }

    /// Holds the games registry's read lock and then asks for the rooms'
    /// lock (as counting rooms for a status used to), while a promotion
    /// waits to write and a join creates a room. A join that held the
    /// rooms' lock while waiting for the games registry closed the cycle.
    #[test]
    fn a_join_never_waits_for_the_games_lock_while_holding_the_rooms_lock() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(4)
            .enable_all()
            .build()
            .expect("runtime");
        let (rooms, games) = crate::testing::rooms_with_echo();
        let (holding_tx, holding) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<()>();
        let status = {
            let (games, rooms) = (games.clone(), rooms.clone());
            std::thread::spawn(move || {
                games.status(|_, _| {
                    let _ = holding_tx.send(());
                    let _ = go_rx.recv();
                    rooms.count()
                })
            })
        };
        holding.recv().expect("status holds the games lock");
        let promote = {
            let games = games.clone();
            std::thread::spawn(move || games.activate("echo", &"1.0.0".parse().expect("version")).is_ok())
        };
        // The writer is queued: new readers of the games lock now wait.
        std::thread::sleep(Duration::from_millis(100));
        let join = {
            let (rooms, handle) = (rooms.clone(), runtime.handle().clone());
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                rooms.get_or_create("echo", "r", &mut || true).is_ok()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        let _ = go.send(());
        let limit = Duration::from_secs(10);
        finishes("status", status, limit);
        assert!(finishes("the promotion", promote, limit));
        assert!(finishes("the join", join, limit));
        assert_eq!(rooms.count(), 1);
    }
}
