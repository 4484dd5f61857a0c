//! What a room hands the store: each input with its storage writes (as
//! the durability level asks), its checkpoints, its players' seats, and
//! its end.

use super::*;
use crate::config::Durability;
use crate::storage::kv::KvWrites;
use crate::storage::{Op, RoomRef, StoredCheckpoint, StoredMember, StoredSeat};

/// How long a closing room waits for its held frames to become durable.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

impl RoomTask {
    fn room_ref(&self) -> RoomRef {
        RoomRef {
            game: self.key.game.clone(),
            room: self.key.room.clone(),
        }
    }

    fn level(&self) -> Durability {
        self.rooms.store.as_ref().map_or(Durability::Off, |s| s.level())
    }

    /// Whether the room may take a player's input: not while the store is
    /// failing, if the level promises anything about inputs.
    pub(super) fn storage_accepting(&self) -> bool {
        match &self.rooms.store {
            Some(store) if store.level().journals() => store.accepting(),
            _ => true,
        }
    }

    /// Keeps an input the guest took: its storage writes become visible
    /// to the game's other rooms and go to the database, with the input
    /// itself when the level journals. Under `strict`, what the input
    /// causes waits for that write.
    pub(super) fn persist(&mut self, entry: &Entry, writes: KvWrites) {
        let index = self.index;
        self.index += 1;
        let store = match (&self.rooms.store, self.recovery.is_some()) {
            (Some(store), false) => store.clone(),
            // Replaying at recovery: all of it is on disk already.
            (_, true) => return,
            (None, false) => {
                if let Some(space) = &self.space {
                    space.apply(&writes);
                }
                return;
            }
        };
        let op = if store.level().journals() {
            let joined = match &entry.input {
                Input::Join { player, .. } => Some(*player),
                _ => None,
            };
            let entry = match serde_json::to_vec(entry) {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(room = %self.label, "cannot encode a journal entry: {e}");
                    return;
                }
            };
            Some(Op::Append {
                key: self.room_ref(),
                index,
                entry,
                joined,
                kv: writes.clone(),
            })
        } else {
            (!writes.is_empty()).then(|| Op::Kv {
                game: self.key.game.clone(),
                writes: writes.clone(),
            })
        };
        if self.quiet_at.is_none() && store.level().checkpoints() {
            self.quiet_at = Some(Instant::now() + self.journal.staggered(super::QUIET_CHECKPOINT));
        }
        let Some(op) = op else { return };
        let submitted = match &self.space {
            Some(space) => space.apply_then(&writes, || store.submit(op)),
            None => store.submit(op),
        };
        match submitted {
            Ok(ticket) => self.outbox.gate(ticket),
            Err(_) => {
                // A hole in the journal: the next step checkpoints over it.
                tracing::warn!(room = %self.label, "storage queue full: an input is not saved");
                self.resync = true;
            }
        }
    }

    /// Writes the journal's checkpoint (with the room's players and how
    /// many frames each was sent) if the level keeps checkpoints, or if
    /// `always` (a graceful shutdown).
    pub(super) fn save_checkpoint(&mut self, always: bool) {
        let Some(store) = self.rooms.store.clone() else { return };
        if self.recovery.is_some() || !(always || store.level().checkpoints()) {
            return;
        }
        // A graceful stop writes the room's row again: under `off` the
        // recovery that came before removed it.
        if self.generation == 0 || always {
            let _ = store.submit(Op::Room {
                key: self.room_ref(),
                seed: self.seed,
                fresh: self.generation == 0,
            });
        }
        self.generation += 1;
        self.quiet_at = None;
        let cp = self.journal.checkpoint();
        let mut members: Vec<StoredMember> = self
            .players
            .iter()
            .map(|(id, m)| StoredMember {
                player: *id,
                name: m.name.clone(),
                user: m.user.clone(),
                seq: m.seq,
            })
            .collect();
        members.sort_by_key(|m| m.player);
        let checkpoint = Box::new(StoredCheckpoint {
            generation: self.generation,
            at_index: self.index,
            now: cp.now,
            state: cp.state.clone(),
            entropy: cp.entropy,
            version: self.module.version.to_string(),
            digest: self.module.digest().to_owned(),
            members,
        });
        if store
            .submit(Op::Checkpoint {
                key: self.room_ref(),
                checkpoint,
            })
            .is_err()
        {
            tracing::warn!(room = %self.label, "storage queue full: a checkpoint is not saved");
        }
    }

    /// A joined player's seat, so a resume finds it after a restart.
    pub(super) fn save_seat(&mut self, player: PlayerId, token_hash: Option<String>) {
        let (Some(store), Some(token_hash)) = (self.rooms.store.clone(), token_hash) else {
            return;
        };
        if !store.level().checkpoints() {
            return;
        }
        let seat = StoredSeat {
            key: self.room_ref(),
            player,
            token_hash,
        };
        if let Ok(ticket) = store.submit(Op::Seat(seat)) {
            self.outbox.gate(ticket);
        }
    }

    /// A player left for good: its seat is not resumable after a restart.
    pub(super) fn seat_gone(&mut self, player: PlayerId) {
        if let Some(store) = &self.rooms.store
            && store.level().checkpoints()
            && self.recovery.is_none()
        {
            let _ = store.submit(Op::SeatGone {
                key: self.room_ref(),
                player,
            });
        }
    }

    /// The room closed for good (empty, or crashed with a report): nothing
    /// of it should come back at the next start.
    pub(super) fn forget_durable(&mut self) {
        if let Some(store) = &self.rooms.store
            && (self.generation > 0 || self.recovery.is_some())
        {
            let _ = store.submit(Op::Close { key: self.room_ref() });
        }
    }

    /// Before the room's last words: what it holds goes out once durable
    /// (or after a while, if storage is failing).
    pub(super) async fn drain_outbox(&mut self) {
        if !self.outbox.holding() {
            return;
        }
        let _ = tokio::time::timeout(DRAIN_WAIT, async {
            while self.outbox.holding() {
                self.outbox.progress().await;
                // The room is closing: who cannot take it is gone anyway.
                for held in self.outbox.release() {
                    held.deliver();
                }
            }
        })
        .await;
    }

    /// Whether a level that keeps rooms over a crash is on.
    pub(super) fn durable_rooms(&self) -> bool {
        self.level().checkpoints()
    }
}
