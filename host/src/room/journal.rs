//! The room journal: the last checkpoint of the guest's state and every
//! input applied since, with the time each one saw. A fresh instance that
//! restores the checkpoint and replays the inputs is the room as it was:
//! the same mechanism later carries crash replay, durability and failover.

use super::PlayerId;
use crate::sandbox::determinism::EntropyPosition;
use bytes::Bytes;
use serde::Serialize;

/// One input the guest took.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum Input {
    Join {
        player: PlayerId,
        name: String,
    },
    Leave {
        player: PlayerId,
    },
    Message {
        player: PlayerId,
        #[serde(serialize_with = "as_text")]
        payload: Bytes,
    },
    Tick,
}

impl Input {
    /// The player whose input it is (`None` for a tick).
    pub(crate) fn player(&self) -> Option<PlayerId> {
        match self {
            Input::Join { player, .. } | Input::Leave { player } | Input::Message { player, .. } => Some(*player),
            Input::Tick => None,
        }
    }
}

fn as_text<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

/// An input and the room time it ran at.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Entry {
    pub now: u64,
    #[serde(flatten)]
    pub input: Input,
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
    every: usize,
}

impl Journal {
    /// A journal starting at `checkpoint`, checkpointing every `every`
    /// inputs.
    pub fn new(checkpoint: Checkpoint, every: usize) -> Self {
        Self {
            checkpoint,
            entries: Vec::new(),
            every: every.max(1),
        }
    }

    /// The guest took `input` at `now`.
    pub fn record(&mut self, now: u64, input: Input) {
        self.entries.push(Entry { now, input });
    }

    /// Whether enough inputs piled up for a new checkpoint.
    pub fn due(&self) -> bool {
        self.entries.len() >= self.every
    }

    /// Starts over from a new checkpoint.
    pub fn reset(&mut self, checkpoint: Checkpoint) {
        self.checkpoint = checkpoint;
        self.entries.clear();
    }

    /// The last checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// Inputs since the checkpoint, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
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
        let mut j = Journal::new(cp(b"0"), 2);
        j.record(1, Input::Tick);
        assert!(!j.due());
        j.record(2, Input::Leave { player: 3 });
        assert!(j.due());
        j.reset(cp(b"1"));
        assert!(j.entries().is_empty());
        assert_eq!(j.checkpoint().state, b"1");
        let text = serde_json::to_string(&Entry {
            now: 5,
            input: Input::Message {
                player: 1,
                payload: Bytes::from_static(b"{\"a\":1}"),
            },
        })
        .unwrap();
        assert_eq!(text, r#"{"now":5,"kind":"message","player":1,"payload":"{\"a\":1}"}"#);
    }
}
