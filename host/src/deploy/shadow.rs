//! Shadow runs (`respawn shadow`): a candidate version is fed copies of
//! live rooms' inputs, starting from each room's checkpoint, and its
//! outputs are compared with the active version's input by input. It runs
//! on a thread of its own and its outputs go nowhere: a room hands each
//! input over with a non-blocking send and never waits for the shadow (a
//! shadow that falls behind is dropped and says so).

use crate::capsule::replay::{Replayer, Start, digest};
use crate::capsule::{CapsuleCheckpoint, Fault, Output};
use crate::modules::GameModule;
use crate::room::journal::Entry;
use crate::sandbox::Sandbox;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc;

/// Inputs a room may be ahead of its shadow before the shadow is dropped.
const BACKLOG: usize = 4096;

/// What a room hands its shadow.
pub(crate) enum Fed {
    /// Where to start: the room's checkpoint and the inputs since, with
    /// digests of what the active version produced for them.
    Start {
        kv: crate::storage::kv::KvLimits,
        seed: u64,
        init_config: Vec<u8>,
        checkpoint: CapsuleCheckpoint,
        entries: Vec<Entry>,
        digests: Vec<u64>,
    },
    /// An input the active version took, and what it produced.
    Input { entry: Entry, output: Output },
}

/// A room's end of its shadow.
pub(crate) struct Feed {
    tx: mpsc::Sender<Fed>,
    behind: Arc<AtomicBool>,
}

impl Feed {
    /// Hands over without waiting; `false` once the shadow is gone or
    /// fell behind (the room then stops feeding it).
    pub(crate) fn offer(&self, fed: Fed) -> bool {
        match self.tx.try_send(fed) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.behind.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// Where the candidate first differed from the active version.
#[derive(Debug, Clone, Serialize)]
pub struct Divergence {
    /// The input's index since the shadow started from the checkpoint.
    pub index: usize,
    /// The input.
    pub input: Entry,
    /// What the active version produced (none for inputs taken before
    /// the shadow started: only their digest is kept).
    pub active: Option<Output>,
    /// What the candidate produced.
    pub candidate: Output,
}

/// One room's shadow.
#[derive(Debug, Clone, Serialize)]
pub struct RoomReport {
    /// The room.
    pub room: String,
    /// Inputs both versions took.
    pub inputs: usize,
    /// The first input whose outputs differ.
    pub first_divergence: Option<Divergence>,
    /// The candidate's fault, and the input it struck on.
    pub fault: Option<(usize, Fault)>,
    /// The candidate could not start at the room's checkpoint.
    pub setup: Option<String>,
    /// The room got ahead of its shadow by more than the backlog; the
    /// comparison stopped there.
    pub fell_behind: bool,
}

/// A whole shadow run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The game.
    pub game: String,
    /// The active version, as the shadow started.
    pub active: String,
    /// The candidate.
    pub candidate: String,
    /// How long it ran, in seconds.
    pub secs: f64,
    /// Each room.
    pub rooms: Vec<RoomReport>,
}

/// Runs shadows of `candidate` for the rooms whose feeds are returned,
/// until `until`; `report` gets every room's report at the end.
pub(crate) fn start(
    sandbox: Arc<Sandbox>,
    candidate: Arc<GameModule>,
    rooms: Vec<String>,
    until: std::time::Instant,
) -> std::io::Result<(Vec<Feed>, std::thread::JoinHandle<Vec<RoomReport>>)> {
    let mut feeds = Vec::new();
    let mut ends = Vec::new();
    for room in rooms {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let behind = Arc::new(AtomicBool::new(false));
        feeds.push(Feed {
            tx,
            behind: behind.clone(),
        });
        ends.push((room, rx, behind));
    }
    let until = tokio::time::Instant::from_std(until);
    let thread = std::thread::Builder::new()
        .name("respawn-shadow".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!("the shadow run cannot start its runtime: {e}");
                    return Vec::new();
                }
            };
            runtime.block_on(async {
                let tasks: Vec<_> = ends
                    .into_iter()
                    .map(|(room, rx, behind)| {
                        let (sandbox, candidate) = (sandbox.clone(), candidate.clone());
                        tokio::spawn(shadow_room(sandbox, candidate, room, rx, behind, until))
                    })
                    .collect();
                let mut reports = Vec::new();
                for t in tasks {
                    if let Ok(r) = t.await {
                        reports.push(r);
                    }
                }
                reports
            })
        })?;
    Ok((feeds, thread))
}

async fn shadow_room(
    sandbox: Arc<Sandbox>,
    candidate: Arc<GameModule>,
    room: String,
    mut rx: mpsc::Receiver<Fed>,
    behind: Arc<AtomicBool>,
    until: tokio::time::Instant,
) -> RoomReport {
    let mut report = RoomReport {
        room: room.clone(),
        inputs: 0,
        first_divergence: None,
        fault: None,
        setup: None,
        fell_behind: false,
    };
    let mut replayer = None::<Replayer>;
    while let Ok(Some(fed)) = tokio::time::timeout_at(until, rx.recv()).await {
        match fed {
            Fed::Start {
                kv,
                seed,
                init_config,
                checkpoint,
                entries,
                digests,
            } => {
                let label = format!("shadow:{}/{room}", candidate.name);
                let at = Start {
                    game: &candidate.name,
                    room: &room,
                    seed,
                    init_config: &init_config,
                    checkpoint: &checkpoint,
                    kv,
                };
                // The old instance goes first: a restart (the room went on
                // fresh) never holds two of the pool's slots.
                drop(replayer.take());
                match Replayer::start(&sandbox, &candidate.code, label, at).await {
                    Ok(r) => replayer = Some(r),
                    Err(why) => {
                        report.setup = Some(why);
                        break;
                    }
                }
                for (entry, live) in entries.into_iter().zip(digests) {
                    if !step(replayer.as_mut(), &mut report, entry, |out| digest(out) == live, None).await {
                        break;
                    }
                }
            }
            Fed::Input { entry, output } => {
                let same = |out: &Output| *out == output;
                if !step(replayer.as_mut(), &mut report, entry, same, Some(output.clone())).await {
                    break;
                }
            }
        }
        if report.fault.is_some() {
            break;
        }
    }
    report.fell_behind = behind.load(Ordering::Relaxed);
    report
}

/// Runs one input on the candidate and compares; `false` to stop.
async fn step(
    replayer: Option<&mut Replayer>,
    report: &mut RoomReport,
    entry: Entry,
    same: impl Fn(&Output) -> bool,
    active: Option<Output>,
) -> bool {
    let Some(replayer) = replayer else { return false };
    let index = report.inputs;
    match replayer.step(&entry).await {
        Ok(out) => {
            report.inputs += 1;
            if report.first_divergence.is_none() && !same(&out) {
                report.first_divergence = Some(Divergence {
                    index,
                    input: entry,
                    active,
                    candidate: out,
                });
            }
            true
        }
        Err(fault) => {
            report.fault = Some((index, fault));
            false
        }
    }
}
