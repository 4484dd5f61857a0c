//! The room journal: the last checkpoint of the guest's state and every
//! input applied since, with the time each one saw. A fresh instance that
//! restores the checkpoint and replays the inputs is the room as it was:
//! the same mechanism later carries crash replay, durability and failover.

use super::PlayerId;
use crate::budget::Budget;
use crate::sandbox::determinism::EntropyPosition;
use crate::storage::kv::KvRead;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// One input the guest took.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// A player joined.
    Join {
        /// Its id.
        player: PlayerId,
        /// Its display name.
        name: String,
        /// The verified identity, when the player joined with a ticket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<crate::auth::User>,
    },
    /// A player left for good.
    Leave {
        /// Who.
        player: PlayerId,
    },
    /// A player's message.
    Message {
        /// From whom.
        player: PlayerId,
        /// The game's JSON text.
        #[serde(serialize_with = "as_text", deserialize_with = "from_text")]
        payload: Bytes,
        /// The request's `ref`, so a replay answers as the first run did.
        #[serde(
            default,
            skip_serializing_if = "Option::is_none",
            rename = "ref",
            deserialize_with = "raw_from_value"
        )]
        reference: Option<Box<RawValue>>,
    },
    /// The room's timer.
    Tick,
}

impl Input {
    /// The player whose input it is (`None` for a tick).
    pub fn player(&self) -> Option<PlayerId> {
        match self {
            Input::Join { player, .. } | Input::Leave { player } | Input::Message { player, .. } => Some(*player),
            Input::Tick => None,
        }
    }
}

fn as_text<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// A `ref` read back through `#[serde(flatten)]`, which cannot hand out
/// raw JSON: parsed, then written again (same value, maybe other spacing).
fn raw_from_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    value
        .map(|v| RawValue::from_string(v.to_string()).map_err(serde::de::Error::custom))
        .transpose()
}

fn from_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
    String::deserialize(d).map(Bytes::from)
}

/// An input, the room time it ran at, and what it read from the game's
/// storage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// The room time it ran at.
    pub now: u64,
    /// The input.
    #[serde(flatten)]
    pub input: Input,
    /// Its reads of the game's storage, handed back on replay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reads: Vec<KvRead>,
}

/// The guest's state at a point, and where its random streams stood.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    pub state: Vec<u8>,
    pub entropy: EntropyPosition,
    /// The room time it was taken at; a rebuild runs `init` and `restore`
    /// at this time, as the original did.
    pub now: u64,
}

/// A checkpoint and the inputs since.
pub(crate) struct Journal {
    checkpoint: Checkpoint,
    entries: Vec<Entry>,
    /// A digest of what each entry produced (`capsule::replay::digest`),
    /// so a capsule's regenerated outputs are checked against the live ones.
    digests: Vec<u64>,
    every: usize,
    /// Inputs the current span falls short of `every` by (see
    /// [`Journal::stagger`]); back to 0 at the next checkpoint.
    head_start: usize,
    /// Bytes the entries keep, charged to `budget`.
    bytes: usize,
    /// Every room's journal together (`rooms.journal_budget_mib`): over
    /// it, rooms checkpoint at their next input.
    budget: Arc<Budget>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl Entry {
    /// Memory the entry keeps, roughly.
    fn size(&self) -> usize {
        std::mem::size_of::<Entry>()
            + match &self.input {
                Input::Join { name, user, .. } => {
                    name.len()
                        + user.as_ref().map_or(0, |u| {
                            u.id.len() + u.claims.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
                        })
                }
                Input::Message { payload, .. } => payload.len(),
                Input::Leave { .. } | Input::Tick => 0,
            }
    }
}

impl Journal {
    /// A journal starting at `checkpoint`, checkpointing every `every`
    /// inputs.
    pub fn new(checkpoint: Checkpoint, every: usize, budget: Arc<Budget>) -> Self {
        Self {
            checkpoint,
            entries: Vec::new(),
            digests: Vec::new(),
            every: every.max(1),
            head_start: 0,
            bytes: 0,
            budget,
        }
    }

    /// The guest took an input, and produced output with this digest.
    pub fn record(&mut self, entry: Entry, digest: u64) {
        let size = entry.size() + std::mem::size_of::<u64>();
        self.bytes += size;
        self.budget.charge(size);
        self.entries.push(entry);
        self.digests.push(digest);
    }

    /// Whether enough inputs piled up for a new checkpoint.
    pub fn due(&self) -> bool {
        self.entries.len() + self.head_start >= self.every || (self.budget.over() && !self.entries.is_empty())
    }

    /// Ends the current span early, after between half of `every` and all
    /// of it, chosen by `seed` (the next checkpoint clears it). Rooms
    /// opened, recovered or swapped together and fed
    /// alike would otherwise all checkpoint at the same input (a wave of
    /// snapshots, fresh instances and database writes: the latency spikes
    /// of "Checkpoints in step" in BENCHMARKS.md); no span gets longer, so
    /// replay stays bounded by `every`.
    pub fn stagger(&mut self, seed: u64) {
        self.head_start = (seed % (self.every as u64 / 2 + 1)) as usize;
    }

    /// `period` shortened as the current span is (see [`Journal::stagger`]):
    /// a span ended early in inputs ends early in time too, so rooms that
    /// go quiet together do not checkpoint together either.
    pub fn staggered(&self, period: std::time::Duration) -> std::time::Duration {
        period.mul_f64((self.every - self.head_start) as f64 / self.every as f64)
    }

    /// Starts over from a new checkpoint.
    pub fn reset(&mut self, checkpoint: Checkpoint) {
        self.head_start = 0;
        self.checkpoint = checkpoint;
        self.entries.clear();
        self.digests.clear();
        self.budget.release(std::mem::take(&mut self.bytes));
    }

    /// The last checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Inputs since the checkpoint, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The digests of their outputs.
    pub fn digests(&self) -> &[u64] {
        &self.digests
    }

    /// What the inputs since the checkpoint hold, in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoints_bound_the_replay() {
        let cp = |s: &[u8]| Checkpoint {
            state: s.to_vec(),
            entropy: EntropyPosition::default(),
            now: 0,
        };
        let mut j = Journal::new(cp(b"0"), 2, Budget::new(1 << 20));
        j.record(
            Entry {
                now: 1,
                input: Input::Tick,
                reads: Vec::new(),
            },
            0,
        );
        assert!(!j.due());
        j.record(
            Entry {
                now: 2,
                input: Input::Leave { player: 3 },
                reads: Vec::new(),
            },
            0,
        );
        assert!(j.due());
        j.reset(cp(b"1"));
        assert!(j.entries().is_empty());
        assert_eq!(j.checkpoint().state, b"1");
        let entry = Entry {
            now: 5,
            input: Input::Message {
                player: 1,
                payload: Bytes::from_static(b"{\"a\":1}"),
                reference: RawValue::from_string("7".into()).ok(),
            },
            reads: vec![KvRead::Get {
                key: "k".into(),
                value: None,
            }],
        };
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            text,
            r#"{"now":5,"kind":"message","player":1,"payload":"{\"a\":1}","ref":7,"reads":[{"op":"get","key":"k"}]}"#
        );
        // What the database keeps reads back as the same entry.
        let back: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text);
    }

    #[test]
    fn journals_together_stay_within_their_budget() {
        let cp = || Checkpoint {
            state: Vec::new(),
            entropy: EntropyPosition::default(),
            now: 0,
        };
        let budget = Budget::new(64 << 10);
        let mut rooms: Vec<Journal> = (0..10).map(|_| Journal::new(cp(), 1000, budget.clone())).collect();
        // A flood of 16 KiB messages into ten rooms that checkpoint only
        // when due, as the room loop does.
        for round in 0..100 {
            for j in &mut rooms {
                j.record(
                    Entry {
                        now: round,
                        input: Input::Message {
                            player: 1,
                            payload: Bytes::from(vec![b'x'; 16 << 10]),
                            reference: None,
                        },
                        reads: Vec::new(),
                    },
                    0,
                );
                if j.due() {
                    j.reset(cp());
                }
            }
            assert!(
                budget.used() <= (64 << 10) + 10 * (17 << 10),
                "{} bytes kept",
                budget.used()
            );
        }
        drop(rooms);
        assert_eq!(budget.used(), 0, "every journal gave its bytes back");
    }

    #[test]
    fn a_staggered_first_span_ends_early_and_the_next_is_whole() {
        let entry = || Entry {
            now: 1,
            input: Input::Tick,
            reads: Vec::new(),
        };
        let cp = || Checkpoint {
            state: Vec::new(),
            entropy: EntropyPosition::default(),
            now: 0,
        };
        let span = |j: &mut Journal| {
            let mut n = 0;
            while !j.due() {
                j.record(entry(), 0);
                n += 1;
            }
            j.reset(cp());
            n
        };
        let mut firsts = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let mut j = Journal::new(cp(), 64, Budget::new(1 << 20));
            j.stagger(seed);
            let quiet = j.staggered(std::time::Duration::from_secs(10)).as_secs_f64();
            assert!((5.0..=10.0).contains(&quiet), "first quiet period {quiet} s");
            let first = span(&mut j);
            assert!(
                (quiet - 10.0 * first as f64 / 64.0).abs() < 1e-9,
                "shortened alike: {first} inputs, {quiet} s"
            );
            assert!((32..=64).contains(&first), "first span {first}");
            firsts.insert(first);
            let ten = std::time::Duration::from_secs(10);
            assert_eq!(j.staggered(ten), ten, "and so is its time");
            assert_eq!(span(&mut j), 64, "the next span is whole");
        }
        assert!(firsts.len() > 16, "seeds spread the first checkpoint: {firsts:?}");
        // The smallest spans: never empty, never longer.
        for every in [1, 2] {
            for seed in 0..4 {
                let mut j = Journal::new(cp(), every, Budget::new(1 << 20));
                j.stagger(seed);
                let first = span(&mut j);
                assert!((every.div_ceil(2)..=every).contains(&first), "every {every}: {first}");
            }
        }
    }
}
