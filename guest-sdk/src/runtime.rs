//! The glue between the component's exports and a [`Game`]: parsing,
//! serialization and the wasm backend. Shared by the wasm exports and the
//! native test harness, so native tests exercise the same code paths.

use crate::ctx::{Backend, Ctx};
use crate::{Game, Player, PlayerId, Reject};

/// The code of the rejection sent when a message does not parse.
pub const INVALID_MESSAGE: &str = "invalid-message";

pub(crate) fn dispatch_init<G: Game>(g: &mut G, b: &mut dyn Backend, room: &str, config: &[u8]) -> Result<(), String> {
    let config = if config.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(config).map_err(|e| format!("game config is not valid JSON: {e}"))?
    };
    g.init(&mut Ctx::new(b), room, config)
}

pub(crate) fn dispatch_join<G: Game>(g: &mut G, b: &mut dyn Backend, player: Player) -> Result<(), Reject> {
    g.on_join(&mut Ctx::new(b), &player)
}

pub(crate) fn dispatch_leave<G: Game>(g: &mut G, b: &mut dyn Backend, player: PlayerId) {
    g.on_leave(&mut Ctx::new(b), player)
}

pub(crate) fn dispatch_message<G: Game>(
    g: &mut G,
    b: &mut dyn Backend,
    from: PlayerId,
    payload: &[u8],
) -> Result<(), Reject> {
    let msg = serde_json::from_slice::<G::Message>(payload)
        .map_err(|e| Reject::new(INVALID_MESSAGE, format!("this game cannot read that message: {e}")))?;
    g.on_message(&mut Ctx::new(b), from, msg)
}

pub(crate) fn dispatch_tick<G: Game>(g: &mut G, b: &mut dyn Backend) {
    g.on_tick(&mut Ctx::new(b))
}

/// The game's state as JSON, or why it cannot be written. Never an empty
/// stand-in: a checkpoint that is not the state would be restored as if
/// it were.
pub(crate) fn encode_snapshot<G: Game>(g: &G) -> Result<Vec<u8>, String> {
    serde_json::to_vec(g).map_err(|e| format!("cannot snapshot this game's state: {e}"))
}

pub(crate) fn decode_snapshot<G: Game>(g: &mut G, state: &[u8]) -> Result<(), String> {
    *g = serde_json::from_slice(state).map_err(|e| format!("cannot restore this state: {e}"))?;
    Ok(())
}

#[cfg(target_arch = "wasm32")]
mod wasm {
    use super::*;
    use crate::bindings::exports::respawn::game::game as exports;
    use crate::bindings::respawn::game::{host, kv, types};
    use crate::{Identity, KvError, Level};

    /// The backend inside a component: every effect is a host import call.
    struct Wit;

    impl Backend for Wit {
        fn send(&mut self, to: PlayerId, payload: &[u8]) {
            host::send(to, payload)
        }
        fn broadcast(&mut self, payload: &[u8], except: Option<PlayerId>) {
            host::broadcast(payload, except)
        }
        fn kick(&mut self, player: PlayerId, reason: &str) {
            host::kick(player, reason)
        }
        fn log(&mut self, level: Level, message: &str) {
            let level = match level {
                Level::Trace => types::Level::Trace,
                Level::Debug => types::Level::Debug,
                Level::Info => types::Level::Info,
                Level::Warn => types::Level::Warn,
                Level::Error => types::Level::Error,
            };
            host::log(level, message)
        }
        fn now_ms(&mut self) -> u64 {
            host::now_ms()
        }
        fn random_u64(&mut self) -> u64 {
            host::random_u64()
        }
        fn set_tick_interval(&mut self, ms: u32) {
            host::set_tick_interval(ms)
        }
        fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            kv::get(key).map_err(from_wit)
        }
        fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
            kv::set(key, value).map_err(from_wit)
        }
        fn kv_delete(&mut self, key: &str) -> Result<(), KvError> {
            kv::delete(key).map_err(from_wit)
        }
        fn kv_list(&mut self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Vec<String>, KvError> {
            kv::list(prefix, start_after, limit).map_err(from_wit)
        }
    }

    fn from_wit(e: kv::KvError) -> KvError {
        match e {
            kv::KvError::InvalidKey => KvError::InvalidKey,
            kv::KvError::TooLarge(max) => KvError::TooLarge(max),
            kv::KvError::QuotaExceeded(quota) => KvError::QuotaExceeded(quota),
            kv::KvError::NotNow => KvError::NotNow,
            kv::KvError::Unavailable => KvError::Unavailable,
        }
    }

    /// `init`, with the panic hook that sends a guest panic to the host's log.
    pub fn init<G: Game>(g: &mut G, room: &str, config: &[u8]) -> Result<(), String> {
        // A panic's message goes to the host's log, tagged with the room,
        // instead of a stderr nobody reads; the trap that follows is the
        // host's to handle.
        std::panic::set_hook(Box::new(|info| {
            host::log(types::Level::Error, &format!("guest panicked: {info}"))
        }));
        // The standard library draws its hash-map keys from WASI random
        // once per instance, on first use, and keeps them. Drawn here, at
        // the start of every instance of the room (before the host moves
        // the random streams to a checkpoint's position), they are the
        // same in the room, in its restarts and hot swaps, and in a replay:
        // drawn later, a replay from a checkpoint would get other keys.
        let _ = std::collections::hash_map::RandomState::new();
        dispatch_init(g, &mut Wit, room, config)
    }
    /// Takes the world's player whole, so the macro need not change when
    /// the record grows.
    pub fn on_join<G: Game>(g: &mut G, p: types::Player) -> Result<(), Reject> {
        let user = p.user.map(|u| Identity {
            user_id: u.user_id,
            claims: u.claims,
        });
        dispatch_join(
            g,
            &mut Wit,
            Player {
                id: p.id,
                name: p.name,
                user,
            },
        )
    }
    /// `on-leave`.
    pub fn on_leave<G: Game>(g: &mut G, player: PlayerId) {
        dispatch_leave(g, &mut Wit, player)
    }
    /// `on-message`: the payload is parsed into the game's message type.
    pub fn on_message<G: Game>(g: &mut G, from: PlayerId, payload: &[u8]) -> Result<(), Reject> {
        dispatch_message(g, &mut Wit, from, payload)
    }
    /// `on-tick` (the time is also the room clock `Ctx::now_ms` reads).
    pub fn on_tick<G: Game>(g: &mut G, _now_ms: u64) {
        dispatch_tick(g, &mut Wit)
    }
    /// A state that cannot be written traps the call (the world's
    /// `snapshot` has no error case): the host then keeps its last good
    /// checkpoint and stores nothing from this one.
    pub fn snapshot<G: Game>(g: &mut G) -> Vec<u8> {
        match encode_snapshot(g) {
            Ok(bytes) => bytes,
            Err(why) => panic!("{why}"),
        }
    }
    /// `restore` of a snapshot, possibly an older version's.
    pub fn restore<G: Game>(g: &mut G, state: &[u8]) -> Result<(), String> {
        decode_snapshot(g, state)
    }
    /// A [`Reject`] as the world's rejection record.
    pub fn to_wit_rejection(r: Reject) -> exports::Rejection {
        exports::Rejection {
            code: r.code,
            message: r.message,
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use wasm::*;
