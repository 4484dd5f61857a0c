//! What a room's subject holds: a base (its seed, its last two
//! checkpoints and its seats) written with a rollup, so it replaces
//! everything before it, then the writes since. Reading the subject back
//! gives the [`StoredRoom`] a survivor recovers the room from.

use crate::sandbox::determinism::EntropyPosition;
use crate::storage::{RoomRef, StoredCheckpoint, StoredMember, StoredRoom, StoredSeat};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One message on a room's subject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// The room's whole durable state; published as a rollup.
    Base {
        /// The room's random seed.
        seed: u64,
        /// Its last checkpoints, oldest first.
        checkpoints: Vec<Checkpoint>,
        /// Its seats: player and hash of the resume token (a list: a
        /// tagged record cannot read numbers as map keys).
        seats: Vec<(u64, String)>,
        /// The highest player id the room ever had.
        #[serde(default)]
        max_player: u64,
    },
    /// Writes since the base, in order.
    Ops {
        /// The writes.
        ops: Vec<RoomOp>,
    },
    /// A node took the room over; any write of the owner before it fails
    /// from here on (its expected sequence is behind).
    Claimed {
        /// The new owner.
        node: String,
    },
}

/// A write to a room, as [`Record::Ops`] carries it.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RoomOp {
    /// A journaled input.
    Append {
        /// Its index.
        index: u64,
        /// The journal entry (JSON), base64.
        entry: String,
        /// The player it joined.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        joined: Option<u64>,
    },
    /// A player's seat.
    Seat {
        /// The player.
        player: u64,
        /// Hash of the resume token.
        token_hash: String,
    },
    /// A player left for good.
    SeatGone {
        /// The player.
        player: u64,
    },
}

/// A [`StoredCheckpoint`] as JSON (the state in base64).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    generation: u64,
    at_index: u64,
    now: u64,
    state: String,
    /// `EntropyPosition`'s counters in decimal: serde reads no `u128`
    /// inside a tagged record.
    entropy: [String; 3],
    version: String,
    digest: String,
    members: Vec<StoredMember>,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl From<&StoredCheckpoint> for Checkpoint {
    fn from(c: &StoredCheckpoint) -> Self {
        Self {
            generation: c.generation,
            at_index: c.at_index,
            now: c.now,
            state: b64().encode(&c.state),
            entropy: [
                c.entropy.host.to_string(),
                c.entropy.wasi_secure.to_string(),
                c.entropy.wasi_insecure.to_string(),
            ],
            version: c.version.clone(),
            digest: c.digest.clone(),
            members: c.members.clone(),
        }
    }
}

impl Checkpoint {
    fn stored(&self) -> Option<StoredCheckpoint> {
        Some(StoredCheckpoint {
            generation: self.generation,
            at_index: self.at_index,
            now: self.now,
            state: b64().decode(&self.state).ok()?,
            entropy: EntropyPosition {
                host: self.entropy[0].parse().ok()?,
                wasi_secure: self.entropy[1].parse().ok()?,
                wasi_insecure: self.entropy[2].parse().ok()?,
            },
            version: self.version.clone(),
            digest: self.digest.clone(),
            members: self.members.clone(),
        })
    }

    /// Inputs journaled before it.
    pub fn at_index(&self) -> u64 {
        self.at_index
    }
}

/// Encodes a journal entry for [`RoomOp::Append`].
pub fn entry(bytes: &[u8]) -> String {
    b64().encode(bytes)
}

/// Why a room's subject could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A message is not a record this host writes.
    #[error("record {seq} of {room} is not readable: {why}")]
    Garbled {
        /// Which room.
        room: String,
        /// The message's stream sequence.
        seq: u64,
        /// What is wrong.
        why: String,
    },
}

/// A room's subject read back, in order.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The seed, once a base was seen.
    pub seed: Option<u64>,
    /// Checkpoints, oldest first.
    pub checkpoints: Vec<Checkpoint>,
    /// Seats by player.
    pub seats: BTreeMap<u64, String>,
    /// Journal entries since the newest checkpoint.
    pub journal: Vec<(u64, Vec<u8>)>,
    /// The highest player id the room ever had.
    pub max_player: u64,
}

impl Replayed {
    /// Applies the record at stream sequence `seq`.
    pub fn apply(&mut self, room: &RoomRef, seq: u64, payload: &[u8]) -> Result<(), ReadError> {
        let garbled = |why: String| ReadError::Garbled {
            room: format!("{}/{}", room.game, room.room),
            seq,
            why,
        };
        match serde_json::from_slice::<Record>(payload).map_err(|e| garbled(e.to_string()))? {
            Record::Base {
                seed,
                checkpoints,
                seats,
                max_player,
            } => {
                self.max_player = self.max_player.max(max_player);
                self.seed = Some(seed);
                self.journal
                    .retain(|(i, _)| checkpoints.last().is_none_or(|c| *i >= c.at_index));
                self.checkpoints = checkpoints;
                self.seats = seats.into_iter().collect();
            }
            Record::Ops { ops } => {
                for op in ops {
                    match op {
                        RoomOp::Append { index, entry, joined } => {
                            let bytes = b64().decode(entry).map_err(|e| garbled(e.to_string()))?;
                            self.journal.push((index, bytes));
                            self.max_player = self.max_player.max(joined.unwrap_or(0));
                        }
                        RoomOp::Seat { player, token_hash } => {
                            self.max_player = self.max_player.max(player);
                            self.seats.insert(player, token_hash);
                        }
                        RoomOp::SeatGone { player } => {
                            self.seats.remove(&player);
                        }
                    }
                }
            }
            Record::Claimed { .. } => {}
        }
        for c in &self.checkpoints {
            for m in &c.members {
                self.max_player = self.max_player.max(m.player);
            }
        }
        Ok(())
    }

    /// The room to recover and its seats; `Ok(None)` before any base. A
    /// checkpoint that does not decode is an error, not skipped: the
    /// journal after it would replay over the wrong state.
    pub fn into_stored(self, room: &RoomRef) -> Result<Option<(StoredRoom, Vec<StoredSeat>)>, ReadError> {
        let Some(seed) = self.seed else { return Ok(None) };
        let checkpoints = self
            .checkpoints
            .iter()
            .map(|c| {
                c.stored().ok_or_else(|| ReadError::Garbled {
                    room: format!("{}/{}", room.game, room.room),
                    seq: 0,
                    why: format!("checkpoint {} does not decode", c.generation),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let after = checkpoints.last().map_or(0, |c| c.at_index);
        let journal = self.journal.into_iter().filter(|(i, _)| *i >= after).collect();
        let seats = self
            .seats
            .into_iter()
            .map(|(player, token_hash)| StoredSeat {
                key: room.clone(),
                player,
                token_hash,
            })
            .collect();
        Ok(Some((
            StoredRoom {
                key: room.clone(),
                seed,
                checkpoints,
                journal,
            },
            seats,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(generation: u64, at_index: u64) -> StoredCheckpoint {
        StoredCheckpoint {
            generation,
            at_index,
            now: 7,
            state: b"{\"n\":1}".to_vec(),
            entropy: EntropyPosition {
                host: u128::MAX - generation as u128,
                wasi_secure: 1 << 100,
                wasi_insecure: 3,
            },
            version: "1.0.0".into(),
            digest: "d".into(),
            members: vec![StoredMember {
                player: 9,
                name: "ann".into(),
                user: None,
                seq: 3,
            }],
        }
    }

    #[test]
    fn a_base_then_ops_read_back_as_the_room_with_only_the_journal_after_its_checkpoint() {
        let room = RoomRef {
            game: "chat".into(),
            room: "a.b".into(),
        };
        let records = [
            Record::Ops {
                ops: vec![RoomOp::Append {
                    index: 0,
                    entry: entry(b"old"),
                    joined: None,
                }],
            },
            Record::Base {
                seed: 5,
                checkpoints: vec![(&cp(1, 0)).into(), (&cp(2, 2)).into()],
                seats: vec![(9, "h9".to_owned())],
                max_player: 10,
            },
            Record::Ops {
                ops: vec![
                    RoomOp::Append {
                        index: 2,
                        entry: entry(b"two"),
                        joined: Some(11),
                    },
                    RoomOp::Seat {
                        player: 11,
                        token_hash: "h11".into(),
                    },
                    RoomOp::SeatGone { player: 9 },
                ],
            },
            Record::Claimed { node: "b".into() },
        ];
        let mut r = Replayed::default();
        for (seq, rec) in records.iter().enumerate() {
            r.apply(&room, seq as u64, &serde_json::to_vec(rec).unwrap()).unwrap();
        }
        assert_eq!(r.max_player, 11, "the base's 10, then the seat's 11");
        let (stored, seats) = r.into_stored(&room).unwrap().unwrap();
        assert_eq!(stored.seed, 5);
        assert_eq!(stored.checkpoints, vec![cp(1, 0), cp(2, 2)]);
        assert_eq!(stored.journal, vec![(2, b"two".to_vec())]);
        assert_eq!(seats.len(), 1);
        assert_eq!((seats[0].player, seats[0].token_hash.as_str()), (11, "h11"));
    }

    #[test]
    fn garbage_on_a_subject_is_an_error_that_names_the_room_and_record() {
        let room = RoomRef {
            game: "chat".into(),
            room: "x".into(),
        };
        let err = Replayed::default().apply(&room, 42, b"{nope").unwrap_err().to_string();
        assert!(err.contains("chat/x") && err.contains("42"), "{err}");
        assert!(Replayed::default().into_stored(&room).unwrap().is_none());
    }
}
