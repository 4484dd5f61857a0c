//! Host-side bindings of the `respawn:game/room` world, generated from
//! `wit/` at compile time: the current version (0.2.0) and the previous
//! one (0.1.0, `wit/0.1.0/`), so games built before the upgrade still load.

#![allow(missing_docs)]

/// `respawn:game@0.2.0`: the current world (storage, identities).
pub mod v2 {
    wasmtime::component::bindgen!({
        world: "room",
        path: "../wit",
        // Every import may trap the guest: a guest that floods effects is
        // stopped instead of growing host memory.
        imports: { default: trappable },
        // Guest calls are async so WASI's async host functions never block
        // a runtime thread and a long call yields to other rooms at every
        // epoch.
        exports: { default: async },
    });
}

/// `respawn:game@0.1.0`: the first world, without storage or identities.
pub mod v1 {
    wasmtime::component::bindgen!({
        world: "room",
        path: "../wit/0.1.0",
        imports: { default: trappable },
        exports: { default: async },
    });
}

// `self::` keeps the generated `respawn` module apart from this crate's name.
pub use self::v2::respawn::game::kv::KvError;
pub use self::v2::respawn::game::types::{Identity, Level, Player, Rejection};

impl From<v1::respawn::game::types::Rejection> for Rejection {
    fn from(r: v1::respawn::game::types::Rejection) -> Self {
        Self {
            code: r.code,
            message: r.message,
        }
    }
}

impl From<v1::respawn::game::types::Level> for Level {
    fn from(l: v1::respawn::game::types::Level) -> Self {
        use v1::respawn::game::types::Level as L1;
        match l {
            L1::Trace => Level::Trace,
            L1::Debug => Level::Debug,
            L1::Info => Level::Info,
            L1::Warn => Level::Warn,
            L1::Error => Level::Error,
        }
    }
}
