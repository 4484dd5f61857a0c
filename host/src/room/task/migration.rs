//! Moving a live room to another version between two of its inputs:
//! snapshot, restore into a new instance, then switch on the coordinator's
//! word (all rooms or none).

use super::*;

impl RoomTask {
    /// Hot swap, between two inputs: snapshot the state, restore it into an
    /// instance of `module`, report, and switch only if told to commit.
    /// A room that cannot restore stays on its version and says why.
    pub(super) async fn swap(
        &mut self,
        guest: &mut GuestInstance,
        module: Arc<GameModule>,
        ready: oneshot::Sender<Result<(), MoveRefused>>,
        decision: oneshot::Receiver<bool>,
    ) -> Result<(), Stop> {
        if module.digest() == self.module.digest() {
            let _ = ready.send(Ok(()));
            let _ = decision.await;
            return Ok(());
        }
        let now = self.now();
        self.module.health.call();
        let state = match guest.snapshot(now).await {
            Ok(state) => state,
            Err(fault) => {
                let _ = ready.send(Err(MoveRefused {
                    room: self.label.clone(),
                    failure: RoomFailure::SnapshotTrapped {
                        version: self.module.version.to_string(),
                    },
                }));
                return self.restart(guest, fault, None).await;
            }
        };
        // Every room of the game moves at once, and each checkpoints after
        // it: shorten the span after that checkpoint by the seed again.
        self.stagger_next = true;
        // The snapshot is a good checkpoint whatever happens next: the
        // journal stays exact even if the snapshot call moved anything.
        let here = Checkpoint {
            state,
            entropy: guest.entropy_position(),
            now,
        };
        let next = match self.prepare(&module, now, &here.state).await {
            Ok(next) => next,
            Err(why) => {
                tracing::warn!(room = %self.label, "cannot move to {}: {why}", module.version);
                self.journal.reset(here);
                // Checkpoint again at once, so the room goes on fresh from
                // it as a replay would (see `go_on_fresh`).
                self.resync = true;
                let _ = ready.send(Err(MoveRefused {
                    room: self.label.clone(),
                    failure: why,
                }));
                let _ = decision.await;
                return Ok(());
            }
        };
        // The coordinator always decides (a dropped sender is an abort).
        let commit = ready.send(Ok(())).is_ok() && matches!(decision.await, Ok(true));
        if !commit {
            self.journal.reset(here);
            self.resync = true;
            return Ok(());
        }
        let from = std::mem::replace(&mut self.module, module);
        // A shadow compares against the version it started with.
        self.shadow = None;
        *guest = next;
        self.journal.reset(Checkpoint {
            entropy: guest.entropy_position(),
            ..here
        });
        *crate::lock(&self.running) = self.module.clone();
        tracing::Span::current().record("version", tracing::field::display(&self.module.version));
        self.apply_tick_request(guest);
        tracing::info!(room = %self.label, from = %from.version, to = %self.module.version, "room migrated");
        let frame = ServerMsg::Swapped {
            from: &from.version.to_string(),
            version: &self.module.version.to_string(),
        }
        .encode();
        self.broadcast(frame, None);
        // The database's checkpoint is the old version's, and the notice
        // is no input: checkpoint after this step.
        self.resync = true;
        self.settle(guest).await
    }

    /// An instance of `module` holding `state`, or why there cannot be one.
    pub(super) async fn prepare(
        &self,
        module: &GameModule,
        now: u64,
        state: &[u8],
    ) -> Result<GuestInstance, RoomFailure> {
        let mut next = self.instantiate(module, now, true).await?;
        module.health.call();
        let version = module.version.to_string();
        match next.restore(now, state).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => return Err(RoomFailure::RestoreRefused { version, why }),
            Err(fault) => {
                module.health.fault();
                return Err(RoomFailure::RestoreTrapped { version, fault });
            }
        }
        next.take_effects().for_each(drop);
        Ok(next)
    }
}
