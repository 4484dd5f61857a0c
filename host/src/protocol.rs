//! The player protocol, from its own crate ([`respawn_protocol`]) so that
//! clients, the load harness and the fuzzers use the very frames the host
//! parses and writes.

pub use respawn_protocol::*;
