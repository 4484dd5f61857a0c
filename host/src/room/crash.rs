//! Crash reports: when a room restarts too often or cannot restart, what
//! it was doing is written to `<state>/crashes/` as JSON: the fault, the
//! last checkpoint and every input since (the replay bundle).

use super::journal::Entry;
use super::registry::RoomKey;
use crate::sandbox::determinism::EntropyPosition;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// One crashed room.
#[derive(Serialize)]
pub(crate) struct CrashReport<'a> {
    pub game: &'a str,
    pub room: &'a str,
    pub version: String,
    pub digest: &'a str,
    pub seed: u64,
    pub at_ms: u64,
    /// `restart_intensity` or `restart_failed`.
    pub reason: &'static str,
    pub fault_kind: &'static str,
    pub fault: &'a str,
    pub restart_error: Option<&'a str>,
    pub restarts_in_window: usize,
    pub failed_input: Option<&'a Entry>,
    pub checkpoint_hex: String,
    pub checkpoint_entropy: EntropyPosition,
    /// The room time the checkpoint was taken at.
    pub checkpoint_now: u64,
    pub inputs_since_checkpoint: &'a [Entry],
}

/// Reports kept in the folder; past this, new ones are logged, not
/// written, so a crash loop cannot fill the disk.
pub(crate) const MAX_REPORTS: usize = 100;

/// Checkpoints larger than this are left out of reports (their size is
/// noted instead).
pub(crate) const MAX_CHECKPOINT_BYTES: usize = 1 << 20;

/// Where `report` goes, and its bytes.
pub(crate) fn render(state_dir: &Path, key: &RoomKey, report: &CrashReport<'_>) -> std::io::Result<(PathBuf, Vec<u8>)> {
    let file = state_dir.join("crashes").join(format!(
        "{}-{}-{}.json",
        report.at_ms,
        key.game,
        crate::modules::trust::hex(key.room.as_bytes())
    ));
    let text = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    Ok((file, text))
}

/// Writes a rendered report, unless the folder holds [`MAX_REPORTS`]
/// already. Blocking: run it off the async workers.
pub(crate) fn write(file: &Path, text: &[u8]) -> std::io::Result<bool> {
    let Some(dir) = file.parent() else {
        return Ok(false);
    };
    std::fs::create_dir_all(dir)?;
    if std::fs::read_dir(dir)?.count() >= MAX_REPORTS {
        return Ok(false);
    }
    crate::modules::store::write_atomic(file, text)?;
    Ok(true)
}
