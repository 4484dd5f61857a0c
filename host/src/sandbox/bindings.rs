//! Host-side bindings of the `respawn:game/room` world, generated from
//! `wit/` at compile time.

wasmtime::component::bindgen!({
    world: "room",
    path: "../wit",
    // Every import may trap the guest: a guest that floods effects is
    // stopped instead of growing host memory.
    imports: { default: trappable },
});

pub use respawn::game::types::{Level, Player, Rejection};
