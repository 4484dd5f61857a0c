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
    /// `reject`, `ban`, `unban`, `room_kick`, `room_close`, `room_say`.
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
    /// The user concerned (bans).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When a ban ends, in ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    /// The room concerned (room operations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The player concerned (a kick).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub player: Option<u64>,
}

/// An append-only JSON-lines file, written by a thread of its own so that
/// recording never waits on the disk; records keep their order.
pub struct AuditLog {
    lines: Mutex<std::sync::mpsc::Sender<Line>>,
}

enum Line {
    Record(Vec<u8>),
    /// Answered once everything before it is written.
    Flush(std::sync::mpsc::SyncSender<()>),
}

impl AuditLog {
    /// Opens (creating) the log for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = std::sync::mpsc::channel::<Line>();
        std::thread::Builder::new().name("audit-log".into()).spawn(move || {
            for line in rx {
                match line {
                    Line::Record(bytes) => {
                        if let Err(e) = file.write_all(&bytes) {
                            tracing::error!("cannot write the audit log: {e}");
                        }
                    }
                    Line::Flush(done) => {
                        let _ = file.sync_data();
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Self { lines: Mutex::new(tx) })
    }

    /// Appends a record, stamping its time. Failing to write is logged: the
    /// decision it records has been taken either way.
    pub fn record(&self, mut entry: AuditEntry) {
        entry.ts_ms = crate::unix_ms();
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        let _ = crate::lock(&self.lines).send(Line::Record(line));
    }

    /// Waits until every record so far is on disk, for at most `timeout`
    /// (a stuck disk must not hold a shutdown or a promotion forever).
    /// Whether it got there.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        crate::lock(&self.lines).send(Line::Flush(done)).is_ok() && wait.recv_timeout(timeout).is_ok()
    }
}
