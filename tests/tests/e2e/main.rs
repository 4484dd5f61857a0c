//! End-to-end tests: a real `respawn serve` process, real compiled guests
//! (`just guests`), real WebSocket and TCP sockets on loopback.

mod admission;
mod auth;
mod bad_input;
mod capsules;
mod cli;
mod cluster;
mod connections;
mod deploy;
mod durability;
mod languages;
mod lifecycle;
mod modules;
mod observability;
mod play;
mod rooms;
mod soak;
mod supervision;
mod trust;
