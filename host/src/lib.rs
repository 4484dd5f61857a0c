//! Respawn: a game host that runs each room as a sandboxed WebAssembly
//! component and serves players over WebSocket and TCP.
//!
//! The path of a player's message: [`net`] (transport) → [`session`]
//! (protocol, one per connection) → [`room`] (one task per room) →
//! [`sandbox`] (the guest instance). Game code enters through [`modules`]
//! (verification, slots) and goes live through [`deploy`]; operators drive
//! it through [`admin`].

#![warn(missing_docs)]

pub mod admin;
pub mod auth;
mod blocking;
mod bounded;
pub mod budget;
pub mod capsule;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod crash_events;
pub mod deploy;
pub mod limits;
mod mailbox;
pub mod metrics;
pub mod modules;
pub mod net;
pub mod protocol;
pub mod readiness;
pub mod room;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod storage;
pub mod systemd;
#[cfg(test)]
mod testing;
pub mod util;
mod watch;
pub mod web;

/// Locks `m`, taking the data even if a holder panicked: every lock in the
/// host guards data that stays valid between statements, and the host must
/// not panic because some other task did.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Wall-clock time in milliseconds since the Unix epoch (0 if the clock is
/// before it).
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
