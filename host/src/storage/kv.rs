//! Game storage as rooms see it: each game's keys and values held in
//! memory (loaded from the database at start, bounded by the game's
//! quota), the writes of one guest call kept apart until the call
//! returns, and the reads it made recorded for replay.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Most keys one `list` returns.
pub const MAX_LIST: u32 = 1000;

/// Why a storage call failed; the guest sees the matching `kv-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvFailure {
    /// Empty or longer than [`MAX_KEY_BYTES`].
    #[error("a key is 1 to {MAX_KEY_BYTES} bytes")]
    InvalidKey,
    /// Over `storage.kv_max_value_bytes`.
    #[error("values are at most {0} bytes")]
    TooLarge(u32),
    /// Over `storage.kv_quota_mib`.
    #[error("the game's storage is full ({0} bytes)")]
    QuotaExceeded(u64),
    /// Called from `init`, `snapshot` or `restore`.
    #[error("storage is only available while handling an input")]
    NotNow,
    /// The host's storage is failing.
    #[error("storage is unavailable")]
    Unavailable,
}

/// A read a guest call made, and what it saw: replayed calls see the
/// same.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum KvRead {
    /// `get(key)`.
    Get {
        /// The key.
        key: String,
        /// What it held.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<Vec<u8>>,
    },
    /// `list(prefix, start-after, limit)`.
    List {
        /// The prefix.
        prefix: String,
        /// The cursor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
        /// The keys returned.
        keys: Vec<String>,
    },
}

/// Writes of one call: a value, or `None` for a delete.
pub type KvWrites = BTreeMap<String, Option<Vec<u8>>>;

/// The limits every game's storage has.
#[derive(Debug, Clone, Copy)]
pub struct KvLimits {
    /// Longest value.
    pub max_value: u32,
    /// Bytes of keys and values per game.
    pub quota: u64,
}

/// Every game's storage.
pub struct KvSpaces {
    games: Mutex<HashMap<String, Arc<GameSpace>>>,
    limits: KvLimits,
}

impl KvSpaces {
    /// Spaces holding `rows` (game, key, value), as loaded at start.
    pub fn new(limits: KvLimits, rows: Vec<(String, String, Vec<u8>)>) -> Arc<Self> {
        let mut games: HashMap<String, Arc<GameSpace>> = HashMap::new();
        for (game, key, value) in rows {
            let space = games
                .entry(game.clone())
                .or_insert_with(|| Arc::new(GameSpace::new(game, limits)));
            space.apply(&BTreeMap::from([(key, Some(value))]));
        }
        Arc::new(Self {
            games: Mutex::new(games),
            limits,
        })
    }

    /// The storage of `game`, created empty on first use.
    pub fn game(&self, game: &str) -> Arc<GameSpace> {
        crate::lock(&self.games)
            .entry(game.to_owned())
            .or_insert_with(|| Arc::new(GameSpace::new(game.to_owned(), self.limits)))
            .clone()
    }
}

/// One game's keys and values, shared by its rooms.
pub struct GameSpace {
    game: String,
    limits: KvLimits,
    inner: Mutex<Contents>,
}

#[derive(Default)]
struct Contents {
    map: BTreeMap<String, Vec<u8>>,
    bytes: u64,
}

fn size(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl GameSpace {
    /// An empty space for a replay: its reads come from the record and
    /// its writes are dropped, but values are checked against `limits`
    /// as the room's were.
    pub fn scratch(game: &str, limits: KvLimits) -> Arc<Self> {
        Arc::new(Self::new(game.to_owned(), limits))
    }

    fn new(game: String, limits: KvLimits) -> Self {
        Self {
            game,
            limits,
            inner: Mutex::new(Contents::default()),
        }
    }

    /// The game's name.
    pub fn game(&self) -> &str {
        &self.game
    }

    /// Bytes of keys and values kept.
    pub fn used(&self) -> u64 {
        crate::lock(&self.inner).bytes
    }

    /// Makes one call's writes visible to every room, all together.
    pub fn apply(&self, writes: &KvWrites) {
        self.apply_then(writes, || ());
    }

    /// [`apply`](Self::apply), then `then` before any other room's writes:
    /// the database gets the writes in the order rooms see them.
    pub fn apply_then<R>(&self, writes: &KvWrites, then: impl FnOnce() -> R) -> R {
        let mut c = crate::lock(&self.inner);
        for (key, value) in writes {
            if let Some(old) = c.map.remove(key) {
                c.bytes -= size(key, &old);
            }
            if let Some(value) = value {
                c.bytes += size(key, value);
                c.map.insert(key.clone(), value.clone());
            }
        }
        then()
    }

    fn get(&self, key: &str) -> Option<Vec<u8>> {
        crate::lock(&self.inner).map.get(key).cloned()
    }

    fn keys(&self, prefix: &str, after: Option<&str>, limit: usize, pending: &KvWrites) -> Vec<String> {
        let c = crate::lock(&self.inner);
        let start = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        // Committed keys and this call's own writes, merged in order.
        let committed = c
            .map
            .range::<String, _>((start.clone(), std::ops::Bound::Unbounded))
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| !matches!(pending.get(*k), Some(None)));
        let own = pending
            .range::<String, _>((start, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, v)| v.is_some() && !c.map.contains_key(*k))
            .map(|(k, _)| k);
        let mut keys: Vec<String> = committed.chain(own).cloned().collect();
        keys.sort_unstable();
        keys.truncate(limit);
        keys
    }
}

/// How storage calls are answered during the current guest call.
enum Mode {
    /// `init`, `snapshot`, `restore`: no storage.
    Closed,
    /// An input: reads the game's storage, writes kept for the room.
    Live,
    /// A replayed input: reads answered from the record, writes dropped.
    Replay(VecDeque<KvRead>),
}

/// A room's access to its game's storage, one guest call at a time.
pub struct KvAccess {
    space: Option<Arc<GameSpace>>,
    mode: Mode,
    reads: Vec<KvRead>,
    writes: KvWrites,
    /// Bytes the call's writes add (or, negative, free).
    delta: i64,
    /// Replayed reads that did not match what the original call asked.
    pub(crate) diverged: bool,
}

/// What one input's call did to storage.
#[derive(Debug, Default)]
pub struct KvEffects {
    /// The reads, for the journal.
    pub reads: Vec<KvRead>,
    /// The writes, for the database and the other rooms.
    pub writes: KvWrites,
}

impl KvAccess {
    /// Access to `space`, or none at all (storage calls fail with
    /// `unavailable`).
    pub fn new(space: Option<Arc<GameSpace>>) -> Self {
        Self {
            space,
            mode: Mode::Closed,
            reads: Vec::new(),
            writes: BTreeMap::new(),
            delta: 0,
            diverged: false,
        }
    }

    /// The next call is an input (`replay`: the reads it made the first
    /// time), or not (`None` and `input == false`).
    pub fn begin(&mut self, input: bool, replay: Option<Vec<KvRead>>) {
        self.reads.clear();
        self.writes.clear();
        self.delta = 0;
        self.mode = match (input, replay) {
            (false, _) => Mode::Closed,
            (true, None) => Mode::Live,
            (true, Some(reads)) => Mode::Replay(reads.into()),
        };
    }

    /// What the call did; its writes are not applied anywhere yet.
    pub fn take(&mut self) -> KvEffects {
        let replayed = matches!(self.mode, Mode::Replay(_));
        self.mode = Mode::Closed;
        self.delta = 0;
        let writes = std::mem::take(&mut self.writes);
        KvEffects {
            reads: std::mem::take(&mut self.reads),
            // A replayed call's writes were made the first time.
            writes: if replayed { KvWrites::new() } else { writes },
        }
    }

    /// Drops what a failed call wrote; returns what it read (for the
    /// failing input's crash capsule).
    pub fn discard(&mut self) -> Vec<KvRead> {
        self.take().reads
    }

    fn open(&self) -> Result<Arc<GameSpace>, KvFailure> {
        if matches!(self.mode, Mode::Closed) {
            return Err(KvFailure::NotNow);
        }
        self.space.clone().ok_or(KvFailure::Unavailable)
    }

    fn check_key(key: &str) -> Result<(), KvFailure> {
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(KvFailure::InvalidKey);
        }
        Ok(())
    }

    /// `get(key)`.
    pub fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, KvFailure> {
        let space = self.open()?;
        Self::check_key(&key)?;
        if let Some(own) = self.writes.get(&key) {
            return Ok(own.clone());
        }
        let value = if let Mode::Replay(reads) = &mut self.mode {
            match reads.pop_front() {
                Some(KvRead::Get { key: k, value }) if k == key => value,
                _ => {
                    self.diverged = true;
                    space.get(&key)
                }
            }
        } else {
            space.get(&key)
        };
        if matches!(self.mode, Mode::Live) {
            self.reads.push(KvRead::Get {
                key,
                value: value.clone(),
            });
        }
        Ok(value)
    }

    /// `set(key, value)`.
    pub fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), KvFailure> {
        let space = self.open()?;
        Self::check_key(&key)?;
        if value.len() > space.limits.max_value as usize {
            return Err(KvFailure::TooLarge(space.limits.max_value));
        }
        let old = self.old_size(&space, &key);
        let new = size(&key, &value) as i64;
        let used = space.used() as i64 + self.delta - old + new;
        // A replayed call is answered as the first run was (its writes are
        // dropped): today's usage must not refuse what was accepted then.
        let replaying = matches!(self.mode, Mode::Replay(_));
        if new > old && used > space.limits.quota as i64 && !replaying {
            return Err(KvFailure::QuotaExceeded(space.limits.quota));
        }
        self.delta += new - old;
        self.writes.insert(key, Some(value));
        Ok(())
    }

    /// `delete(key)`.
    pub fn delete(&mut self, key: String) -> Result<(), KvFailure> {
        let space = self.open()?;
        Self::check_key(&key)?;
        self.delta -= self.old_size(&space, &key);
        self.writes.insert(key, None);
        Ok(())
    }

    /// `list(prefix, start-after, limit)`.
    pub fn list(&mut self, prefix: String, after: Option<String>, limit: u32) -> Result<Vec<String>, KvFailure> {
        let space = self.open()?;
        if prefix.len() > MAX_KEY_BYTES {
            return Err(KvFailure::InvalidKey);
        }
        let limit = limit.min(MAX_LIST) as usize;
        let keys = match &mut self.mode {
            Mode::Replay(reads) => match reads.pop_front() {
                Some(KvRead::List {
                    prefix: p,
                    after: a,
                    keys,
                }) if p == prefix && a == after => keys,
                _ => {
                    self.diverged = true;
                    space.keys(&prefix, after.as_deref(), limit, &self.writes)
                }
            },
            _ => space.keys(&prefix, after.as_deref(), limit, &self.writes),
        };
        if matches!(self.mode, Mode::Live) {
            self.reads.push(KvRead::List {
                prefix,
                after,
                keys: keys.clone(),
            });
        }
        Ok(keys)
    }

    /// Bytes `key` takes now, counting this call's earlier writes.
    fn old_size(&self, space: &GameSpace, key: &str) -> i64 {
        match self.writes.get(key) {
            Some(Some(v)) => size(key, v) as i64,
            Some(None) => 0,
            None => space.get(key).map_or(0, |v| size(key, &v) as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spaces(quota: u64) -> Arc<KvSpaces> {
        KvSpaces::new(
            KvLimits { max_value: 16, quota },
            vec![("g".into(), "a/1".into(), b"one".to_vec())],
        )
    }

    #[test]
    fn a_call_sees_its_own_writes_and_others_see_them_once_applied() {
        let spaces = spaces(1000);
        let mut a = KvAccess::new(Some(spaces.game("g")));
        let mut b = KvAccess::new(Some(spaces.game("g")));
        a.begin(true, None);
        b.begin(true, None);
        assert_eq!(a.get("a/1".into()), Ok(Some(b"one".to_vec())));
        assert_eq!(a.get("missing".into()), Ok(None));
        a.set("a/2".into(), b"two".to_vec()).unwrap();
        a.delete("a/1".into()).unwrap();
        assert_eq!(a.get("a/2".into()), Ok(Some(b"two".to_vec())));
        assert_eq!(a.list("a/".into(), None, 10), Ok(vec!["a/2".to_string()]));
        // Not applied yet: the other room sees the old contents.
        assert_eq!(b.list("a/".into(), None, 10), Ok(vec!["a/1".to_string()]));
        let done = a.take();
        assert_eq!(done.reads.len(), 3);
        spaces.game("g").apply(&done.writes);
        assert_eq!(b.get("a/1".into()), Ok(None));
        assert_eq!(b.list("a/".into(), None, 10), Ok(vec!["a/2".to_string()]));
        assert_eq!(spaces.game("g").used(), 6);
    }

    #[test]
    fn limits_refuse_bad_keys_large_values_and_a_full_quota() {
        let spaces = spaces(20);
        let mut a = KvAccess::new(Some(spaces.game("g")));
        a.begin(false, None);
        assert_eq!(a.get("a/1".into()), Err(KvFailure::NotNow));
        a.begin(true, None);
        assert_eq!(a.get(String::new()), Err(KvFailure::InvalidKey));
        assert_eq!(a.get("k".repeat(257)), Err(KvFailure::InvalidKey));
        assert_eq!(a.set("k".into(), vec![0; 17]), Err(KvFailure::TooLarge(16)));
        // 6 used; 14 more fit.
        a.set("b".into(), vec![0; 13]).unwrap();
        assert_eq!(a.set("c".into(), vec![0; 1]), Err(KvFailure::QuotaExceeded(20)));
        // Overwriting with less, or deleting, is always allowed.
        a.set("b".into(), vec![0; 2]).unwrap();
        a.set("c".into(), vec![0; 1]).unwrap();
        a.delete("a/1".into()).unwrap();
        let mut none = KvAccess::new(None);
        none.begin(true, None);
        assert_eq!(none.get("x".into()), Err(KvFailure::Unavailable));
    }

    #[test]
    fn a_replay_sees_what_the_first_run_saw_and_writes_nothing() {
        let spaces = spaces(1000);
        let mut a = KvAccess::new(Some(spaces.game("g")));
        a.begin(true, None);
        a.get("a/1".into()).unwrap();
        a.list("a/".into(), None, 5).unwrap();
        let first = a.take();
        // Since then another room changed the value.
        spaces
            .game("g")
            .apply(&BTreeMap::from([("a/1".to_string(), Some(b"changed".to_vec()))]));
        a.begin(true, Some(first.reads));
        assert_eq!(a.get("a/1".into()), Ok(Some(b"one".to_vec())));
        assert_eq!(a.list("a/".into(), None, 5), Ok(vec!["a/1".to_string()]));
        assert!(!a.diverged);
        // Asking something else than the first time is a divergence.
        a.begin(true, Some(Vec::new()));
        assert_eq!(a.get("a/1".into()), Ok(Some(b"changed".to_vec())));
        assert!(a.diverged);
    }

    #[test]
    fn list_pages_in_byte_order() {
        let spaces = spaces(10_000);
        let space = spaces.game("p");
        space.apply(&(0..30).map(|i| (format!("k/{i:02}"), Some(vec![1]))).collect());
        let mut a = KvAccess::new(Some(space));
        a.begin(true, None);
        let first = a.list("k/".into(), None, 10).unwrap();
        assert_eq!(first.first().map(String::as_str), Some("k/00"));
        let next = a.list("k/".into(), first.last().cloned(), 10).unwrap();
        assert_eq!(next.first().map(String::as_str), Some("k/10"));
        assert_eq!(a.list("k/".into(), None, 5000).unwrap().len(), 30);
        assert!(a.list("x".into(), None, 10).unwrap().is_empty());
    }
}
