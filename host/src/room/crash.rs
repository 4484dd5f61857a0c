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
    pub inputs_since_checkpoint: &'a [Entry],
}

/// Writes `report`; returns its path.
pub(crate) fn write(state_dir: &Path, key: &RoomKey, report: &CrashReport<'_>) -> std::io::Result<PathBuf> {
    let dir = state_dir.join("crashes");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!(
        "{}-{}-{}.json",
        report.at_ms,
        key.game,
        crate::modules::trust::hex(key.room.as_bytes())
    ));
    let text = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    crate::modules::store::write_atomic(&file, &text)?;
    Ok(file)
}
