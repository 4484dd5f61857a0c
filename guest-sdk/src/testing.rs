//! Test a game natively, without wasm or a host.
//!
//! [`TestRoom`] drives a [`Game`] through the same dispatch code the wasm
//! exports use (message parsing, snapshot and restore included) and records
//! every effect, with a clock and a seeded random generator you control.
//! Game storage ([`crate::Ctx::kv`]) is an in-memory [`TestKv`] with the
//! host's limits, which several rooms of one test may share.
//!
//! ```
//! # use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject, testing::TestRoom};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)]
//! # struct Parrot;
//! # impl Game for Parrot {
//! #     type Message = serde_json::Value;
//! #     fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> { Ok(()) }
//! #     fn on_message(&mut self, ctx: &mut Ctx, _: PlayerId, m: serde_json::Value) -> Result<(), Reject> {
//! #         ctx.broadcast(&m);
//! #         Ok(())
//! #     }
//! # }
//! let mut room = TestRoom::<Parrot>::new();
//! room.join(1, "ann").unwrap();
//! room.join(2, "bob").unwrap();
//! room.message(1, &serde_json::json!({"say": "hi"})).unwrap();
//! assert_eq!(room.received(2), vec![serde_json::json!({"say": "hi"})]);
//! ```

use crate::ctx::Backend;
use crate::kv::{KvError, MAX_KEY_BYTES, MAX_LIST};
use crate::runtime;
use crate::{Game, Identity, Level, Player, PlayerId, Reject};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

/// One thing the game asked the host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// `Ctx::send`.
    Send {
        /// Recipient.
        to: PlayerId,
        /// The message.
        msg: Value,
    },
    /// `Ctx::broadcast` and `Ctx::broadcast_except`.
    Broadcast {
        /// The message.
        msg: Value,
        /// The player left out, if any.
        except: Option<PlayerId>,
    },
    /// `Ctx::kick`.
    Kick {
        /// Who.
        player: PlayerId,
        /// Why, as the player is told.
        reason: String,
    },
    /// `Ctx::log`.
    Log {
        /// Severity.
        level: Level,
        /// The line.
        message: String,
    },
    /// `Ctx::set_tick_interval`.
    TickInterval(u32),
}

/// The largest value [`TestKv`] accepts, in bytes: the host's default
/// `storage.kv_max_value_bytes`, so a game that fits in tests fits there.
pub const MAX_VALUE_BYTES: u32 = 64 << 10;

/// Writes of one call: a value, or `None` for a delete.
type Writes = BTreeMap<String, Option<Vec<u8>>>;

#[derive(Default)]
struct Store {
    map: BTreeMap<String, Vec<u8>>,
    /// Bytes of keys and values, what the quota counts.
    bytes: u64,
    quota: Option<u64>,
}

fn size(key: &str, value: &[u8]) -> i64 {
    (key.len() + value.len()) as i64
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(KvError::InvalidKey);
    }
    Ok(())
}

impl Store {
    fn size_of(&self, key: &str) -> i64 {
        self.map.get(key).map_or(0, |v| size(key, v))
    }

    /// Checks a write of `value` over a key now taking `old` bytes, with
    /// `delta` bytes pending from the current call; returns its size.
    fn admit(&self, key: &str, value: &[u8], old: i64, delta: i64) -> Result<i64, KvError> {
        check_key(key)?;
        if value.len() > MAX_VALUE_BYTES as usize {
            return Err(KvError::TooLarge(MAX_VALUE_BYTES));
        }
        let new = size(key, value);
        if let Some(quota) = self.quota
            && new > old
            && self.bytes as i64 + delta - old + new > quota as i64
        {
            return Err(KvError::QuotaExceeded(quota));
        }
        Ok(new)
    }

    fn apply(&mut self, key: String, value: Option<Vec<u8>>) {
        if let Some(old) = self.map.remove(&key) {
            self.bytes -= size(&key, &old) as u64;
        }
        if let Some(value) = value {
            self.bytes += size(&key, &value) as u64;
            self.map.insert(key, value);
        }
    }

    /// Committed keys and the current call's own writes, merged in order.
    fn keys(&self, prefix: &str, after: Option<&str>, limit: u32, pending: &Writes) -> Vec<String> {
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_owned()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let range = (start, Bound::Unbounded);
        let committed = self
            .map
            .range::<String, _>(range.clone())
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .filter(|k| !matches!(pending.get(*k), Some(None)));
        let own = pending
            .range::<String, _>(range)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, v)| v.is_some() && !self.map.contains_key(*k))
            .map(|(k, _)| k);
        let mut keys: Vec<String> = committed.chain(own).cloned().collect();
        keys.sort_unstable();
        keys.truncate(limit.min(MAX_LIST) as usize);
        keys
    }
}

/// A game's storage held in memory, with the host's limits: keys of 1 to
/// [`MAX_KEY_BYTES`] bytes, values of at most [`MAX_VALUE_BYTES`], an
/// optional quota on the bytes of keys and values, `list` capped at
/// [`MAX_LIST`] keys.
///
/// A clone is another handle to the same storage: give it to several
/// rooms ([`TestRoom::with_kv`]) to test what one room's writes do to
/// another, or keep one to inspect and seed the storage directly.
#[derive(Clone, Default)]
pub struct TestKv {
    store: Arc<Mutex<Store>>,
}

impl std::fmt::Debug for TestKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKv").field("keys", &self.keys()).finish()
    }
}

impl TestKv {
    /// Empty storage without a quota.
    pub fn new() -> Self {
        Self::default()
    }

    // A game that panicked mid-test leaves the store consistent: writes are
    // applied only between calls.
    fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Limits the bytes of keys and values to `quota` (`None`: no limit),
    /// as the host's `storage.kv_quota_mib` does; writes that would go over
    /// fail with [`KvError::QuotaExceeded`].
    pub fn set_quota(&self, quota: Option<u64>) {
        self.lock().quota = quota;
    }

    /// The bytes under `key`, as every room sees them between calls.
    pub fn get_raw(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().map.get(key).cloned()
    }

    /// The value under `key` decoded from JSON.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, KvError> {
        self.get_raw(key)
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| KvError::Decode(e.to_string())))
            .transpose()
    }

    /// Seeds `key` with bytes, under the same limits a game meets.
    pub fn set_raw(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        let mut store = self.lock();
        let old = store.size_of(key);
        store.admit(key, value, old, 0)?;
        store.apply(key.to_owned(), Some(value.to_vec()));
        Ok(())
    }

    /// Seeds `key` with a value as JSON, under the same limits a game meets.
    pub fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Encode(e.to_string()))?;
        self.set_raw(key, &bytes)
    }

    /// Every key, in byte order.
    pub fn keys(&self) -> Vec<String> {
        self.lock().map.keys().cloned().collect()
    }

    /// Bytes of keys and values stored: what the quota counts.
    pub fn used_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[derive(Default)]
struct Recorder {
    effects: Vec<Effect>,
    now_ms: u64,
    rng: u64,
    kv: TestKv,
    /// Whether the current call is an input, the only calls storage serves.
    kv_open: bool,
    /// The current call's writes, applied when it returns.
    kv_writes: Writes,
    /// Bytes the current call's writes add (negative: free).
    kv_delta: i64,
}

impl Recorder {
    fn decode(payload: &[u8]) -> Value {
        serde_json::from_slice(payload).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
    }

    /// Opens storage for an input, forgetting what an earlier call that
    /// panicked may have left.
    fn begin_input(&mut self) {
        self.kv_open = true;
        self.kv_writes.clear();
        self.kv_delta = 0;
    }

    /// Applies the input's writes to the shared storage, all together.
    fn end_input(&mut self) {
        self.kv_open = false;
        self.kv_delta = 0;
        let writes = std::mem::take(&mut self.kv_writes);
        let mut store = self.kv.lock();
        for (key, value) in writes {
            store.apply(key, value);
        }
    }

    fn kv_check(&self, key: &str) -> Result<(), KvError> {
        if !self.kv_open {
            return Err(KvError::NotNow);
        }
        check_key(key)
    }

    /// Bytes `key` takes as the current call sees it.
    fn kv_size(&self, store: &Store, key: &str) -> i64 {
        match self.kv_writes.get(key) {
            Some(own) => own.as_deref().map_or(0, |v| size(key, v)),
            None => store.size_of(key),
        }
    }
}

impl Backend for Recorder {
    fn send(&mut self, to: PlayerId, payload: &[u8]) {
        self.effects.push(Effect::Send {
            to,
            msg: Self::decode(payload),
        });
    }
    fn broadcast(&mut self, payload: &[u8], except: Option<PlayerId>) {
        self.effects.push(Effect::Broadcast {
            msg: Self::decode(payload),
            except,
        });
    }
    fn kick(&mut self, player: PlayerId, reason: &str) {
        self.effects.push(Effect::Kick {
            player,
            reason: reason.to_owned(),
        });
    }
    fn log(&mut self, level: Level, message: &str) {
        self.effects.push(Effect::Log {
            level,
            message: message.to_owned(),
        });
    }
    fn now_ms(&mut self) -> u64 {
        self.now_ms
    }
    fn random_u64(&mut self) -> u64 {
        // splitmix64: deterministic, good enough for tests.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn set_tick_interval(&mut self, ms: u32) {
        self.effects.push(Effect::TickInterval(ms));
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.kv_check(key)?;
        if let Some(own) = self.kv_writes.get(key) {
            return Ok(own.clone());
        }
        Ok(self.kv.get_raw(key))
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.kv_check(key)?;
        let store = self.kv.lock();
        let old = self.kv_size(&store, key);
        let new = store.admit(key, value, old, self.kv_delta)?;
        drop(store);
        self.kv_delta += new - old;
        self.kv_writes.insert(key.to_owned(), Some(value.to_vec()));
        Ok(())
    }
    fn kv_delete(&mut self, key: &str) -> Result<(), KvError> {
        self.kv_check(key)?;
        let old = self.kv_size(&self.kv.lock(), key);
        self.kv_delta -= old;
        self.kv_writes.insert(key.to_owned(), None);
        Ok(())
    }
    fn kv_list(&mut self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Vec<String>, KvError> {
        if !self.kv_open {
            return Err(KvError::NotNow);
        }
        if prefix.len() > MAX_KEY_BYTES {
            return Err(KvError::InvalidKey);
        }
        Ok(self.kv.lock().keys(prefix, start_after, limit, &self.kv_writes))
    }
}

/// A room running one [`Game`] natively, for unit tests.
///
/// Effects are delivered the way the host delivers them: after each call,
/// to the members of that moment. A player is a member from the end of an
/// accepted `on_join` until just before `on_leave`; a kicked player leaves
/// (and `on_leave` runs) right after the call that kicked them.
///
/// Storage follows the host too: it serves `on_join`, `on_leave`,
/// `on_message` and `on_tick`, fails with [`KvError::NotNow`] in `init`,
/// and a call's writes reach the shared [`TestKv`] when the call returns.
pub struct TestRoom<G: Game> {
    game: G,
    rec: Recorder,
    members: Vec<PlayerId>,
    log: Vec<Effect>,
    inboxes: std::collections::HashMap<PlayerId, Vec<Value>>,
    tick_interval: Option<u32>,
}

impl<G: Game> Default for TestRoom<G> {
    fn default() -> Self {
        Self::new()
    }
}

impl<G: Game> TestRoom<G> {
    /// A room named `test` with an empty config, its clock at 0 ms.
    ///
    /// Panics if the game's `init` fails: use [`TestRoom::with_config`] to
    /// test init failures.
    pub fn new() -> Self {
        match Self::with_config("test", &Value::Object(Default::default())) {
            Ok(room) => room,
            Err(e) => panic!("init failed: {e}"),
        }
    }

    /// A room with a name and a game config, as the host would create it.
    pub fn with_config(room: &str, config: &Value) -> Result<Self, String> {
        let mut this = Self {
            game: G::default(),
            rec: Recorder::default(),
            members: Vec::new(),
            log: Vec::new(),
            inboxes: Default::default(),
            tick_interval: None,
        };
        let config = serde_json::to_vec(config).map_err(|e| e.to_string())?;
        runtime::dispatch_init(&mut this.game, &mut this.rec, room, &config)?;
        this.deliver();
        Ok(this)
    }

    /// Replaces this room's storage with `kv`, typically another room's
    /// (`a.kv().clone()`), so the rooms share it as rooms of one game do.
    pub fn with_kv(mut self, kv: TestKv) -> Self {
        self.rec.kv = kv;
        self
    }

    /// The room's storage, to inspect or seed, or to share with another
    /// room.
    pub fn kv(&self) -> &TestKv {
        &self.rec.kv
    }

    /// Limits the storage's bytes of keys and values (`None`: no limit);
    /// the quota belongs to the storage, so rooms sharing it share it.
    pub fn set_kv_quota(&mut self, quota: Option<u64>) {
        self.rec.kv.set_quota(quota);
    }

    /// A player without an identity joins (as on a host that does not
    /// require tickets); if the game accepts, the player is a member.
    pub fn join(&mut self, id: PlayerId, name: &str) -> Result<(), Reject> {
        self.join_player(Player {
            id,
            name: name.to_owned(),
            user: None,
        })
    }

    /// A player joins with a verified identity, as with a join ticket.
    pub fn join_as(&mut self, id: PlayerId, name: &str, user: Identity) -> Result<(), Reject> {
        self.join_player(Player {
            id,
            name: name.to_owned(),
            user: Some(user),
        })
    }

    fn join_player(&mut self, player: Player) -> Result<(), Reject> {
        let id = player.id;
        self.rec.begin_input();
        let r = runtime::dispatch_join(&mut self.game, &mut self.rec, player);
        self.rec.end_input();
        if r.is_ok() && !self.members.contains(&id) {
            self.members.push(id);
        }
        self.deliver();
        r
    }

    /// A player leaves.
    pub fn leave(&mut self, id: PlayerId) {
        if !self.members.contains(&id) {
            return;
        }
        self.members.retain(|m| *m != id);
        self.rec.begin_input();
        runtime::dispatch_leave(&mut self.game, &mut self.rec, id);
        self.rec.end_input();
        self.deliver();
    }

    /// A player sends a message, serialized to JSON as a client would.
    pub fn message<M: Serialize + ?Sized>(&mut self, from: PlayerId, msg: &M) -> Result<(), Reject> {
        let payload = serde_json::to_vec(msg).map_err(|e| Reject::new("test", e.to_string()))?;
        self.message_raw(from, &payload)
    }

    /// A player sends raw bytes, to test what your game does with garbage.
    pub fn message_raw(&mut self, from: PlayerId, payload: &[u8]) -> Result<(), Reject> {
        self.rec.begin_input();
        let r = runtime::dispatch_message(&mut self.game, &mut self.rec, from, payload);
        self.rec.end_input();
        self.deliver();
        r
    }

    /// Advances the clock by `ms` and calls `on_tick`.
    pub fn tick(&mut self, ms: u64) {
        self.rec.now_ms += ms;
        self.rec.begin_input();
        runtime::dispatch_tick(&mut self.game, &mut self.rec);
        self.rec.end_input();
        self.deliver();
    }

    /// Sets the room clock (milliseconds since the Unix epoch).
    pub fn set_now_ms(&mut self, now_ms: u64) {
        self.rec.now_ms = now_ms;
    }

    /// The game state, to assert on directly.
    pub fn game(&self) -> &G {
        &self.game
    }

    /// The players in the room.
    pub fn members(&self) -> &[PlayerId] {
        &self.members
    }

    /// The tick interval the game asked for last, if any.
    pub fn tick_interval(&self) -> Option<u32> {
        self.tick_interval
    }

    /// Takes every effect recorded so far, oldest first.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.log)
    }

    /// Takes what `player` has received so far, oldest first.
    pub fn received(&mut self, player: PlayerId) -> Vec<Value> {
        self.inboxes.remove(&player).unwrap_or_default()
    }

    /// Forgets recorded effects and received messages.
    pub fn clear(&mut self) {
        self.log.clear();
        self.inboxes.clear();
    }

    /// Snapshots the state and restores it into a fresh game, as a hot swap
    /// does; returns the snapshot bytes, or why the state cannot be
    /// written (in a real room, the snapshot call traps).
    pub fn swap(&mut self) -> Result<Vec<u8>, String> {
        let bytes = runtime::encode_snapshot(&self.game)?;
        let mut fresh = G::default();
        runtime::decode_snapshot(&mut fresh, &bytes)?;
        self.game = fresh;
        Ok(bytes)
    }

    /// Restores arbitrary bytes, as the host would after a swap.
    pub fn restore(&mut self, state: &[u8]) -> Result<(), String> {
        runtime::decode_snapshot(&mut self.game, state)
    }

    /// Routes the last call's effects to the members of this moment, then
    /// lets kicked players leave.
    fn deliver(&mut self) {
        let mut kicked = Vec::new();
        for effect in std::mem::take(&mut self.rec.effects) {
            match &effect {
                Effect::Send { to, msg } if self.members.contains(to) => {
                    self.inboxes.entry(*to).or_default().push(msg.clone());
                }
                Effect::Broadcast { msg, except } => {
                    for m in self.members.iter().filter(|m| Some(**m) != *except) {
                        self.inboxes.entry(*m).or_default().push(msg.clone());
                    }
                }
                Effect::Kick { player, .. } => kicked.push(*player),
                Effect::TickInterval(ms) => self.tick_interval = Some(*ms),
                _ => {}
            }
            self.log.push(effect);
        }
        for player in kicked {
            self.leave(player);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Ctx;
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    #[derive(Default, Serialize, Deserialize)]
    struct Count {
        n: u64,
        #[serde(skip)]
        room: String,
    }

    #[derive(Deserialize)]
    struct Add {
        add: u64,
    }

    impl Game for Count {
        type Message = Add;
        fn init(&mut self, ctx: &mut Ctx, room: &str, _: Value) -> Result<(), String> {
            self.room = room.to_owned();
            ctx.set_tick_interval(100);
            Ok(())
        }
        fn on_join(&mut self, _: &mut Ctx, p: &Player) -> Result<(), Reject> {
            if p.name == "nobody" {
                return Err(Reject::new("no", "go away"));
            }
            Ok(())
        }
        fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, m: Add) -> Result<(), Reject> {
            self.n += m.add;
            ctx.send(from, &self.n);
            ctx.broadcast_except(from, &json!({"total": self.n}));
            Ok(())
        }
    }

    #[test]
    fn dispatch_records_effects_and_parses_messages() {
        let mut room = TestRoom::<Count>::new();
        assert_eq!(room.take_effects(), vec![Effect::TickInterval(100)]);
        assert_eq!(room.tick_interval(), Some(100));
        room.join(1, "a").unwrap();
        room.join(2, "b").unwrap();
        assert_eq!(room.join(3, "nobody").unwrap_err().code, "no");
        assert_eq!(room.members(), &[1, 2]);
        room.message(1, &json!({"add": 5})).unwrap();
        assert_eq!(room.received(1), vec![json!(5)]);
        assert_eq!(room.received(2), vec![json!({"total": 5})]);
        assert!(room.received(1).is_empty(), "received drains the inbox");
        assert!(room.received(3).is_empty(), "refused players receive nothing");
        let err = room.message_raw(1, b"{\"add\": -1}").unwrap_err();
        assert_eq!(err.code, runtime::INVALID_MESSAGE);
        assert_eq!(room.game().n, 5, "a rejected message changes nothing");
    }

    #[test]
    fn swap_carries_serialized_state_only() {
        let mut room = TestRoom::<Count>::with_config("lobby", &json!({})).unwrap();
        assert_eq!(room.game().room, "lobby");
        room.message(1, &json!({"add": 2})).unwrap();
        let bytes = room.swap().unwrap();
        assert_eq!(bytes, br#"{"n":2}"#);
        assert_eq!(room.game().n, 2);
        assert_eq!(room.game().room, "", "skipped fields are not carried");
        assert!(room.restore(b"not json").is_err());
        assert_eq!(room.game().n, 2, "a failed restore keeps the state");
    }

    #[test]
    fn random_below_stays_in_range() {
        let mut rec = Recorder::default();
        let mut ctx = Ctx::new(&mut rec);
        for n in [1, 2, 3, 7, 1000] {
            for _ in 0..100 {
                assert!(ctx.random_below(n) < n);
            }
        }
        assert_eq!(ctx.random_below(0), 0);
    }

    /// A state JSON cannot hold: a map with tuple keys.
    #[derive(Default, Serialize, Deserialize)]
    struct Board {
        cells: std::collections::BTreeMap<(u8, u8), u8>,
    }

    impl Game for Board {
        type Message = Value;
        fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> {
            Ok(())
        }
        fn on_message(&mut self, _: &mut Ctx, _: PlayerId, _: Value) -> Result<(), Reject> {
            self.cells.insert((1, 2), 3);
            Ok(())
        }
    }

    /// A game whose messages are storage commands, replying with the
    /// outcome, so tests drive the kv through a real `Ctx`.
    #[derive(Default, Serialize, Deserialize)]
    struct Store;

    #[derive(Deserialize)]
    #[serde(tag = "op", rename_all = "snake_case")]
    enum Op {
        Get {
            key: String,
        },
        GetNumber {
            key: String,
        },
        Set {
            key: String,
            value: Value,
        },
        SetBytes {
            key: String,
            len: usize,
        },
        Delete {
            key: String,
        },
        List {
            prefix: String,
            after: Option<String>,
            limit: u32,
        },
        /// Sets `key`, then fails the message: the write stays.
        SetThenReject {
            key: String,
        },
    }

    fn outcome<T: Serialize>(r: Result<T, KvError>) -> Value {
        match r {
            Ok(v) => json!({"ok": v}),
            Err(e) => json!({"err": format!("{e:?}")}),
        }
    }

    impl Game for Store {
        type Message = Op;
        fn init(&mut self, ctx: &mut Ctx, _: &str, _: Value) -> Result<(), String> {
            match ctx.kv().get_raw("anything") {
                Err(KvError::NotNow) => Ok(()),
                other => Err(format!("storage in init should fail with NotNow, got {other:?}")),
            }
        }
        fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> {
            Ok(())
        }
        fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, op: Op) -> Result<(), Reject> {
            let reply = match op {
                Op::Get { key } => outcome(ctx.kv().get::<Value>(&key)),
                Op::GetNumber { key } => outcome(ctx.kv().get::<u64>(&key)),
                Op::Set { key, value } => outcome(ctx.kv().set(&key, &value)),
                Op::SetBytes { key, len } => outcome(ctx.kv().set_raw(&key, &vec![b'x'; len])),
                Op::Delete { key } => outcome(ctx.kv().delete(&key)),
                Op::List { prefix, after, limit } => outcome(ctx.kv().list(&prefix, after.as_deref(), limit)),
                Op::SetThenReject { key } => {
                    ctx.kv()
                        .set(&key, &true)
                        .map_err(|e| Reject::new("kv", e.to_string()))?;
                    return Err(Reject::new("after-write", "rejected after a write"));
                }
            };
            ctx.send(from, &reply);
            Ok(())
        }
    }

    fn kv_room() -> TestRoom<Store> {
        let mut room = TestRoom::<Store>::new();
        room.join(1, "a").unwrap();
        room
    }

    fn ask(room: &mut TestRoom<Store>, op: Value) -> Value {
        room.message(1, &op).unwrap();
        room.received(1).pop().unwrap()
    }

    #[test]
    fn kv_round_trips_typed_values_and_misses_absent_keys() {
        let mut room = kv_room();
        let value = json!({"wins": 3, "name": "ann"});
        assert_eq!(
            ask(&mut room, json!({"op": "set", "key": "p/ann", "value": value})),
            json!({"ok": null})
        );
        assert_eq!(
            ask(&mut room, json!({"op": "get", "key": "p/ann"})),
            json!({"ok": value})
        );
        assert_eq!(
            ask(&mut room, json!({"op": "get", "key": "p/bob"})),
            json!({"ok": null})
        );
        assert_eq!(room.kv().get::<Value>("p/ann"), Ok(Some(value.clone())));
        assert_eq!(room.kv().get_raw("p/ann"), Some(serde_json::to_vec(&value).unwrap()));

        let mut rec = Recorder::default();
        rec.begin_input();
        let mut ctx = Ctx::new(&mut rec);
        ctx.kv().set("n", &7u64).unwrap();
        assert_eq!(ctx.kv().get::<u64>("n"), Ok(Some(7)), "a call sees its own writes");
        ctx.kv().set_raw("raw", &[0, 159, 255]).unwrap();
        assert_eq!(ctx.kv().get_raw("raw"), Ok(Some(vec![0, 159, 255])));
    }

    #[test]
    fn kv_delete_removes_and_tolerates_absent_keys() {
        let mut room = kv_room();
        ask(&mut room, json!({"op": "set", "key": "k", "value": 1}));
        assert_eq!(ask(&mut room, json!({"op": "delete", "key": "k"})), json!({"ok": null}));
        assert_eq!(ask(&mut room, json!({"op": "get", "key": "k"})), json!({"ok": null}));
        assert_eq!(
            ask(&mut room, json!({"op": "delete", "key": "never"})),
            json!({"ok": null})
        );
        assert!(room.kv().keys().is_empty());
        assert_eq!(room.kv().used_bytes(), 0);
    }

    #[test]
    fn kv_lists_by_prefix_in_byte_order_with_cursor_and_limit() {
        let mut room = kv_room();
        for key in ["w/b", "w/a", "w/c", "w/B", "x/a", "w", "w/é"] {
            ask(&mut room, json!({"op": "set", "key": key, "value": 0}));
        }
        let list = |room: &mut TestRoom<Store>, after: Option<&str>, limit: u32| {
            ask(
                room,
                json!({"op": "list", "prefix": "w/", "after": after, "limit": limit}),
            )
        };
        assert_eq!(
            list(&mut room, None, 10),
            json!({"ok": ["w/B", "w/a", "w/b", "w/c", "w/é"]})
        );
        assert_eq!(list(&mut room, None, 2), json!({"ok": ["w/B", "w/a"]}));
        assert_eq!(list(&mut room, Some("w/a"), 2), json!({"ok": ["w/b", "w/c"]}));
        assert_eq!(list(&mut room, Some("w/é"), 2), json!({"ok": []}));
        assert_eq!(
            list(&mut room, Some("a"), 1),
            json!({"ok": ["w/B"]}),
            "a cursor before the prefix"
        );
        assert_eq!(list(&mut room, None, 0), json!({"ok": []}));

        let mut rec = Recorder::default();
        rec.begin_input();
        let mut ctx = Ctx::new(&mut rec);
        for i in 0..1005 {
            ctx.kv().set(&format!("many/{i:04}"), &i).unwrap();
        }
        ctx.kv().delete("many/0001").unwrap();
        let keys = ctx.kv().list("many/", None, u32::MAX).unwrap();
        assert_eq!(keys.len(), MAX_LIST as usize, "lists are capped");
        assert_eq!(
            &keys[..2],
            ["many/0000", "many/0002"],
            "a call's own writes and deletes count"
        );
        rec.end_input();
        assert_eq!(rec.kv.keys().len(), 1004);
    }

    #[test]
    fn kv_enforces_key_and_value_limits() {
        let mut room = kv_room();
        let max = MAX_VALUE_BYTES as usize;
        let set = |room: &mut TestRoom<Store>, key: &str, len: usize| {
            ask(room, json!({"op": "set_bytes", "key": key, "len": len}))
        };
        assert_eq!(set(&mut room, "big", max), json!({"ok": null}));
        assert_eq!(set(&mut room, "bigger", max + 1), json!({"err": "TooLarge(65536)"}));
        assert_eq!(set(&mut room, "", 1), json!({"err": "InvalidKey"}));
        assert_eq!(set(&mut room, &"k".repeat(MAX_KEY_BYTES), 1), json!({"ok": null}));
        assert_eq!(
            set(&mut room, &"k".repeat(MAX_KEY_BYTES + 1), 1),
            json!({"err": "InvalidKey"})
        );
        assert_eq!(
            ask(&mut room, json!({"op": "get", "key": ""})),
            json!({"err": "InvalidKey"})
        );
        assert_eq!(room.kv().get_raw("bigger"), None);
    }

    #[test]
    fn kv_quota_counts_keys_and_values_and_lets_shrinking_writes_through() {
        let mut room = kv_room();
        room.set_kv_quota(Some(20));
        let set = |room: &mut TestRoom<Store>, key: &str, len: usize| {
            ask(room, json!({"op": "set_bytes", "key": key, "len": len}))
        };
        assert_eq!(set(&mut room, "a", 9), json!({"ok": null}));
        assert_eq!(set(&mut room, "b", 9), json!({"ok": null}));
        assert_eq!(room.kv().used_bytes(), 20);
        assert_eq!(set(&mut room, "c", 0), json!({"err": "QuotaExceeded(20)"}));
        assert_eq!(set(&mut room, "a", 10), json!({"err": "QuotaExceeded(20)"}));
        assert_eq!(
            set(&mut room, "a", 1),
            json!({"ok": null}),
            "a smaller value always fits"
        );
        assert_eq!(set(&mut room, "c", 7), json!({"ok": null}));
        assert_eq!(room.kv().used_bytes(), 20);
        assert_eq!(
            room.kv().set_raw("d", b""),
            Err(KvError::QuotaExceeded(20)),
            "seeding meets the quota too"
        );
        room.set_kv_quota(None);
        assert_eq!(set(&mut room, "d", 100), json!({"ok": null}));
    }

    #[test]
    fn kv_reports_values_that_do_not_decode() {
        let mut room = kv_room();
        ask(&mut room, json!({"op": "set", "key": "n", "value": "three"}));
        let reply = ask(&mut room, json!({"op": "get_number", "key": "n"}));
        let err = reply["err"].as_str().unwrap();
        assert!(err.starts_with("Decode(\"invalid type: string"), "{err}");
        room.kv().set_raw("bytes", &[0xff]).unwrap();
        assert!(matches!(room.kv().get::<u64>("bytes"), Err(KvError::Decode(_))));
        assert!(matches!(
            room.kv().set(
                "map",
                &Board {
                    cells: [((1, 2), 3)].into()
                }
            ),
            Err(KvError::Encode(_))
        ));
    }

    #[test]
    fn kv_is_closed_outside_inputs_and_shared_by_rooms() {
        // `Store::init` fails unless storage refuses it.
        let mut a = kv_room();
        let mut b = TestRoom::<Store>::new().with_kv(a.kv().clone());
        b.join(1, "b").unwrap();
        ask(&mut a, json!({"op": "set", "key": "shared", "value": "from a"}));
        assert_eq!(
            ask(&mut b, json!({"op": "get", "key": "shared"})),
            json!({"ok": "from a"})
        );
        assert!(
            TestRoom::<Store>::new().kv().keys().is_empty(),
            "a new room has its own storage"
        );

        // A rejected call's writes are kept: the call returned.
        assert_eq!(
            a.message(1, &json!({"op": "set_then_reject", "key": "r"}))
                .unwrap_err()
                .code,
            "after-write"
        );
        assert_eq!(b.kv().get::<bool>("r"), Ok(Some(true)));

        let mut rec = Recorder::default();
        let mut ctx = Ctx::new(&mut rec);
        assert_eq!(ctx.kv().set("k", &1), Err(KvError::NotNow));
        assert_eq!(ctx.kv().delete("k"), Err(KvError::NotNow));
        assert_eq!(ctx.kv().list("", None, 1), Err(KvError::NotNow));
    }

    #[test]
    fn join_as_passes_the_identity() {
        #[derive(Default, Serialize, Deserialize)]
        struct Who;
        impl Game for Who {
            type Message = Value;
            fn on_join(&mut self, ctx: &mut Ctx, p: &Player) -> Result<(), Reject> {
                let user = p
                    .user
                    .as_ref()
                    .map(|u| (u.user_id.clone(), u.claim("plan").map(str::to_owned)));
                ctx.send(p.id, &user);
                Ok(())
            }
            fn on_message(&mut self, _: &mut Ctx, _: PlayerId, _: Value) -> Result<(), Reject> {
                Ok(())
            }
        }
        let mut room = TestRoom::<Who>::new();
        room.join(1, "anon").unwrap();
        let mut id = Identity::new("u-42");
        id.claims.push(("plan".into(), "\"gold\"".into()));
        room.join_as(2, "ann", id).unwrap();
        assert_eq!(room.received(1), vec![Value::Null]);
        assert_eq!(room.received(2), vec![json!(["u-42", "\"gold\""])]);
    }

    #[test]
    fn a_state_that_cannot_be_written_is_an_error_never_an_empty_checkpoint() {
        let mut room = TestRoom::<Board>::new();
        room.join(1, "a").unwrap();
        room.message(1, &json!({})).unwrap();
        let err = room.swap().expect_err("a failed snapshot must not pass for a state");
        assert!(err.contains("cannot snapshot"), "{err}");
        assert_eq!(
            runtime::encode_snapshot(&Board::default()).as_deref(),
            Ok(&b"{\"cells\":{}}"[..])
        );
    }
}
