//! Runs a capsule's inputs on a module, the way the room ran them: a fresh
//! instance with the room's seed, `init` and `restore` at the checkpoint's
//! time, the random streams moved to where they stood, then every input
//! with the storage reads it made the first time. The same code serves
//! `respawn replay` (offline) and the hot-fix gate (in the host).

use super::{Answer, Capsule, Fault, Out, Output, Stage};
use crate::room::journal::{Entry, Input};
use crate::sandbox::{CallResult, Effect, GameCode, GuestInstance, Rejection, Sandbox};

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

/// An output from its parts.
fn assemble(answer: &Result<(), Rejection>, effects: impl IntoIterator<Item = Effect>, tick: Option<u32>) -> Output {
    let mut effects: Vec<Out> = effects.into_iter().map(Out::from).collect();
    effects.extend(tick.map(|ms| Out::Tick { ms }));
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

/// The output of the call just made: its answer, effects and tick request.
pub(crate) fn output_of(guest: &mut GuestInstance, answer: Result<(), Rejection>) -> Output {
    let tick = guest.take_tick_request();
    assemble(&answer, guest.take_effects(), tick)
}

/// The output of the call just made, left in place for the room to
/// deliver.
pub(crate) fn peek_output(guest: &GuestInstance, answer: &Result<(), Rejection>) -> Output {
    let (effects, tick) = guest.pending();
    assemble(answer, effects.iter().cloned(), tick)
}

/// Feeds an output, piece by piece, to a digest: the same bytes whether
/// it is read from the guest's pending effects (the room, on every input)
/// or from an [`Output`] (a replay).
struct Hasher(sha2::Sha256);

impl Hasher {
    fn new() -> Self {
        use sha2::Digest;
        Self(sha2::Sha256::new())
    }
    fn bytes(&mut self, b: &[u8]) {
        use sha2::Digest;
        self.0.update((b.len() as u64).to_le_bytes());
        self.0.update(b);
    }
    fn num(&mut self, n: u64) {
        use sha2::Digest;
        self.0.update(n.to_le_bytes());
    }
    fn answer(&mut self, code_message: Option<(&str, &str)>) {
        match code_message {
            None => self.num(0),
            Some((code, message)) => {
                self.num(1);
                self.bytes(code.as_bytes());
                self.bytes(message.as_bytes());
            }
        }
    }
    fn send(&mut self, to: u64, payload: &str) {
        self.num(10);
        self.num(to);
        self.bytes(payload.as_bytes());
    }
    fn broadcast(&mut self, payload: &str, except: Option<u64>) {
        self.num(11);
        self.bytes(payload.as_bytes());
        self.num(except.map_or(0, |e| e + 1));
    }
    fn kick(&mut self, player: u64, reason: &str) {
        self.num(12);
        self.num(player);
        self.bytes(reason.as_bytes());
    }
    fn tick(&mut self, ms: u32) {
        self.num(13);
        self.num(u64::from(ms));
    }
    fn finish(self) -> u64 {
        use sha2::Digest;
        let hash = self.0.finalize();
        u64::from_le_bytes(hash[..8].try_into().unwrap_or_default())
    }
}

/// A stable 64-bit digest of an output, which rooms keep for each input so
/// a capsule's regenerated outputs can be checked against what players
/// were sent.
pub fn digest(output: &Output) -> u64 {
    let mut h = Hasher::new();
    h.answer(match &output.answer {
        Answer::Ok => None,
        Answer::Rejected { code, message } => Some((code, message)),
    });
    for e in &output.effects {
        match e {
            Out::Send { to, payload } => h.send(*to, payload),
            Out::Broadcast { payload, except } => h.broadcast(payload, *except),
            Out::Kick { player, reason } => h.kick(*player, reason),
            Out::Tick { ms } => h.tick(*ms),
        }
    }
    h.finish()
}

/// [`digest`] of the call just made, read in place (no copy of its
/// effects): what the room keeps for every input.
pub(crate) fn digest_pending(guest: &GuestInstance, answer: &Result<(), Rejection>) -> u64 {
    let mut h = Hasher::new();
    h.answer(answer.as_ref().err().map(|r| (r.code.as_str(), r.message.as_str())));
    let (effects, tick) = guest.pending();
    for e in effects {
        match e {
            Effect::Send { to, payload } => h.send(*to, &String::from_utf8_lossy(payload)),
            Effect::Broadcast { payload, except } => h.broadcast(&String::from_utf8_lossy(payload), *except),
            Effect::Kick { player, reason } => h.kick(*player, reason),
        }
    }
    if let Some(ms) = tick {
        h.tick(ms);
    }
    h.finish()
}

/// Where a [`Replayer`] starts: the room as it was at a checkpoint.
pub struct Start<'a> {
    /// The game.
    pub game: &'a str,
    /// The room's name (`init` gets it).
    pub room: &'a str,
    /// The room's random seed.
    pub seed: u64,
    /// What the room's `init` got.
    pub init_config: &'a [u8],
    /// The checkpoint.
    pub checkpoint: &'a super::CapsuleCheckpoint,
    /// The game-storage limits the room had.
    pub kv: crate::storage::kv::KvLimits,
}

/// A fresh instance brought to a room's checkpoint, taking inputs one at
/// a time (the shadow run feeds it live; a capsule replay, its inputs).
pub struct Replayer {
    guest: GuestInstance,
}

impl Replayer {
    /// Instantiates `code` with the room's seed, runs `init` and `restore`
    /// at the checkpoint's time and moves the random streams to where they
    /// stood. `Err`: why it could not start there.
    pub async fn start(sandbox: &Sandbox, code: &GameCode, label: String, at: Start<'_>) -> Result<Self, String> {
        let Start {
            game,
            room,
            seed,
            init_config,
            checkpoint: cp,
            kv,
        } = at;
        // Storage reads come from the record; a scratch space checks the
        // writes' sizes as the room's space did, and keeps nothing.
        let space = crate::storage::kv::GameSpace::scratch(game, kv);
        let mut guest = GuestInstance::new(sandbox, code, label, seed, Some(space))
            .await
            .map_err(|e| format!("cannot instantiate: {e}"))?;
        match guest.init(cp.now, room, init_config).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("init refused: {why}")),
            Err(f) => return Err(format!("init trapped: {}", f.full())),
        }
        guest.take_effects().for_each(drop);
        guest.take_tick_request();
        match guest.restore(cp.now, &cp.state.0).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(format!("restore refused: {why}")),
            Err(f) => return Err(format!("restore trapped: {}", f.full())),
        }
        guest.take_effects().for_each(drop);
        guest.take_tick_request();
        guest.seek_entropy(cp.entropy);
        Ok(Self { guest })
    }

    /// Runs one input with the storage reads it made the first time.
    pub async fn step(&mut self, entry: &Entry) -> Result<Output, Fault> {
        self.guest.replaying(entry.reads.clone());
        match call(&mut self.guest, entry.now, &entry.input).await {
            Ok(answer) => {
                self.guest.take_kv();
                Ok(output_of(&mut self.guest, answer))
            }
            Err(fault) => Err(Fault::of(&fault, Stage::Input)),
        }
    }

    /// Takes a checkpoint at `now`, as the room does.
    pub async fn snapshot(&mut self, now: u64) -> Result<(), Fault> {
        self.guest
            .snapshot(now)
            .await
            .map(drop)
            .map_err(|f| Fault::of(&f, Stage::Snapshot))
    }
}

/// Runs `inputs` from the capsule's checkpoint on `code`, stopping at the
/// first fault. `stage` says whether to take a checkpoint after them (a
/// fault while snapshotting).
pub async fn run_inputs(sandbox: &Sandbox, code: &GameCode, capsule: &Capsule, inputs: &[Entry], stage: Stage) -> Run {
    let mut run = Run::default();
    let label = format!("replay:{}/{}", capsule.game, capsule.room);
    let started = Replayer::start(
        sandbox,
        code,
        label,
        Start {
            game: &capsule.game,
            room: &capsule.room,
            seed: capsule.seed,
            init_config: &capsule.init_config.0,
            checkpoint: &capsule.checkpoint,
            kv: capsule.limits.kv(),
        },
    )
    .await;
    let mut replayer = match started {
        Ok(r) => r,
        Err(why) => {
            run.setup = Some(why);
            return run;
        }
    };
    for (i, entry) in inputs.iter().enumerate() {
        match replayer.step(entry).await {
            Ok(output) => run.outputs.push(output),
            Err(fault) => {
                run.fault = Some((i, fault));
                return run;
            }
        }
    }
    if stage == Stage::Snapshot {
        let now = inputs.last().map_or(capsule.checkpoint.now, |e| e.now);
        if let Err(fault) = replayer.snapshot(now).await {
            run.fault = Some((inputs.len(), fault));
        }
    }
    run
}

/// Runs every input of `capsule` on `code`.
pub async fn run(sandbox: &Sandbox, code: &GameCode, capsule: &Capsule) -> Run {
    run_inputs(sandbox, code, capsule, &capsule.inputs, capsule.fault.stage).await
}
