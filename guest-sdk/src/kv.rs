//! Durable key-value storage shared by every room of one game.

use crate::ctx::Backend;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Longest key the host accepts, in bytes (keys are 1 to this many bytes
/// of UTF-8); a longer or empty key fails with [`KvError::InvalidKey`].
pub const MAX_KEY_BYTES: usize = 256;

/// Most keys one [`Kv::list`] returns, whatever `limit` asks for, so one
/// call cannot stall the room on a huge listing.
pub const MAX_LIST: u32 = 1000;

/// Why a storage call failed. The first five cases are the host's
/// `kv-error`; `Decode` and `Encode` are the SDK's, for values that do not
/// convert between JSON bytes and your type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KvError {
    /// The key is empty or longer than [`MAX_KEY_BYTES`].
    InvalidKey,
    /// The value is longer than the host's limit, given in bytes (64 KiB
    /// unless the operator changed it).
    TooLarge(u32),
    /// The write would take the game's storage (bytes of keys and values)
    /// over its quota, given in bytes.
    QuotaExceeded(u64),
    /// Storage was called from `init` (or outside any input), which is
    /// re-run when a room is rebuilt and so must not read what other rooms
    /// wrote since.
    NotNow,
    /// The host offers no game storage (one run without a database).
    Unavailable,
    /// The stored bytes are not JSON of the type asked for.
    Decode(String),
    /// The value does not serialize to JSON (e.g. a map with non-string
    /// keys); nothing was written.
    Encode(String),
}

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvError::InvalidKey => write!(f, "a key is 1 to {MAX_KEY_BYTES} bytes"),
            KvError::TooLarge(max) => write!(f, "values are at most {max} bytes"),
            KvError::QuotaExceeded(quota) => write!(f, "the game's storage is full ({quota} bytes)"),
            KvError::NotNow => write!(f, "storage is only available while handling an input"),
            KvError::Unavailable => write!(f, "storage is unavailable"),
            KvError::Decode(why) => write!(f, "the stored value does not decode: {why}"),
            KvError::Encode(why) => write!(f, "the value does not serialize to JSON: {why}"),
        }
    }
}

impl std::error::Error for KvError {}

/// The game's storage, reached with [`crate::Ctx::kv`]. Keys are strings
/// ordered by their bytes; the typed calls store values as JSON.
///
/// What the host guarantees: calls work while the room handles an input
/// (`on_join`, `on_leave`, `on_message`, `on_tick`) and fail with
/// [`KvError::NotNow`] in `init` (and in `snapshot`/`restore`, which the
/// SDK runs without a `Ctx`). A call sees its own earlier writes at once;
/// the writes made while handling one input become visible to the game's
/// other rooms, and durable, together with that input, all or none. If
/// the call panics, nothing it wrote is kept. Reads are journaled, so a
/// replayed room sees what the original run saw.
///
/// ```
/// use respawn_guest_sdk::{Ctx, Game, Level, Player, PlayerId, Reject, testing::TestRoom};
///
/// #[derive(Default, serde::Serialize, serde::Deserialize)]
/// struct Visits;
///
/// impl Game for Visits {
///     type Message = serde_json::Value;
///     fn on_join(&mut self, ctx: &mut Ctx, p: &Player) -> Result<(), Reject> {
///         let key = format!("visits/{}", p.name);
///         let n = ctx.kv().get::<u64>(&key).ok().flatten().unwrap_or(0) + 1;
///         if let Err(e) = ctx.kv().set(&key, &n) {
///             ctx.log(Level::Warn, &format!("visit not counted: {e}"));
///         }
///         ctx.send(p.id, &n);
///         Ok(())
///     }
///     fn on_message(&mut self, _: &mut Ctx, _: PlayerId, _: Self::Message) -> Result<(), Reject> {
///         Ok(())
///     }
/// }
///
/// let mut room = TestRoom::<Visits>::new();
/// room.join(1, "ann").unwrap();
/// let mut other = TestRoom::<Visits>::new().with_kv(room.kv().clone());
/// other.join(7, "ann").unwrap();
/// assert_eq!(other.received(7), vec![serde_json::json!(2)]);
/// ```
pub struct Kv<'c> {
    backend: &'c mut dyn Backend,
}

impl<'c> Kv<'c> {
    pub(crate) fn new(backend: &'c mut dyn Backend) -> Self {
        Self { backend }
    }

    /// The value under `key` decoded from JSON, or `None` if the key is
    /// absent.
    pub fn get<T: DeserializeOwned>(&mut self, key: &str) -> Result<Option<T>, KvError> {
        self.get_raw(key)?
            .map(|bytes| serde_json::from_slice(&bytes).map_err(|e| KvError::Decode(e.to_string())))
            .transpose()
    }

    /// The bytes under `key`, for values that are not JSON.
    pub fn get_raw(&mut self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.backend.kv_get(key)
    }

    /// Stores `value` as JSON under `key`, replacing what was there.
    pub fn set<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> Result<(), KvError> {
        let bytes = serde_json::to_vec(value).map_err(|e| KvError::Encode(e.to_string()))?;
        self.set_raw(key, &bytes)
    }

    /// Stores `value` as is under `key`, replacing what was there.
    pub fn set_raw(&mut self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.backend.kv_set(key, value)
    }

    /// Removes `key`; removing an absent key is not an error.
    pub fn delete(&mut self, key: &str) -> Result<(), KvError> {
        self.backend.kv_delete(key)
    }

    /// Keys starting with `prefix`, in byte order, after `start_after` when
    /// given, at most `limit` (capped at [`MAX_LIST`]). Page through many
    /// keys by passing the last key of one page as the next `start_after`.
    pub fn list(&mut self, prefix: &str, start_after: Option<&str>, limit: u32) -> Result<Vec<String>, KvError> {
        self.backend.kv_list(prefix, start_after, limit)
    }
}
