//! The audit log: one JSON line per load, promotion, rollback, pin and
//! rejection, with time, version, digest, signer and reason.

use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

/// One audit record.
#[derive(Debug, Default, Serialize)]
pub struct AuditEntry {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// `load`, `promote`, `rollback`, `promotion_aborted`, `pin`, `unpin`,
    /// `reject`.
    pub event: &'static str,
    /// The game, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub game: Option<String>,
    /// The version concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The version it replaced (promotions and rollbacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// SHA-256 of the module bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Fingerprint of the signing key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The rejection code or the trigger (`update`, `cli`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Details for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The file concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// An append-only JSON-lines file.
pub struct AuditLog {
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Mutex::new(file) })
    }

    /// Appends a record, stamping its time. Failing to write is logged: the
    /// decision it records has been taken either way.
    pub fn record(&self, mut entry: AuditEntry) {
        entry.ts_ms = crate::unix_ms();
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        let mut file = crate::lock(&self.file);
        if let Err(e) = file.write_all(&line) {
            tracing::error!("cannot write the audit log: {e}");
        }
    }
}
