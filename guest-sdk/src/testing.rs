//! Test a game natively, without wasm or a host.
//!
//! [`TestRoom`] drives a [`Game`] through the same dispatch code the wasm
//! exports use (message parsing, snapshot and restore included) and records
//! every effect, with a clock and a seeded random generator you control.
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
use crate::runtime;
use crate::{Game, Level, Player, PlayerId, Reject};
use serde::Serialize;
use serde_json::Value;

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

#[derive(Default)]
struct Recorder {
    effects: Vec<Effect>,
    now_ms: u64,
    rng: u64,
}

impl Recorder {
    fn decode(payload: &[u8]) -> Value {
        serde_json::from_slice(payload).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(payload).into_owned()))
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
}

/// A room running one [`Game`] natively, for unit tests.
///
/// Effects are delivered the way the host delivers them: after each call,
/// to the members of that moment. A player is a member from the end of an
/// accepted `on_join` until just before `on_leave`; a kicked player leaves
/// (and `on_leave` runs) right after the call that kicked them.
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

    /// A player joins; if the game accepts, the player is a member.
    pub fn join(&mut self, id: PlayerId, name: &str) -> Result<(), Reject> {
        let player = Player {
            id,
            name: name.to_owned(),
        };
        let r = runtime::dispatch_join(&mut self.game, &mut self.rec, player);
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
        runtime::dispatch_leave(&mut self.game, &mut self.rec, id);
        self.deliver();
    }

    /// A player sends a message, serialized to JSON as a client would.
    pub fn message<M: Serialize + ?Sized>(&mut self, from: PlayerId, msg: &M) -> Result<(), Reject> {
        let payload = serde_json::to_vec(msg).map_err(|e| Reject::new("test", e.to_string()))?;
        self.message_raw(from, &payload)
    }

    /// A player sends raw bytes, to test what your game does with garbage.
    pub fn message_raw(&mut self, from: PlayerId, payload: &[u8]) -> Result<(), Reject> {
        let r = runtime::dispatch_message(&mut self.game, &mut self.rec, from, payload);
        self.deliver();
        r
    }

    /// Advances the clock by `ms` and calls `on_tick`.
    pub fn tick(&mut self, ms: u64) {
        self.rec.now_ms += ms;
        runtime::dispatch_tick(&mut self.game, &mut self.rec);
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
