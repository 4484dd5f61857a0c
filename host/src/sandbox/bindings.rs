//! Host-side bindings of the `respawn:game/room` world, generated from
//! `wit/` at compile time.

#![allow(missing_docs)]

wasmtime::component::bindgen!({
    world: "room",
    path: "../wit",
    // Every import may trap the guest: a guest that floods effects is
    // stopped instead of growing host memory.
    imports: { default: trappable },
    // Guest calls are async so WASI's async host functions never block a
    // runtime thread and a long call yields to other rooms at every epoch.
    exports: { default: async },
});

// `self::` keeps the generated `respawn` module apart from this crate's name.
pub use self::respawn::game::types::{Level, Player, Rejection};
