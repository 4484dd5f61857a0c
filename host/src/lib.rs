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
pub mod cli;
pub mod config;
pub mod deploy;
pub mod health;
pub mod modules;
pub mod net;
pub mod protocol;
pub mod room;
pub mod sandbox;
pub mod server;
pub mod session;
pub mod systemd;
pub mod web;
