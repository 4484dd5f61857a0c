//! The default backend: one SQLite database in the state folder, in WAL
//! mode, its schema versioned (`PRAGMA user_version`) and migrated at
//! open.

use super::{Backend, Loaded, Op, RoomRef, StorageError, StoredCheckpoint, StoredMember, StoredRoom, StoredSeat};
use crate::auth::Ban;
use crate::config::Durability;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Each migration takes the schema from its index to the next version.
const MIGRATIONS: &[&str] = &[
    // 0 → 1
    "CREATE TABLE rooms (
         game TEXT NOT NULL, room TEXT NOT NULL, seed INTEGER NOT NULL,
         PRIMARY KEY (game, room)
     );
     CREATE TABLE checkpoints (
         game TEXT NOT NULL, room TEXT NOT NULL, generation INTEGER NOT NULL,
         at_index INTEGER NOT NULL, now INTEGER NOT NULL, state BLOB NOT NULL,
         entropy TEXT NOT NULL, version TEXT NOT NULL, digest TEXT NOT NULL,
         members TEXT NOT NULL,
         log_from INTEGER NOT NULL,
         PRIMARY KEY (game, room, generation)
     );
     -- Every room's inputs in one append-only log: a commit writes the
     -- last page or two, however many rooms its inputs come from.
     CREATE TABLE journal (
         -- Numbers are never reused: a prune always keeps the newest row,
         -- so the next is numbered above every earlier one (checkpoints
         -- point into this numbering). No AUTOINCREMENT, which would
         -- write one more page per commit.
         seq INTEGER PRIMARY KEY,
         game TEXT NOT NULL, room TEXT NOT NULL, idx INTEGER NOT NULL, entry BLOB NOT NULL
     );
     CREATE TABLE seats (
         game TEXT NOT NULL, room TEXT NOT NULL, player INTEGER NOT NULL,
         token_hash TEXT NOT NULL,
         PRIMARY KEY (game, room, player)
     );
     CREATE TABLE kv (
         game TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
         PRIMARY KEY (game, key)
     );
     CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 1 → 2: banned users (`respawn ban`).
    "CREATE TABLE bans (
         user TEXT PRIMARY KEY, reason TEXT NOT NULL,
         since_ms INTEGER NOT NULL, until_ms INTEGER
     );",
];

/// The schema version this host writes.
pub const SCHEMA: i64 = MIGRATIONS.len() as i64;

/// A SQLite database.
pub struct Sqlite {
    conn: Connection,
    path: PathBuf,
    /// Commits since the WAL was last copied into the database.
    since_checkpoint: u64,
}

/// Commits after which an idle writer drops the log entries no
/// checkpoint needs and copies the WAL into the database.
const CHECKPOINT_AFTER: u64 = 64;

/// The WAL size kept between copies into the database.
const WAL_KEEP_BYTES: i64 = 16 << 20;

impl Sqlite {
    /// Opens or creates the database at `path` and brings its schema up to
    /// date. A damaged file or one from a newer host is refused, untouched.
    pub fn open(path: &Path, level: Durability) -> Result<Self, StorageError> {
        let io = |e: rusqlite::Error| classify(path, e);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StorageError::Io {
                path: path.to_owned(),
                why: e.to_string(),
            })?;
        }
        let conn = Connection::open(path).map_err(io)?;
        // Reading the schema version is the first touch of the file: a
        // file that is not a database fails here.
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(io)?;
        if version > SCHEMA {
            return Err(StorageError::NewerSchema {
                path: path.to_owned(),
                found: version,
                known: SCHEMA,
            });
        }
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0)).map_err(io)?;
        if check != "ok" {
            return Err(StorageError::Damaged {
                path: path.to_owned(),
                why: check,
            });
        }
        // SQLite opens a file it cannot write read-only, quietly: that would
        // fail only at the first input.
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(io)? {
            return Err(StorageError::Io {
                path: path.to_owned(),
                why: "it cannot be written (a read-only file or file system)".into(),
            });
        }
        // One process owns the database: no file locks taken and dropped
        // on every commit, and the WAL index lives in memory.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE").map_err(io)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(io)?;
        // FULL syncs every commit: what `journal` and `strict` promise
        // survives a power cut, not only a crash of the process.
        let sync = if level.journals() { "FULL" } else { "NORMAL" };
        conn.pragma_update(None, "synchronous", sync).map_err(io)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(io)?;
        // The WAL is copied into the database when the writer is idle
        // (`maintain`), not inside a commit that players wait on.
        conn.pragma_update(None, "wal_autocheckpoint", 0).map_err(io)?;
        // The WAL is rewritten from its start after a copy (`RESTART` in
        // `maintain`) rather than truncated, so commits do not grow the
        // file and their sync need not write its size; a WAL left larger
        // than this by a burst is cut back.
        conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)
            .map_err(io)?;
        let mut db = Self {
            conn,
            path: path.to_owned(),
            since_checkpoint: 0,
        };
        db.migrate(version)?;
        Ok(db)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StorageError> {
        let path = self.path.clone();
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(from as usize) {
            let tx = self.conn.transaction().map_err(|e| classify(&path, e))?;
            tx.execute_batch(sql).map_err(|e| classify(&path, e))?;
            tx.pragma_update(None, "user_version", i as i64 + 1)
                .map_err(|e| classify(&path, e))?;
            tx.commit().map_err(|e| classify(&path, e))?;
            tracing::info!(db = %path.display(), version = i + 1, "database schema migrated");
        }
        Ok(())
    }

    /// Drops the log's prefix that every room's checkpoint has passed (a
    /// range of the rowid, cheap), always keeping the newest entry so
    /// numbers go on from it; returns how many entries went.
    fn prune(&mut self) -> rusqlite::Result<usize> {
        self.conn.execute(
            "DELETE FROM journal WHERE seq < min(
                 coalesce((SELECT min(log_from) FROM checkpoints), 9223372036854775807),
                 (SELECT coalesce(max(seq), 0) FROM journal))",
            [],
        )
    }

    /// Every row of `sql` (no parameters), mapped by `map`.
    fn query<T>(
        &self,
        sql: &str,
        map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>, StorageError> {
        let mut q = self.conn.prepare(sql).map_err(|e| self.err(e))?;
        let rows = q.query_map([], map).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<T>>>().map_err(|e| self.err(e))
    }

    fn err(&self, e: rusqlite::Error) -> StorageError {
        classify(&self.path, e)
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> StorageError {
    use rusqlite::ErrorCode as C;
    match e.sqlite_error_code() {
        Some(C::NotADatabase | C::DatabaseCorrupt) => StorageError::Damaged {
            path: path.to_owned(),
            why: e.to_string(),
        },
        _ => StorageError::Io {
            path: path.to_owned(),
            why: e.to_string(),
        },
    }
}

impl Backend for Sqlite {
    fn load(&mut self) -> Result<Loaded, StorageError> {
        let mut rooms: HashMap<RoomRef, StoredRoom> = HashMap::new();
        for (game, room, seed) in self.query("SELECT game, room, seed FROM rooms", |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })? {
            let key = RoomRef { game, room };
            rooms.insert(
                key.clone(),
                StoredRoom {
                    key,
                    seed: seed as u64,
                    checkpoints: Vec::new(),
                    journal: Vec::new(),
                },
            );
        }
        let checkpoints = self.query(
            "SELECT game, room, generation, at_index, now, state, entropy, version, digest, members
             FROM checkpoints ORDER BY game, room, generation",
            |r| {
                Ok((
                    RoomRef {
                        game: r.get(0)?,
                        room: r.get(1)?,
                    },
                    (r.get::<_, i64>(2)?, r.get::<_, i64>(3)?, r.get::<_, i64>(4)?),
                    r.get::<_, Vec<u8>>(5)?,
                    (r.get::<_, String>(6)?, r.get::<_, String>(7)?),
                    (r.get::<_, String>(8)?, r.get::<_, String>(9)?),
                ))
            },
        )?;
        for (key, (generation, at_index, now), state, (entropy, version), (digest, members)) in checkpoints {
            let damaged = |what: &str, e: serde_json::Error| StorageError::Damaged {
                path: self.path.clone(),
                why: format!(
                    "the {what} of a checkpoint of {}/{} does not parse: {e}",
                    key.game, key.room
                ),
            };
            let cp = StoredCheckpoint {
                generation: generation as u64,
                at_index: at_index as u64,
                now: now as u64,
                state,
                entropy: serde_json::from_str(&entropy).map_err(|e| damaged("entropy", e))?,
                version,
                digest,
                members: serde_json::from_str::<Vec<StoredMember>>(&members).map_err(|e| damaged("members", e))?,
            };
            if let Some(r) = rooms.get_mut(&key) {
                r.checkpoints.push(cp);
            }
        }
        // Each room's entries written after its checkpoint.
        let journal = self.query(
            "SELECT j.game, j.room, j.idx, j.entry FROM journal j
             JOIN checkpoints c ON c.game = j.game AND c.room = j.room
             WHERE j.seq >= c.log_from ORDER BY j.seq",
            |r| {
                Ok((
                    RoomRef {
                        game: r.get(0)?,
                        room: r.get(1)?,
                    },
                    r.get::<_, i64>(2)?,
                    r.get::<_, Vec<u8>>(3)?,
                ))
            },
        )?;
        for (key, idx, entry) in journal {
            if let Some(r) = rooms.get_mut(&key) {
                r.journal.push((idx as u64, entry));
            }
        }
        let seats = self.query("SELECT game, room, player, token_hash FROM seats", |r| {
            Ok(StoredSeat {
                key: RoomRef {
                    game: r.get(0)?,
                    room: r.get(1)?,
                },
                player: r.get::<_, i64>(2)? as u64,
                token_hash: r.get(3)?,
            })
        })?;
        let kv = self.query("SELECT game, key, value FROM kv", |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        let bans = self.query("SELECT user, reason, since_ms, until_ms FROM bans", |r| {
            Ok(Ban {
                user: r.get(0)?,
                reason: r.get(1)?,
                since_ms: r.get::<_, i64>(2)? as u64,
                until_ms: r.get::<_, Option<i64>>(3)?.map(|t| t as u64),
            })
        })?;
        let next_player = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'next_player'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()
            .map_err(|e| self.err(e))?
            .unwrap_or(0) as u64;
        let mut rooms: Vec<StoredRoom> = rooms.into_values().collect();
        rooms.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Loaded {
            rooms,
            seats,
            kv,
            next_player,
            bans,
        })
    }

    fn commit(&mut self, ops: &[Op]) -> Result<(), StorageError> {
        let path = self.path.clone();
        let e = |e: rusqlite::Error| classify(&path, e);
        let tx = self.conn.transaction().map_err(e)?;
        let mut next_player = None::<u64>;
        for op in ops {
            match op {
                Op::Room { key, seed, fresh } => {
                    // A room starting afresh under a name the database
                    // still holds (its game was not loaded at the last
                    // start) replaces what is there.
                    let stale: &[&str] = if *fresh { &["checkpoints", "seats"] } else { &[] };
                    for table in stale {
                        tx.prepare_cached(&format!("DELETE FROM {table} WHERE game = ?1 AND room = ?2"))
                            .and_then(|mut s| s.execute(params![key.game, key.room]))
                            .map_err(e)?;
                    }
                    tx.prepare_cached("INSERT OR REPLACE INTO rooms (game, room, seed) VALUES (?1, ?2, ?3)")
                        .and_then(|mut s| s.execute(params![key.game, key.room, *seed as i64]))
                        .map_err(e)?;
                }
                Op::Checkpoint { key, checkpoint: cp } => {
                    let entropy = serde_json::to_string(&cp.entropy).unwrap_or_default();
                    let members = serde_json::to_string(&cp.members).unwrap_or_else(|_| "[]".into());
                    // Entries the room journals from here on come after the
                    // log's current end.
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO checkpoints
                         (game, room, generation, at_index, now, state, entropy, version, digest, members, log_from)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                                 (SELECT coalesce(max(seq), 0) + 1 FROM journal))",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            key.game,
                            key.room,
                            cp.generation as i64,
                            cp.at_index as i64,
                            cp.now as i64,
                            cp.state,
                            entropy,
                            cp.version,
                            cp.digest,
                            members
                        ])
                    })
                    .map_err(e)?;
                    // The older checkpoint goes; the entries before this one
                    // leave the log once no checkpoint needs them (`maintain`).
                    tx.prepare_cached("DELETE FROM checkpoints WHERE game = ?1 AND room = ?2 AND generation != ?3")
                        .and_then(|mut s| s.execute(params![key.game, key.room, cp.generation as i64]))
                        .map_err(e)?;
                }
                Op::Append {
                    key,
                    index,
                    entry,
                    joined,
                    kv,
                } => {
                    tx.prepare_cached("INSERT INTO journal (game, room, idx, entry) VALUES (?1, ?2, ?3, ?4)")
                        .and_then(|mut s| s.execute(params![key.game, key.room, *index as i64, entry]))
                        .map_err(e)?;
                    if let Some(p) = joined {
                        next_player = next_player.max(Some(p + 1));
                    }
                    write_kv(&tx, &key.game, kv).map_err(e)?;
                }
                Op::Kv { game, writes } => write_kv(&tx, game, writes).map_err(e)?,
                Op::Seat(seat) => {
                    next_player = next_player.max(Some(seat.player + 1));
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO seats (game, room, player, token_hash) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            seat.key.game,
                            seat.key.room,
                            seat.player as i64,
                            seat.token_hash
                        ])
                    })
                    .map_err(e)?;
                }
                Op::PlayerIds { next } => next_player = next_player.max(Some(*next)),
                Op::Ban(ban) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO bans (user, reason, since_ms, until_ms) VALUES (?1, ?2, ?3, ?4)",
                    )
                    .and_then(|mut s| {
                        s.execute(params![
                            ban.user,
                            ban.reason,
                            ban.since_ms as i64,
                            ban.until_ms.map(|t| t as i64)
                        ])
                    })
                    .map_err(e)?;
                }
                Op::Unban { user } => {
                    tx.prepare_cached("DELETE FROM bans WHERE user = ?1")
                        .and_then(|mut s| s.execute(params![user]))
                        .map_err(e)?;
                }
                Op::SeatGone { key, player } => {
                    tx.prepare_cached("DELETE FROM seats WHERE game = ?1 AND room = ?2 AND player = ?3")
                        .and_then(|mut s| s.execute(params![key.game, key.room, *player as i64]))
                        .map_err(e)?;
                }
                Op::Close { key } => {
                    // Its log entries go with the next prune.
                    for table in ["rooms", "checkpoints", "seats"] {
                        tx.prepare_cached(&format!("DELETE FROM {table} WHERE game = ?1 AND room = ?2"))
                            .and_then(|mut s| s.execute(params![key.game, key.room]))
                            .map_err(e)?;
                    }
                }
            }
        }
        if let Some(next) = next_player {
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('next_player', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            )
            .and_then(|mut s| s.execute(params![next as i64]))
            .map_err(e)?;
        }
        tx.commit().map_err(e)?;
        self.since_checkpoint += 1;
        Ok(())
    }

    fn maintain(&mut self, idle: bool) {
        // Under steady load the writer is never idle: then now and then
        // anyway, or the WAL and the log would grow until traffic stops.
        let due = if idle { CHECKPOINT_AFTER } else { CHECKPOINT_AFTER * 16 };
        if self.since_checkpoint < due {
            return;
        }
        if let Err(e) = self.prune() {
            tracing::debug!(db = %self.path.display(), "pruning the journal: {e}");
        }
        match self.conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
            Ok(()) => self.since_checkpoint = 0,
            Err(e) => tracing::debug!(db = %self.path.display(), "WAL checkpoint: {e}"),
        }
    }
}

fn write_kv(tx: &rusqlite::Transaction<'_>, game: &str, writes: &super::kv::KvWrites) -> rusqlite::Result<()> {
    for (key, value) in writes {
        match value {
            Some(v) => tx
                .prepare_cached("INSERT OR REPLACE INTO kv (game, key, value) VALUES (?1, ?2, ?3)")?
                .execute(params![game, key, v])?,
            None => tx
                .prepare_cached("DELETE FROM kv WHERE game = ?1 AND key = ?2")?
                .execute(params![game, key])?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn key() -> RoomRef {
        RoomRef {
            game: "chat".into(),
            room: "lobby".into(),
        }
    }

    fn cp(generation: u64, at_index: u64) -> Box<StoredCheckpoint> {
        Box::new(StoredCheckpoint {
            generation,
            at_index,
            now: 5,
            state: vec![generation as u8],
            entropy: Default::default(),
            version: "1.0.0".into(),
            digest: "ab".into(),
            members: vec![StoredMember {
                player: 3,
                name: "ann".into(),
                user: None,
                seq: 9,
            }],
        })
    }

    fn append(index: u64) -> Op {
        Op::Append {
            key: key(),
            index,
            entry: format!("{{\"i\":{index}}}").into_bytes(),
            joined: Some(index * 10),
            kv: BTreeMap::from([(format!("k{index}"), Some(vec![1]))]),
        }
    }

    #[test]
    fn keeps_the_last_checkpoint_and_the_journal_since() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("respawn.db");
        let mut db = Sqlite::open(&path, Durability::Strict).unwrap();
        db.commit(&[
            Op::Room {
                key: key(),
                seed: 7,
                fresh: true,
            },
            Op::Checkpoint {
                key: key(),
                checkpoint: cp(0, 0),
            },
            append(0),
            append(1),
            Op::Checkpoint {
                key: key(),
                checkpoint: cp(1, 2),
            },
            append(2),
            Op::Checkpoint {
                key: key(),
                checkpoint: cp(2, 3),
            },
            append(3),
            Op::Seat(StoredSeat {
                key: key(),
                player: 3,
                token_hash: "h".into(),
            }),
            Op::Kv {
                game: "chat".into(),
                writes: BTreeMap::from([("k0".to_string(), None)]),
            },
        ])
        .unwrap();
        drop(db);
        let mut db = Sqlite::open(&path, Durability::Strict).unwrap();
        let loaded = db.load().unwrap();
        let room = &loaded.rooms[0];
        assert_eq!(room.seed, 7);
        let gens: Vec<u64> = room.checkpoints.iter().map(|c| c.generation).collect();
        assert_eq!(gens, [2]);
        assert_eq!(room.checkpoints[0].members[0].seq, 9);
        let idx: Vec<u64> = room.journal.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, [3], "the journal since the checkpoint");
        // The log keeps what no checkpoint needs until it is pruned.
        let rows = |db: &Sqlite| -> i64 {
            db.conn
                .query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(rows(&db), 4);
        assert_eq!(db.prune().unwrap(), 3);
        assert_eq!(rows(&db), 1);
        assert_eq!(loaded.seats.len(), 1);
        let keys: Vec<&str> = loaded.kv.iter().map(|(_, k, _)| k.as_str()).collect();
        assert_eq!(keys, ["k1", "k2", "k3"]);
        assert_eq!(loaded.next_player, 31);
        db.commit(&[Op::Close { key: key() }]).unwrap();
        let loaded = db.load().unwrap();
        assert!(loaded.rooms.is_empty() && loaded.seats.is_empty());
        // No room needs any of the log now; the newest entry stays so the
        // numbering goes on.
        assert_eq!(db.prune().unwrap(), 0);
        assert_eq!(rows(&db), 1);
        // Numbers go on after the log was emptied, so a checkpoint taken
        // now still finds the entries that follow it.
        db.commit(&[
            Op::Room {
                key: key(),
                seed: 8,
                fresh: true,
            },
            Op::Checkpoint {
                key: key(),
                checkpoint: cp(1, 0),
            },
            append(0),
        ])
        .unwrap();
        let loaded = db.load().unwrap();
        assert_eq!(loaded.rooms[0].journal.len(), 1, "the entry after the checkpoint");
        // A room that starts afresh under the same name replaces the old
        // one's checkpoints, whatever their generation.
        db.commit(&[Op::Checkpoint {
            key: key(),
            checkpoint: cp(57, 1),
        }])
        .unwrap();
        db.commit(&[
            Op::Room {
                key: key(),
                seed: 9,
                fresh: true,
            },
            Op::Checkpoint {
                key: key(),
                checkpoint: cp(1, 0),
            },
        ])
        .unwrap();
        let loaded = db.load().unwrap();
        let gens: Vec<u64> = loaded.rooms[0].checkpoints.iter().map(|c| c.generation).collect();
        assert_eq!((loaded.rooms[0].seed, gens), (9, vec![1]));
        let mut keys: Vec<&str> = loaded.kv.iter().map(|(_, k, _)| k.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"], "game storage outlives rooms");
    }

    #[test]
    fn a_damaged_file_or_a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("respawn.db");
        std::fs::write(&path, vec![7u8; 8192]).unwrap();
        match Sqlite::open(&path, Durability::Journal) {
            Err(StorageError::Damaged { .. }) => {}
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a damaged file opened"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 8192], "left as it was");

        let newer = dir.path().join("newer.db");
        drop(Sqlite::open(&newer, Durability::Journal).unwrap());
        Connection::open(&newer)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA + 1)
            .unwrap();
        match Sqlite::open(&newer, Durability::Journal) {
            Err(e @ StorageError::NewerSchema { .. }) => assert!(e.to_string().contains("newer host")),
            Err(other) => panic!("wrong error: {other}"),
            Ok(_) => panic!("a newer schema opened"),
        }
    }
}
