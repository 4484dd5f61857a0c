//! The Respawn guest SDK: write a game room as a plain Rust type.
//!
//! A game is a serde state type implementing [`Game`]. The SDK turns it into
//! the `respawn:game/room` WebAssembly component world: it parses player
//! messages into your [`Game::Message`] type, and `snapshot`/`restore` come
//! for free from the state's serialization, so a hot swap carries the state
//! without any code of yours. Add a field with `#[serde(default)]` and the
//! next version restores the old state. What must outlive a room (scores,
//! profiles) goes in the game's storage, [`Ctx::kv`], shared by its rooms.
//!
//! ```
//! use respawn_guest_sdk::{Ctx, Game, Player, PlayerId, Reject};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Default, Serialize, Deserialize)]
//! struct Counter { hits: u64 }
//!
//! impl Game for Counter {
//!     type Message = serde_json::Value;
//!     fn on_join(&mut self, _: &mut Ctx, _: &Player) -> Result<(), Reject> { Ok(()) }
//!     fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, _: Self::Message) -> Result<(), Reject> {
//!         self.hits += 1;
//!         ctx.send(from, &self.hits);
//!         Ok(())
//!     }
//! }
//! respawn_guest_sdk::export_game!(Counter);
//!
//! // Native test of the same logic:
//! let mut room = respawn_guest_sdk::testing::TestRoom::<Counter>::new();
//! room.join(1, "ann").unwrap();
//! room.message(1, &serde_json::json!({"anything": true})).unwrap();
//! assert_eq!(room.received(1), vec![serde_json::json!(1)]);
//! ```
//!
//! Game logic is tested natively, without wasm, with [`testing::TestRoom`].

#![warn(missing_docs)]

// The generated bindings name this crate by its absolute path, which must
// also resolve inside the crate itself.
extern crate self as respawn_guest_sdk;

mod ctx;
pub mod kv;
mod runtime;
pub mod testing;

pub use ctx::{Ctx, Level};
pub use kv::{Kv, KvError};
pub use serde_json;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A player's id, unique within one host process.
pub type PlayerId = u64;

/// A player as the game sees it on join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Player {
    /// The host-assigned id used by every other call.
    pub id: PlayerId,
    /// The display name the player chose (validated by the host). Anyone
    /// may pick any free name, so it identifies nobody across sessions.
    pub name: String,
    /// Who the player is, when the host verified a join ticket; `None` on a
    /// host that does not require tickets. Key anything that must follow a
    /// person across sessions (scores, unlocks) by this, not by `id`.
    pub user: Option<Identity>,
}

/// A player's verified identity: the subject of the join ticket the host
/// checked. Unlike [`PlayerId`], it is stable across connections, resumes
/// and host restarts, so it is what a game keys stored data by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account service's user id.
    pub user_id: String,
    /// The ticket claims the host's config passes to games, as (name, JSON
    /// text) pairs: the SDK does not guess their types.
    pub claims: Vec<(String, String)>,
}

impl Identity {
    /// An identity without claims, e.g. for tests.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            claims: Vec::new(),
        }
    }

    /// The JSON text of the claim `name`, if the ticket carried it.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Why a game refused a join or a message. The player receives both fields:
/// `code` for programs, `message` for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// A short machine-readable word chosen by the game, e.g. `cell-taken`.
    pub code: String,
    /// A sentence for the player.
    pub message: String,
}

impl Reject {
    /// A rejection with a game-chosen code and a human message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A game room's logic over its own state type.
///
/// The state is the type itself: `Default` builds a fresh room, serde
/// carries it across hot swaps and restarts. Every method receives a
/// [`Ctx`] to talk to players and read the room's clock and randomness;
/// never read time or entropy any other way, or replay stops being exact.
pub trait Game: Default + Serialize + DeserializeOwned + 'static {
    /// What players send, parsed from the JSON `data` of their messages. A
    /// message that does not parse is rejected with code `invalid-message`
    /// before your code runs. Use `serde_json::Value` to take anything.
    type Message: DeserializeOwned;

    /// Called once when the room is created, with the room's name and the
    /// game's JSON config (`{}` when none is set).
    fn init(&mut self, ctx: &mut Ctx, room: &str, config: serde_json::Value) -> Result<(), String> {
        let _ = (ctx, room, config);
        Ok(())
    }

    /// A player asks to join; return a [`Reject`] to refuse.
    fn on_join(&mut self, ctx: &mut Ctx, player: &Player) -> Result<(), Reject>;

    /// A player left or was disconnected.
    fn on_leave(&mut self, ctx: &mut Ctx, player: PlayerId) {
        let _ = (ctx, player);
    }

    /// A player's message; a [`Reject`] is reported to that player only.
    fn on_message(&mut self, ctx: &mut Ctx, from: PlayerId, msg: Self::Message) -> Result<(), Reject>;

    /// Called every tick interval set with [`Ctx::set_tick_interval`].
    fn on_tick(&mut self, ctx: &mut Ctx) {
        let _ = ctx;
    }
}

#[doc(hidden)]
pub mod __private {
    pub use crate::runtime::*;
    pub use wit_bindgen;
}

/// The WIT bindings of the `respawn:game/room` world, generated by
/// wit-bindgen. Guest authors never need them directly.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "room",
        pub_export_macro: true,
        export_macro_name: "__export_room_world",
        default_bindings_module: "::respawn_guest_sdk::bindings",
        runtime_path: "::respawn_guest_sdk::__private::wit_bindgen::rt",
    });
}

/// Exports a [`Game`] type as the room component's implementation. Call it
/// once, at the top level of the game crate. It expands to nothing on
/// native targets, so the same crate also builds for native unit tests.
#[macro_export]
macro_rules! export_game {
    ($game:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::bindings::exports::respawn::game::game as __g;
            use $crate::bindings::respawn::game::types as __t;

            struct __RespawnGuest;

            ::std::thread_local! {
                static __STATE: ::core::cell::RefCell<$game> =
                    ::core::cell::RefCell::new(<$game as ::core::default::Default>::default());
            }

            fn __with<R>(f: impl FnOnce(&mut $game) -> R) -> R {
                __STATE.with(|s| f(&mut s.borrow_mut()))
            }

            impl __g::Guest for __RespawnGuest {
                fn init(room: String, config: Vec<u8>) -> Result<(), String> {
                    __with(|g| $crate::__private::init(g, &room, &config))
                }
                fn on_join(player: __t::Player) -> Result<(), __t::Rejection> {
                    __with(|g| $crate::__private::on_join(g, player)).map_err($crate::__private::to_wit_rejection)
                }
                fn on_leave(player: __t::PlayerId) {
                    __with(|g| $crate::__private::on_leave(g, player))
                }
                fn on_message(player: __t::PlayerId, payload: Vec<u8>) -> Result<(), __t::Rejection> {
                    __with(|g| $crate::__private::on_message(g, player, &payload))
                        .map_err($crate::__private::to_wit_rejection)
                }
                fn on_tick(now_ms: u64) {
                    __with(|g| $crate::__private::on_tick(g, now_ms))
                }
                fn snapshot() -> Vec<u8> {
                    __with(|g| $crate::__private::snapshot(g))
                }
                fn restore(state: Vec<u8>) -> Result<(), String> {
                    __with(|g| $crate::__private::restore(g, &state))
                }
            }

    $crate::bindings::__export_room_world!(__RespawnGuest with_types_in $crate::bindings);
        };
    };
}
