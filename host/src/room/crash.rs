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

/// Reports kept in the folder: the newest, so a crash loop cannot fill
/// the disk and the reports that matter (the latest) are never the ones
/// left out.
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
        crate::util::hex(key.room.as_bytes())
    ));
    let text = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    Ok((file, text))
}

/// Writes a rendered report, then deletes the oldest reports beyond
/// `keep`; returns how many it deleted. Report names start with their time
/// in milliseconds, so name order is age order. Blocking: run it off the
/// async workers.
pub(crate) fn write(file: &Path, text: &[u8], keep: usize) -> std::io::Result<usize> {
    let Some(dir) = file.parent() else {
        return Ok(0);
    };
    std::fs::create_dir_all(dir)?;
    crate::util::write_atomic(file, text)?;
    let mut reports: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    if reports.len() <= keep {
        return Ok(0);
    }
    reports.sort();
    let old = reports.len() - keep;
    let mut deleted = 0;
    for path in &reports[..old] {
        if std::fs::remove_file(path).is_ok() {
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_reports_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let crashes = dir.path().join("crashes");
        for at in 1000..1005u64 {
            let deleted = write(&crashes.join(format!("{at}-g-00.json")), b"{}", 3).unwrap();
            assert_eq!(deleted, usize::from(at >= 1003));
        }
        let mut left: Vec<String> = std::fs::read_dir(&crashes)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1002-g-00.json", "1003-g-00.json", "1004-g-00.json"]);
    }
}
