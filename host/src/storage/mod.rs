//! What outlives the host process: rooms (checkpoints and the journal of
//! inputs since), players' seats, and game storage, kept in an embedded
//! database (SQLite, [`sqlite`]) behind a small [`Backend`] trait so a
//! replicated backend can be added later.
//!
//! Rooms hand their writes to the [`Store`] and go on; one writer thread
//! commits them in groups (one transaction and one sync for many writes)
//! and publishes how far the database is durable. Under `strict`
//! durability a room holds an input's frames until then.

pub mod kv;
pub mod sqlite;
mod writer;

use crate::config::{Durability, StorageConfig};
use crate::sandbox::determinism::EntropyPosition;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Why the database cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file is not a database, or is damaged.
    #[error("the database {path} is damaged ({why}); move it aside to start without it (nothing in it is deleted)")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// SQLite's words.
        why: String,
    },
    /// Written by a newer host.
    #[error(
        "the database {path} has schema version {found}; this host knows up to {known}: run the newer host, or move the file aside"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        known: i64,
    },
    /// Opening, reading or writing failed (a read-only folder, a full disk).
    #[error("the database {path}: {why}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

/// A room as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomRef {
    /// The game.
    pub game: String,
    /// The room's name.
    pub room: String,
}

/// A player in a room at a checkpoint, and how many room frames it had
/// been sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMember {
    /// The player's id.
    pub player: u64,
    /// Its display name.
    pub name: String,
    /// Its verified user id, if it joined with a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The `seq` of the last room frame it was sent.
    pub seq: u64,
}

/// A room's state at one point of its journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCheckpoint {
    /// Counts the room's checkpoints; the database keeps the last two.
    pub generation: u64,
    /// Inputs journaled before it.
    pub at_index: u64,
    /// The room time it was taken at.
    pub now: u64,
    /// The guest's snapshot.
    pub state: Vec<u8>,
    /// Where the room's random streams stood.
    pub entropy: EntropyPosition,
    /// The version and digest that took it.
    pub version: String,
    /// The module's digest.
    pub digest: String,
    /// Who was in the room.
    pub members: Vec<StoredMember>,
}

/// A room's durable state.
#[derive(Debug, Clone)]
pub struct StoredRoom {
    /// Which room.
    pub key: RoomRef,
    /// Its random seed.
    pub seed: u64,
    /// Its checkpoint (none if the host died before the first was on disk).
    pub checkpoints: Vec<StoredCheckpoint>,
    /// Journal entries (index, JSON) since the checkpoint.
    pub journal: Vec<(u64, Vec<u8>)>,
}

/// A player's seat that a resume may take back after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSeat {
    /// The room.
    pub key: RoomRef,
    /// The player.
    pub player: u64,
    /// SHA-256 of the resume token, in hex (the token itself is a bearer
    /// secret and never stored).
    pub token_hash: String,
}

/// Everything the database holds, read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Rooms with durable state.
    pub rooms: Vec<StoredRoom>,
    /// Seats of players in those rooms.
    pub seats: Vec<StoredSeat>,
    /// Game storage: (game, key, value).
    pub kv: Vec<(String, String, Vec<u8>)>,
    /// Above every player id ever handed out.
    pub next_player: u64,
    /// Banned users.
    pub bans: Vec<crate::auth::Ban>,
}

/// One write.
#[derive(Debug)]
pub enum Op {
    /// A room opened with this seed.
    Room {
        /// Which.
        key: RoomRef,
        /// Its seed.
        seed: u64,
        /// A new room (not one recovered or saved again): whatever the
        /// database holds under its name is an older room's and goes.
        fresh: bool,
    },
    /// A new checkpoint; the older one goes, with the journal before it.
    Checkpoint {
        /// Which room.
        key: RoomRef,
        /// The checkpoint.
        checkpoint: Box<StoredCheckpoint>,
    },
    /// One input, and the game-storage writes it made.
    Append {
        /// Which room.
        key: RoomRef,
        /// Its index in the room's journal.
        index: u64,
        /// The entry, as JSON.
        entry: Vec<u8>,
        /// Players the input joined (their ids must never be reused).
        joined: Option<u64>,
        /// Its storage writes.
        kv: kv::KvWrites,
    },
    /// Game-storage writes of an input that is not journaled.
    Kv {
        /// The game.
        game: String,
        /// The writes.
        writes: kv::KvWrites,
    },
    /// A seat (a new one, or one with a new token after a resume).
    Seat(StoredSeat),
    /// A player left a room for good.
    SeatGone {
        /// The room.
        key: RoomRef,
        /// The player.
        player: u64,
    },
    /// Player ids below `next` were handed out (written at a graceful
    /// stop; joins and seats record theirs as they go).
    PlayerIds {
        /// Above every id handed out.
        next: u64,
    },
    /// A room closed empty: it has nothing to come back to.
    Close {
        /// Which.
        key: RoomRef,
    },
    /// A user is banned (or the ban changed).
    Ban(crate::auth::Ban),
    /// A user's ban is lifted.
    Unban {
        /// The user id.
        user: String,
    },
}

/// A database: read once at start, then written by the writer thread.
pub trait Backend: Send + 'static {
    /// Everything it holds.
    fn load(&mut self) -> Result<Loaded, StorageError>;
    /// Applies `ops` in one transaction, durable when it returns.
    fn commit(&mut self, ops: &[Op]) -> Result<(), StorageError>;
    /// Housekeeping the writer runs between commits (SQLite: copying the
    /// WAL into the database), `idle` when no write waits.
    fn maintain(&mut self, idle: bool) {
        let _ = idle;
    }
}

/// Writes queued at most; past half of it, rooms refuse new inputs with
/// `storage_unavailable` instead of piling up what cannot be saved.
const QUEUE: usize = 1 << 16;

/// The rooms' way to the database.
pub struct Store {
    level: Durability,
    queue: Mutex<Queue>,
    queued: Arc<AtomicUsize>,
    durable: watch::Receiver<u64>,
    healthy: Arc<AtomicBool>,
    path: PathBuf,
    /// Commits that failed (and were retried).
    pub failures: Arc<AtomicU64>,
}

struct Queue {
    next: u64,
    tx: Option<std::sync::mpsc::SyncSender<(u64, Op)>>,
}

/// The store could not take the write.
#[derive(Debug, thiserror::Error)]
#[error("storage is unavailable")]
pub struct Unavailable;

impl Store {
    /// Opens (creating or migrating) `<state_dir>/respawn.db`, reads it,
    /// and starts the writer.
    pub fn open(state_dir: &Path, cfg: &StorageConfig) -> Result<(Arc<Self>, Loaded), StorageError> {
        let path = state_dir.join("respawn.db");
        let backend = sqlite::Sqlite::open(&path, cfg.durability)?;
        Self::with_backend(Box::new(backend), path, cfg)
    }

    /// A store over any backend.
    pub fn with_backend(
        mut backend: Box<dyn Backend>,
        path: PathBuf,
        cfg: &StorageConfig,
    ) -> Result<(Arc<Self>, Loaded), StorageError> {
        let loaded = backend.load()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let (durable_tx, durable) = watch::channel(0);
        let healthy = Arc::new(AtomicBool::new(true));
        let queued = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        writer::spawn(writer::Writer {
            backend,
            rx,
            durable: durable_tx,
            healthy: healthy.clone(),
            queued: queued.clone(),
            failures: failures.clone(),
            linger: cfg.group_commit(),
            max: cfg.group_commit_max,
        })
        .map_err(|e| StorageError::Io {
            path: path.clone(),
            why: format!("cannot start the writer thread: {e}"),
        })?;
        Ok((
            Arc::new(Self {
                level: cfg.durability,
                queue: Mutex::new(Queue { next: 0, tx: Some(tx) }),
                queued,
                durable,
                healthy,
                path,
                failures,
            }),
            loaded,
        ))
    }

    /// The configured durability.
    pub fn level(&self) -> Durability {
        self.level
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write; returns its ticket (durable once
    /// [`durable`](Self::durable) reaches it).
    pub fn submit(&self, op: Op) -> Result<u64, Unavailable> {
        let mut q = crate::lock(&self.queue);
        let tx = q.tx.as_ref().ok_or(Unavailable)?;
        let ticket = q.next + 1;
        // Counted before the writer can see it, so its count never dips
        // below zero.
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tx.try_send((ticket, op)) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            if matches!(e, std::sync::mpsc::TrySendError::Disconnected(_)) {
                // The writer is gone (it panicked): nothing reaches the
                // disk any more, and inputs must be refused.
                self.healthy.store(false, Ordering::Relaxed);
            }
            return Err(Unavailable);
        }
        q.next = ticket;
        Ok(ticket)
    }

    /// Whether new inputs should be taken: the last commit worked and the
    /// queue is not backed up.
    pub fn accepting(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.queued.load(Ordering::Relaxed) < QUEUE / 2
    }

    /// The last ticket on disk.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// A receiver that wakes when more is on disk.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.durable.clone()
    }

    /// Waits until `ticket` is on disk, at most `limit`.
    pub async fn wait(&self, ticket: u64, limit: Duration) -> bool {
        let mut rx = self.durable.clone();
        tokio::time::timeout(limit, rx.wait_for(|d| *d >= ticket))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until everything queued so far is on disk, at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let last = crate::lock(&self.queue).next;
        self.wait(last, limit).await
    }

    /// No more writes: the writer finishes what is queued and stops.
    pub fn close(&self) {
        crate::lock(&self.queue).tx = None;
    }
}

/// How the database is doing, for `respawn status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StorageStats {
    /// The configured level.
    pub durability: Durability,
    /// Whether the last commit worked (if not, inputs are refused with
    /// `storage_unavailable` under `journal` and `strict`).
    pub healthy: bool,
    /// Writes waiting for their commit.
    pub queued: usize,
    /// Commits that failed since the start (each is retried).
    pub failed_commits: u64,
    /// The last write on disk (a count since the start).
    pub durable: u64,
}

impl Store {
    /// The figures of [`StorageStats`] now.
    pub fn stats(&self) -> StorageStats {
        StorageStats {
            durability: self.level,
            healthy: self.healthy.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            failed_commits: self.failures.load(Ordering::Relaxed),
            durable: self.durable(),
        }
    }
}

/// SHA-256 of a resume token, in hex: what the database keeps.
pub fn token_hash(token: &str) -> String {
    use sha2::Digest;
    crate::util::hex(&sha2::Sha256::digest(token.as_bytes()))
}
