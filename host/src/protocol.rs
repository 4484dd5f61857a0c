//! The player protocol, from its own crate ([`respawn_protocol`]) so that
//! clients, the load harness and the fuzzers use the very frames the host
//! parses and writes.

pub use respawn_protocol::*;

use serde_json::value::RawValue;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// An `error` frame ([`respawn_protocol::error_frame`]), counted by code
/// for `/metrics`: every error frame the host writes is made here.
pub fn error_frame(err: &ProtocolError, reason: Option<&str>, reference: Option<&RawValue>) -> Utf8Bytes {
    crate::metrics::METRICS.protocol_error(err.code);
    respawn_protocol::error_frame(err, reason, reference)
}
