//! Runs a capsule's inputs on a module, the way the room ran them: a fresh
//! instance with the room's seed, `init` and `restore` at the checkpoint's
//! time, the random streams moved to where they stood, then every input
//! with the storage reads it made the first time. The same code serves
//! `respawn replay` (offline) and the hot-fix gate (in the host).

use super::{Answer, Capsule, Fault, Out, Output, Stage};
use crate::room::journal::{Entry, Input};
use crate::sandbox::{CallResult, GameCode, GuestInstance, Rejection, Sandbox};

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The outputs of the inputs the module took, in order.
    pub outputs: Vec<Output>,
    /// The fault, and the index of the input it struck on (the number of
    /// inputs when it struck taking the checkpoint after them).
    pub fault: Option<(usize, Fault)>,
    /// The module could not even start at the checkpoint (instantiate,
    /// `init` or `restore` failed): nothing ran.
    pub setup: Option<String>,
}

impl Run {
    /// Whether the run faulted the way `capsule` records, on the same
    /// input.
    pub fn reproduces(&self, capsule: &Capsule) -> bool {
        let at = match capsule.fault.stage {
            Stage::Input => capsule.inputs.len().saturating_sub(1),
            Stage::Snapshot => capsule.inputs.len(),
        };
        self.fault
            .as_ref()
            .is_some_and(|(i, f)| *i == at && f.same_as(&capsule.fault))
    }

    /// The first input whose output differs from `recorded`'s (a fault
    /// counts as a difference), if any, up to what both have.
    pub fn first_difference(&self, recorded: &[Output]) -> Option<usize> {
        let common = self.outputs.len().min(recorded.len());
        (0..common)
            .find(|&i| self.outputs[i] != recorded[i])
            .or_else(|| (self.outputs.len() < recorded.len()).then_some(self.outputs.len()))
    }
}

/// Hands one input to the guest (as the room does).
pub(crate) async fn call(guest: &mut GuestInstance, now: u64, input: &Input) -> CallResult<Result<(), Rejection>> {
    match input {
        Input::Join { player, name, user } => {
            let identity = user.as_ref().map(|u| crate::sandbox::Identity {
                user_id: u.id.clone(),
                claims: u.claims.clone(),
            });
            guest.on_join(now, *player, name, identity.as_ref()).await
        }
        Input::Leave { player } => guest.on_leave(now, *player).await.map(Ok),
        Input::Message { player, payload, .. } => guest.on_message(now, *player, payload).await,
        Input::Tick => guest.on_tick(now).await.map(Ok),
    }
}

/// The output of the call just made: its answer, effects and tick request.
pub(crate) fn output_of(guest: &mut GuestInstance, answer: Result<(), Rejection>) -> Output {
    let mut effects: Vec<Out> = guest.take_effects().map(Out::from).collect();
    if let Some(ms) = guest.take_tick_request() {
        effects.push(Out::Tick { ms });
    }
    Output {
        answer: match answer {
            Ok(()) => Answer::Ok,
            Err(r) => Answer::Rejected {
                code: r.code,
                message: r.message,
            },
        },
        effects,
    }
}

/// The output of the call just made, left in place for the room to
/// deliver.
pub(crate) fn peek_output(guest: &GuestInstance, answer: &Result<(), Rejection>) -> Output {
    let (effects, tick) = guest.pending();
    let mut effects: Vec<Out> = effects.iter().cloned().map(Out::from).collect();
    if let Some(ms) = tick {
        effects.push(Out::Tick { ms });
    }
    Output {
        answer: match answer {
            Ok(()) => Answer::Ok,
            Err(r) => Answer::Rejected {
                code: r.code.clone(),
                message: r.message.clone(),
            },
        },
        effects,
    }
}

/// A stable 64-bit digest of an output, which rooms keep for each input so
/// a capsule's regenerated outputs can be checked against what players
/// were sent.
pub fn digest(output: &Output) -> u64 {
    use sha2::Digest;
    let json = serde_json::to_vec(output).unwrap_or_default();
    let hash = sha2::Sha256::digest(&json);
    u64::from_le_bytes(hash[..8].try_into().unwrap_or_default())
}

/// Runs `inputs` from the capsule's checkpoint on `code`, stopping at the
/// first fault. `stage` says whether to take a checkpoint after them (a
/// fault while snapshotting).
pub async fn run_inputs(sandbox: &Sandbox, code: &GameCode, capsule: &Capsule, inputs: &[Entry], stage: Stage) -> Run {
    let mut run = Run::default();
    let label = format!("replay:{}/{}", capsule.game, capsule.room);
    let cp = &capsule.checkpoint;
    let mut guest = match GuestInstance::new(sandbox, code, label, capsule.seed, None).await {
        Ok(g) => g,
        Err(e) => {
            run.setup = Some(format!("cannot instantiate: {e}"));
            return run;
        }
    };
    match guest.init(cp.now, &capsule.room, &capsule.init_config.0).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            run.setup = Some(format!("init refused: {why}"));
            return run;
        }
        Err(f) => {
            run.setup = Some(format!("init trapped: {}", f.detail));
            return run;
        }
    }
    guest.take_effects().for_each(drop);
    guest.take_tick_request();
    match guest.restore(cp.now, &cp.state.0).await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            run.setup = Some(format!("restore refused: {why}"));
            return run;
        }
        Err(f) => {
            run.setup = Some(format!("restore trapped: {}", f.detail));
            return run;
        }
    }
    guest.take_effects().for_each(drop);
    guest.take_tick_request();
    guest.seek_entropy(cp.entropy);
    for (i, entry) in inputs.iter().enumerate() {
        guest.replaying(entry.reads.clone());
        match call(&mut guest, entry.now, &entry.input).await {
            Ok(answer) => {
                guest.take_kv();
                run.outputs.push(output_of(&mut guest, answer));
            }
            Err(fault) => {
                run.fault = Some((i, Fault::of(&fault, Stage::Input)));
                return run;
            }
        }
    }
    if stage == Stage::Snapshot {
        let now = inputs.last().map_or(cp.now, |e| e.now);
        if let Err(fault) = guest.snapshot(now).await {
            run.fault = Some((inputs.len(), Fault::of(&fault, Stage::Snapshot)));
        }
    }
    run
}

/// Runs every input of `capsule` on `code`.
pub async fn run(sandbox: &Sandbox, code: &GameCode, capsule: &Capsule) -> Run {
    run_inputs(sandbox, code, capsule, &capsule.inputs, capsule.fault.stage).await
}
