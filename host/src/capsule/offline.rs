//! `respawn replay`: a capsule run on a laptop, without a host. The
//! module is verified against the trust keys given before anything runs;
//! the sandbox gets the limits the room had.

use super::replay::{self, Run};
use super::{Capsule, CapsuleError, Fault, Output};
use crate::modules::{TrustStore, VerifiedModule};
use crate::room::journal::Entry;
use crate::sandbox::Sandbox;
use serde::Serialize;
use std::path::Path;

/// What `respawn replay` concluded; each has its own exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The original module faulted again, the same way, on the same input
    /// (exit 0).
    Reproduced,
    /// The original module did not fault that way (exit 1).
    NotReproduced,
    /// The original module produced other outputs than the room did: a
    /// host bug (exit 4; 2 is a usage error).
    Diverged,
    /// The other module (`--module`) took every input without a fault
    /// (exit 0).
    Fixed,
    /// The other module faulted too (exit 1).
    StillFaults,
}

impl Verdict {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Verdict::Reproduced | Verdict::Fixed => 0,
            Verdict::NotReproduced | Verdict::StillFaults => 1,
            Verdict::Diverged => 4,
        }
    }
}

/// Exit code when nothing ran: an unreadable capsule, a module that does
/// not verify or belongs to another game.
pub const EXIT_REFUSED: u8 = 3;

/// Why a replay did not run.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The file could not be read.
    #[error("{path}: {why}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        why: String,
    },
    /// Not a usable capsule.
    #[error("{path}: {source}")]
    Capsule {
        /// The file.
        path: String,
        /// Why.
        source: CapsuleError,
    },
    /// A module's signature or manifest does not verify, or it does not
    /// compile for the game world.
    #[error("{what}: REJECTED ({code}): {why}")]
    Module {
        /// Which module.
        what: String,
        /// The rejection code.
        code: &'static str,
        /// Why.
        why: String,
    },
    /// The module is another game's.
    #[error("{what} is the game {found:?}, the capsule is of {expected:?}")]
    OtherGame {
        /// Which module.
        what: String,
        /// Its game.
        found: String,
        /// The capsule's.
        expected: String,
    },
    /// Payloads were redacted: there is nothing to replay.
    #[error("the capsule was redacted (capsules.redact): it shows the fault but cannot be replayed")]
    Redacted,
}

impl Refused {
    /// Stable code for `--json`.
    pub fn code(&self) -> &'static str {
        match self {
            Refused::Read { .. } => "unreadable",
            Refused::Capsule { source, .. } => source.code(),
            Refused::Module { code, .. } => code,
            Refused::OtherGame { .. } => "other_game",
            Refused::Redacted => "capsule_redacted",
        }
    }
}

/// Where a candidate's outputs first differ from the room's.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The input's index among the capsule's inputs.
    pub index: usize,
    /// The input.
    pub input: Entry,
    /// What the room produced (none: the failing input, or a fault).
    pub recorded: Option<Output>,
    /// What this run produced (none: it faulted there).
    pub produced: Option<Output>,
}

/// What the run at the failing input did.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AtFailing {
    /// Took it.
    Output {
        /// Its output.
        output: Output,
    },
    /// Faulted.
    Fault {
        /// The input it faulted on.
        at: usize,
        /// The fault.
        fault: Fault,
    },
    /// Could not start at the checkpoint.
    Setup {
        /// Why.
        why: String,
    },
}

/// One module's run of the capsule.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleRun {
    /// The module's version.
    pub version: String,
    /// Its digest.
    pub digest: String,
    /// Its signer.
    pub signer: Option<String>,
    /// What it did at the failing input (or where it stopped).
    pub at_failing_input: AtFailing,
    /// The first input whose output differs from the room's.
    pub first_difference: Option<Difference>,
    /// Inputs run per second (setup excluded).
    pub inputs_per_sec: f64,
}

/// The whole report (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The verdict.
    pub verdict: Verdict,
    /// The capsule's game.
    pub game: String,
    /// Its room.
    pub room: String,
    /// The version that faulted.
    pub faulted_version: String,
    /// Inputs in the capsule (the failing one included).
    pub inputs: usize,
    /// The recorded fault.
    pub fault: Fault,
    /// The run.
    pub run: ModuleRun,
}

fn read(path: &Path) -> Result<Vec<u8>, Refused> {
    std::fs::read(path).map_err(|e| Refused::Read {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// Reads and checks a capsule file.
pub fn load(path: &Path) -> Result<Capsule, Refused> {
    Capsule::decode(&read(path)?).map_err(|source| Refused::Capsule {
        path: path.display().to_string(),
        source,
    })
}

fn verify(trust: &TrustStore, bytes: Vec<u8>, what: &str, game: &str) -> Result<VerifiedModule, Refused> {
    let module = trust.verify(bytes, Path::new(what)).map_err(|e| Refused::Module {
        what: what.to_owned(),
        code: e.code(),
        why: e.to_string(),
    })?;
    if module.manifest().name != game {
        return Err(Refused::OtherGame {
            what: what.to_owned(),
            found: module.manifest().name.clone(),
            expected: game.to_owned(),
        });
    }
    Ok(module)
}

/// Replays `capsule` on its own module, or on `candidate` (the signed
/// bytes of another version, named `candidate_name`), after verifying the
/// module against `trust`.
pub fn replay(capsule: &Capsule, trust: &TrustStore, candidate: Option<(&str, Vec<u8>)>) -> Result<Report, Refused> {
    if capsule.redacted {
        return Err(Refused::Redacted);
    }
    let fixing = candidate.is_some();
    let module = match candidate {
        Some((name, bytes)) => verify(trust, bytes, name, &capsule.game)?,
        None => {
            let module = verify(trust, capsule.module.0.clone(), "the capsule's module", &capsule.game)?;
            if module.digest() != capsule.digest {
                return Err(Refused::Capsule {
                    path: "the capsule's module".into(),
                    source: CapsuleError::Incomplete(format!(
                        "its digest is {}, the capsule says {}",
                        module.digest(),
                        capsule.digest
                    )),
                });
            }
            module
        }
    };
    let refused = |code: &'static str, why: String| Refused::Module {
        what: format!("{} {}", capsule.game, module.manifest().version),
        code,
        why,
    };
    let sandbox = Sandbox::new(&crate::config::SandboxConfig {
        pooling: false,
        max_instances: 4,
        memory_mib: capsule.limits.memory_mib,
        call_timeout_ms: capsule.limits.call_timeout_ms,
    })
    .map_err(|e| refused("engine", e.to_string()))?;
    let code = sandbox.compile(&module).map_err(|e| refused(e.code(), e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| refused("runtime", e.to_string()))?;
    let started = std::time::Instant::now();
    let run = runtime.block_on(replay::run(&sandbox, &code, capsule));
    let secs = started.elapsed().as_secs_f64();
    let verdict = match (fixing, &run) {
        (
            true,
            Run {
                fault: None,
                setup: None,
                ..
            },
        ) => Verdict::Fixed,
        (true, _) => Verdict::StillFaults,
        (false, r) if diverges(r, capsule) => Verdict::Diverged,
        (false, r) if r.reproduces(capsule) => Verdict::Reproduced,
        (false, _) => Verdict::NotReproduced,
    };
    Ok(Report {
        verdict,
        game: capsule.game.clone(),
        room: capsule.room.clone(),
        faulted_version: capsule.module_version.clone(),
        inputs: capsule.inputs.len(),
        fault: capsule.fault.clone(),
        run: ModuleRun {
            version: module.manifest().version.to_string(),
            digest: module.digest().to_owned(),
            signer: module.signer().map(str::to_owned),
            at_failing_input: at_failing(&run, capsule),
            first_difference: difference(&run, capsule),
            inputs_per_sec: if secs > 0.0 {
                run.outputs.len() as f64 / secs
            } else {
                0.0
            },
        },
    })
}

/// Whether the original module's run left what the room sent before the
/// failing input (the digests the room kept as it ran, and the outputs
/// regenerated when the capsule was written): replay is broken.
fn diverges(run: &Run, capsule: &Capsule) -> bool {
    let before = capsule.live_digests.len().max(capsule.outputs.len());
    run.setup.is_some()
        || run.outputs.len() < before
        || run
            .outputs
            .iter()
            .zip(&capsule.live_digests)
            .any(|(out, live)| replay::digest(out) != *live)
        || run.outputs.iter().zip(&capsule.outputs).any(|(a, b)| a != b)
}

fn at_failing(run: &Run, capsule: &Capsule) -> AtFailing {
    if let Some(why) = &run.setup {
        return AtFailing::Setup { why: why.clone() };
    }
    if let Some((at, fault)) = &run.fault {
        return AtFailing::Fault {
            at: *at,
            fault: fault.clone(),
        };
    }
    match run.outputs.get(capsule.outputs.len()) {
        Some(output) => AtFailing::Output { output: output.clone() },
        // A fault while snapshotting that did not come back.
        None => AtFailing::Output {
            output: Output {
                answer: super::Answer::Ok,
                effects: Vec::new(),
            },
        },
    }
}

fn difference(run: &Run, capsule: &Capsule) -> Option<Difference> {
    let index = run.first_difference(&capsule.outputs).or_else(|| {
        // Same outputs up to the failing input: the failing input itself
        // differs (the room faulted there) unless this run faulted too.
        let at = capsule.outputs.len();
        (run.fault.is_none() && run.setup.is_none() && at < capsule.inputs.len()).then_some(at)
    })?;
    Some(Difference {
        index,
        input: capsule.inputs.get(index)?.clone(),
        recorded: capsule.outputs.get(index).cloned(),
        produced: run.outputs.get(index).cloned(),
    })
}
