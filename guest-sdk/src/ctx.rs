//! The handle a game uses to act on its room.

use crate::PlayerId;
use crate::kv::{Kv, KvError};
use serde::Serialize;

/// Severity of a log line written with [`Ctx::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something odd the operator may want to see.
    Warn,
    /// Something failed.
    Error,
}

/// Where a [`Ctx`]'s effects go: the host's imports inside wasm, a
/// recorder in [`crate::testing`].
pub(crate) trait Backend {
    fn send(&mut self, to: PlayerId, payload: &[u8]);
    fn broadcast(&mut self, payload: &[u8], except: Option<PlayerId>);
    fn kick(&mut self, player: PlayerId, reason: &str);
    fn log(&mut self, level: Level, message: &str);
    fn now_ms(&mut self) -> u64;
    fn random_u64(&mut self) -> u64;
    fn set_tick_interval(&mut self, ms: u32);
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn kv_delete(&mut self, key: &str) -> Result<(), KvError>;
    fn kv_list(&mut self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Vec<String>, KvError>;
}

/// The room as seen from game code: send to players, read the room's clock
/// and random numbers, ask for ticks, keep data in the game's storage.
///
/// Sends are delivered when the current call returns, in order; if the call
/// panics they are dropped together with the call.
pub struct Ctx<'a> {
    backend: &'a mut dyn Backend,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(backend: &'a mut dyn Backend) -> Self {
        Self { backend }
    }

    /// Sends a JSON message to one player.
    pub fn send<T: Serialize + ?Sized>(&mut self, to: PlayerId, msg: &T) {
        if let Some(bytes) = self.encode(msg) {
            self.backend.send(to, &bytes);
        }
    }

    /// Sends a JSON message to every player in the room.
    pub fn broadcast<T: Serialize + ?Sized>(&mut self, msg: &T) {
        if let Some(bytes) = self.encode(msg) {
            self.backend.broadcast(&bytes, None);
        }
    }

    /// Sends a JSON message to every player in the room but `except`.
    pub fn broadcast_except<T: Serialize + ?Sized>(&mut self, except: PlayerId, msg: &T) {
        if let Some(bytes) = self.encode(msg) {
            self.backend.broadcast(&bytes, Some(except));
        }
    }

    /// Removes a player from the room, telling them why.
    pub fn kick(&mut self, player: PlayerId, reason: &str) {
        self.backend.kick(player, reason);
    }

    /// Writes to the host's log, tagged with this game and room.
    pub fn log(&mut self, level: Level, message: &str) {
        self.backend.log(level, message);
    }

    /// The room's clock in milliseconds since the Unix epoch, fixed for the
    /// duration of the current call (so replays see the same value).
    pub fn now_ms(&mut self) -> u64 {
        self.backend.now_ms()
    }

    /// A random number from the room's seeded generator.
    pub fn random_u64(&mut self) -> u64 {
        self.backend.random_u64()
    }

    /// A random number in `0..n` (`n` must be non-zero; 0 yields 0).
    pub fn random_below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Rejection sampling keeps the result unbiased.
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let r = self.backend.random_u64();
            if r < zone {
                return r % n;
            }
        }
    }

    /// Asks for `on_tick` every `ms` milliseconds; 0 stops ticking. The host
    /// may raise a too-small interval to its minimum.
    pub fn set_tick_interval(&mut self, ms: u32) {
        self.backend.set_tick_interval(ms);
    }

    /// The game's durable storage, shared with its other rooms (see [`Kv`]
    /// for when writes become visible and when calls fail).
    pub fn kv(&mut self) -> Kv<'_> {
        Kv::new(&mut *self.backend)
    }

    fn encode<T: Serialize + ?Sized>(&mut self, msg: &T) -> Option<Vec<u8>> {
        match serde_json::to_vec(msg) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                self.backend.log(
                    Level::Error,
                    &format!("message not sent: it does not serialize to JSON: {e}"),
                );
                None
            }
        }
    }
}
