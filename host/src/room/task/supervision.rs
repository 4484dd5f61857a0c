//! Keeping the guest alive: every input applied and journaled, a trap
//! answered by a rebuild from the last checkpoint and the journal, a room
//! that keeps failing closed with a crash report.

use super::*;
use crate::modules::version_health::Source;
use crate::sandbox::InstantiateError;

use crate::capsule::replay::{call, digest_pending, peek_output};

/// Goes on with `fresh` (of the same code) in place of `guest`, and with
/// its guest profiler, if one is sampling.
fn adopt(guest: &mut GuestInstance, mut fresh: GuestInstance) {
    fresh.put_profiler(guest.take_profiler());
    *guest = fresh;
}

/// The guest's state and random positions now.
pub(super) async fn checkpoint_of(guest: &mut GuestInstance, now: u64) -> CallResult<Checkpoint> {
    let state = guest.snapshot(now).await?;
    guest.take_effects().for_each(drop);
    Ok(Checkpoint {
        state,
        entropy: guest.entropy_position(),
        now,
    })
}

impl RoomTask {
    /// Who caused a call on `input`: its player, or this room (a tick).
    pub(super) fn source_of(&self, input: &Input) -> Source {
        input.player().map_or(Source::Room(self.id), Source::Player)
    }

    /// Applies one input. `Some(answer)` if the guest took it (it is
    /// journaled); `None` if the guest failed on it and was restarted
    /// without it.
    pub(super) async fn apply(
        &mut self,
        guest: &mut GuestInstance,
        input: Input,
    ) -> Result<Option<Result<(), Rejection>>, Stop> {
        let now = self.now();
        self.module.health.call();
        self.stats.calls += 1;
        self.stats.last_input_ms = now;
        let started = std::time::Instant::now();
        let result = call(guest, now, &input).await;
        self.module.health.took(started.elapsed(), self.source_of(&input));
        match result {
            Ok(answer) => {
                let kv = guest.take_kv();
                let entry = Entry {
                    now,
                    input,
                    reads: kv.reads,
                };
                self.persist(&entry, kv.writes);
                let produced = digest_pending(guest, &answer);
                if self.shadow.is_some() {
                    let output = peek_output(guest, &answer);
                    self.feed_shadow(&entry, output);
                }
                self.journal.record(entry, produced);
                Ok(Some(answer))
            }
            Err(fault) => {
                // What it read before it failed, so its capsule replays it.
                let failed = Entry {
                    now,
                    input,
                    reads: guest.take_failed_reads(),
                };
                self.restart(guest, fault, Some(failed)).await?;
                Ok(None)
            }
        }
    }

    /// Takes a new checkpoint; the journal starts over.
    pub(super) async fn checkpoint(&mut self, guest: &mut GuestInstance) -> Result<(), Stop> {
        let now = self.now();
        match self.checkpoint_at(guest, now).await {
            Ok(()) => Ok(()),
            Err(fault) => self.restart(guest, fault, None).await,
        }
    }

    /// Snapshots the guest at `now` as the journal's new starting point,
    /// and hands it to the store.
    pub(super) async fn checkpoint_at(&mut self, guest: &mut GuestInstance, now: u64) -> CallResult<()> {
        self.module.health.call();
        let cp = checkpoint_of(guest, now).await?;
        self.journal.reset(cp);
        if std::mem::take(&mut self.stagger_next) && self.rooms.config.supervision.stagger_checkpoints {
            // Not the seed itself: its bits also seed the guest's WASI
            // random streams.
            self.journal
                .stagger(self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32);
        }
        self.save_checkpoint(false);
        self.on_checkpoint = false;
        if self.rooms.config.supervision.fresh_at_checkpoint {
            self.go_on_fresh(guest).await;
        }
        Ok(())
    }

    /// Replaces the live instance with the one a replay from the checkpoint
    /// just taken builds (a fresh instance, restored), so the room's next
    /// inputs run on the same memory in the room, in its restarts and in a
    /// capsule's replay. If that fails the room goes on in the old one: it
    /// keeps serving, and a restart from this checkpoint would fail the
    /// same way, which the log says (once until it works again).
    async fn go_on_fresh(&mut self, guest: &mut GuestInstance) {
        match self.rebuild(false).await {
            Ok(mut fresh) => {
                // Its own init and restore were bookkeeping; the players'
                // calls from now on count.
                fresh.count_in(self.metrics.clone());
                adopt(guest, fresh);
                self.stale_instance = false;
                self.on_checkpoint = true;
                self.restart_shadow();
            }
            // No free slot right now: the next checkpoint tries again.
            Err(RoomFailure::Instantiate(InstantiateError::PoolExhausted(why))) => {
                tracing::debug!(room = %self.label, "no instance slot to go on fresh from the checkpoint; the room keeps its instance: {why}");
            }
            // Said once, and counted once against the version, until it
            // works again: players saw no fault.
            Err(why) if !std::mem::replace(&mut self.stale_instance, true) => {
                // (Nothing is replayed here: the journal was just reset.)
                if let Some(fault) = why.fault() {
                    self.module.health.fault_by(Source::Room(self.id), fault.signature());
                }
                tracing::warn!(room = %self.label, version = %self.module.version, "cannot go on in a fresh instance restored from the checkpoint (a restart would fail the same way): {why}");
            }
            Err(_) => {}
        }
    }

    /// The guest failed: replace it with a fresh instance at the last good
    /// state and tell the players, unless the room restarts too often.
    pub(super) async fn restart(
        &mut self,
        guest: &mut GuestInstance,
        fault: GuestFault,
        failed: Option<Entry>,
    ) -> Result<(), Stop> {
        let source = failed
            .as_ref()
            .map_or(Source::Room(self.id), |e| self.source_of(&e.input));
        self.module.health.fault_by(source, fault.signature());
        self.stats.faults += 1;
        self.leave_capsule(&fault, failed.as_ref());
        let sup = &self.rooms.config.supervision;
        let window = Duration::from_millis(sup.window_ms);
        let now = Instant::now();
        while self.restarts.front().is_some_and(|t| now.duration_since(*t) > window) {
            self.restarts.pop_front();
        }
        if self.restarts.len() >= sup.max_restarts as usize {
            return Err(Stop::Crashed(Box::new(Crash {
                reason: "restart_intensity",
                fault,
                restart_error: None,
                failed,
            })));
        }
        self.restarts.push_back(now);
        tracing::warn!(room = %self.label, version = %self.module.version, kind = fault.kind.code(), "guest fault, restarting the room: {}", fault.full());
        match self.rebuild(true).await {
            Ok(fresh) => adopt(guest, fresh),
            Err(why) => {
                return Err(Stop::Crashed(Box::new(Crash {
                    reason: "restart_failed",
                    fault,
                    restart_error: Some(why),
                    failed,
                })));
            }
        }
        self.module.health.restart();
        self.metrics.restarts.inc();
        self.stats.restarts += 1;
        tracing::info!(room = %self.label, replayed = self.journal.entries().len(), "room restarted from its checkpoint");
        let frame = ServerMsg::Restarted {
            version: &self.module.version.to_string(),
            reason: fault.kind.code(),
        }
        .encode();
        self.broadcast(frame, None);
        // The notice is no input: a checkpoint after it keeps a recovered
        // room's numbering of frames (`seq`) in step with the players'.
        self.resync = true;
        Ok(())
    }

    /// A fresh instance at the checkpoint, with the journal replayed.
    /// Effects of the replay were delivered the first time and are dropped.
    /// `counted`: its `init` counts among the version's calls and faults
    /// (a restart's does; going on fresh at a checkpoint is bookkeeping).
    pub(super) async fn rebuild(&mut self, counted: bool) -> Result<GuestInstance, RoomFailure> {
        let module = self.module.clone();
        let now = self.journal.checkpoint().now;
        let mut fresh = self.instantiate(&module, now, counted).await?;
        let cp = self.journal.checkpoint();
        let version = || module.version.to_string();
        match fresh.restore(now, &cp.state).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                return Err(RoomFailure::RestoreRefused {
                    version: version(),
                    why,
                });
            }
            Err(fault) => {
                return Err(RoomFailure::RestoreTrapped {
                    version: version(),
                    fault,
                });
            }
        }
        fresh.seek_entropy(cp.entropy);
        // Each call starts with no effects; only the last call's are left.
        for entry in self.journal.entries() {
            fresh.replaying(entry.reads.clone());
            if let Err(fault) = call(&mut fresh, entry.now, &entry.input).await {
                return Err(RoomFailure::ReplayTrapped { at: entry.now, fault });
            }
        }
        fresh.take_effects().for_each(drop);
        fresh.take_kv();
        if fresh.take_divergence() {
            tracing::error!(room = %self.label, "the replay read the game's storage differently from the first run: a nondeterministic game or a host bug");
        }
        fresh.take_tick_request();
        Ok(fresh)
    }

    /// Logs, counts and writes a crash report.
    pub(super) fn report(&self, crash: &Crash) {
        self.module.health.crash();
        self.metrics.crashes.inc();
        let at_ms = crate::unix_ms();
        let cp = self.journal.checkpoint();
        let restart_error = crash.restart_error.as_ref().map(ToString::to_string);
        let fault = crash.fault.full();
        let report = CrashReport {
            game: &self.key.game,
            room: &self.key.room,
            version: self.module.version.to_string(),
            digest: self.module.digest(),
            seed: self.seed,
            at_ms,
            reason: crash.reason,
            fault_kind: crash.fault.kind.code(),
            fault: &fault,
            restart_error: restart_error.as_deref(),
            restarts_in_window: self.restarts.len(),
            failed_input: crash.failed.as_ref(),
            checkpoint_hex: if cp.state.len() <= crash::MAX_CHECKPOINT_BYTES {
                crate::util::hex(&cp.state)
            } else {
                format!("(left out: {} bytes)", cp.state.len())
            },
            checkpoint_entropy: cp.entropy,
            checkpoint_now: cp.now,
            inputs_since_checkpoint: self.journal.entries(),
        };
        tracing::error!(
            room = %self.label,
            version = %self.module.version,
            reason = crash.reason,
            kind = crash.fault.kind.code(),
            restart_error = restart_error.as_deref(),
            "room crashed and closed: {fault}"
        );
        let version = self.module.version.to_string();
        let redact = self.rooms.config.capsules.redact;
        crate::crash_events::report(&crate::crash_events::Crash {
            game: &self.key.game,
            room: &self.key.room,
            version: &version,
            reason: crash.reason,
            kind: crash.fault.kind.code(),
            // What the guest said may quote a player: not when inputs are
            // kept from the crash service.
            message: if redact { &crash.fault.detail } else { &fault },
            frames: crash.fault.frames().collect(),
            inputs: self.journal.entries().iter().chain(crash.failed.as_ref()).collect(),
            redact,
        });
        let (file, text) = match crash::render(&self.rooms.config.state.dir, &self.key, &report) {
            Ok(rendered) => rendered,
            Err(e) => {
                tracing::error!(room = %self.label, "cannot render the crash report: {e}");
                return;
            }
        };
        let label = self.label.clone();
        tokio::task::spawn_blocking(move || match crash::write(&file, &text, crash::MAX_REPORTS) {
            Ok(deleted) => tracing::error!(
                room = %label,
                report = %file.display(),
                older_reports_deleted = deleted,
                "crash report written (the newest {} are kept)",
                crash::MAX_REPORTS
            ),
            Err(e) => tracing::error!(room = %label, "cannot write the crash report: {e}"),
        });
    }
}
