//! The hot-fix gate: before a version goes live, the game's recent crash
//! capsules are replayed against it, off the message path (a thread of
//! its own); if any still faults, the promotion is refused with
//! `gate_failed` and the version waits in its slot for `promote --force`.

use crate::capsule::folder::Folder;
use crate::capsule::{Capsule, replay};
use crate::config::CapsulesConfig;
use crate::modules::GameModule;
use crate::sandbox::Sandbox;
use serde::Serialize;
use std::sync::Arc;

/// One capsule's replay on the candidate.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// The capsule file's name.
    pub capsule: String,
    /// Its crash signature.
    pub signature: String,
    /// What the candidate did: `fixed` (took every input), `faults` (and
    /// how), `cannot_start` (instantiate, `init` or `restore` failed) or
    /// `unreadable` (the file; skipped, it proves nothing).
    pub outcome: String,
    /// The fault or the reason, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The gate's findings for one version.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateResult {
    /// Capsules replayed, newest first.
    pub checked: Vec<Checked>,
}

impl GateResult {
    /// The gate itself failed: a refusal (it proved nothing), not a pass.
    pub fn broken(why: String) -> Self {
        Self {
            checked: vec![Checked {
                capsule: "(none)".into(),
                signature: "gate_error".into(),
                outcome: "cannot_start".into(),
                detail: Some(why),
            }],
        }
    }

    /// Capsules the candidate still fails on.
    pub fn failing(&self) -> Vec<&Checked> {
        self.checked
            .iter()
            .filter(|c| c.outcome == "faults" || c.outcome == "cannot_start")
            .collect()
    }

    /// Capsules the candidate takes: the crashes it fixes.
    pub fn fixed(&self) -> Vec<&Checked> {
        self.checked.iter().filter(|c| c.outcome == "fixed").collect()
    }
}

/// The gate's verdict on a version, as `respawn status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GateSummary {
    /// Crash signatures this version fixes (it takes their inputs).
    pub fixes: Vec<String>,
    /// Crash signatures it still fails on.
    pub fails: Vec<String>,
    /// Promoted anyway (`promote --force`).
    pub forced: bool,
}

impl GateResult {
    /// The summary for `status`.
    pub fn summary(&self, forced: bool) -> GateSummary {
        GateSummary {
            fixes: self.fixed().iter().map(|c| c.signature.clone()).collect(),
            fails: self.failing().iter().map(|c| c.signature.clone()).collect(),
            forced,
        }
    }
}

/// Replays `game`'s recent capsules on `target`. Blocks for as long as the
/// replays take: call it from a blocking thread.
pub fn check(sandbox: &Arc<Sandbox>, folder: &Folder, cfg: &CapsulesConfig, target: &GameModule) -> GateResult {
    let max_age = cfg.gate_max_age_hours.saturating_mul(3_600_000);
    let recent = folder.recent(&target.name, cfg.gate_capsules, max_age, crate::unix_ms());
    let mut result = GateResult::default();
    if recent.is_empty() {
        return result;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(r) => r,
        Err(e) => return GateResult::broken(format!("the gate cannot start its runtime: {e}")),
    };
    for (kept, path) in recent {
        let checked = |outcome: &str, detail: Option<String>| Checked {
            capsule: kept.file.clone(),
            signature: kept.signature.clone(),
            outcome: outcome.to_owned(),
            detail,
        };
        let capsule = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| Capsule::decode(&b).map_err(|e| e.to_string()))
        {
            Ok(c) if !c.redacted => c,
            // Nothing to replay: it proves nothing either way.
            Ok(_) => continue,
            Err(why) => {
                tracing::warn!(capsule = %path.display(), "the gate skips a capsule that does not read: {why}");
                result.checked.push(checked("unreadable", Some(why)));
                continue;
            }
        };
        let run = runtime.block_on(replay::run(sandbox, &target.code, &capsule));
        result.checked.push(match (run.setup, run.fault) {
            (Some(why), _) => checked("cannot_start", Some(why)),
            (None, Some((at, fault))) => checked(
                "faults",
                Some(format!(
                    "{} on input {at} of {}: {}",
                    fault.kind,
                    capsule.inputs.len(),
                    fault.signature
                )),
            ),
            (None, None) => checked("fixed", None),
        });
    }
    result
}
