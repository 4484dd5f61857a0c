//! A room's first instance (fresh, or recovered from the database), fresh
//! instances for restarts and moves, and saving the state when the host
//! stops.

use super::*;

impl RoomTask {
    /// The room's first instance and its first checkpoint: recovered from
    /// the database when the room is coming back after a restart.
    pub(super) async fn start(&mut self) -> Result<GuestInstance, JoinError> {
        if self.recovery.is_some() {
            return self.recover().await;
        }
        let now = self.now();
        let module = self.module.clone();
        let mut guest = self.instantiate(&module, now, true).await?;
        self.apply_tick_request(&mut guest);
        self.first_checkpoint(&mut guest, now).await?;
        Ok(guest)
    }

    /// Takes the checkpoint a room starts its journal from.
    /// Rooms opened or recovered together take theirs together: the span
    /// after it is shortened by the room's seed.
    pub(super) async fn first_checkpoint(&mut self, guest: &mut GuestInstance, now: u64) -> Result<(), JoinError> {
        self.stagger_next = true;
        match self.checkpoint_at(guest, now).await {
            Ok(()) => Ok(()),
            Err(fault) => {
                self.module.health.fault();
                tracing::error!(room = %self.label, version = %self.module.version, "snapshot failed at start: {fault}");
                Err(JoinError::Closed(
                    "the game's snapshot failed; the room could not start".into(),
                ))
            }
        }
    }

    /// A new instance of `module` for this room, initialised. Effects of
    /// `init` have no audience and are dropped; a tick request is kept for
    /// the caller to apply.
    /// `counted`: `init` counts among the version's calls and faults.
    pub(super) async fn instantiate(
        &self,
        module: &GameModule,
        now: u64,
        counted: bool,
    ) -> Result<GuestInstance, RoomFailure> {
        let rooms = &self.rooms;
        let mut guest = GuestInstance::new(
            &rooms.sandbox,
            &module.code,
            self.label.clone(),
            self.seed,
            self.space.clone(),
        )
        .await
        .inspect_err(|e| tracing::warn!(room = %self.label, version = %module.version, "cannot instantiate: {e}"))?;
        if counted {
            guest.count_in(self.metrics.clone());
        }
        let config = rooms.config.game_init_config(&self.key.game);
        if counted {
            module.health.call();
        }
        match guest.init(now, &self.key.room, &config).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(room = %self.label, version = %module.version, "init refused: {why}");
                return Err(RoomFailure::InitRefused(why));
            }
            Err(fault) => {
                // No player's input: the room's own source.
                if counted {
                    module
                        .health
                        .fault_by(crate::modules::version_health::Source::Room(self.id), fault.signature());
                }
                tracing::error!(room = %self.label, version = %module.version, kind = ?fault.kind, "guest fault in init: {}", fault.full());
                return Err(RoomFailure::InitTrapped(fault));
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// The host is stopping: save the state (with who was in the room and
    /// their seats) for the next start, tell the players, close. The game
    /// does not see the players leave: their seats wait for them to resume
    /// after the restart.
    ///
    /// `guest` is `None` for a sleeping room: its checkpoint is its state.
    pub(super) async fn shutdown(
        &mut self,
        guest: Option<&mut GuestInstance>,
        done: oneshot::Sender<()>,
    ) -> Result<(), Stop> {
        let now = self.now();
        let snapshot = match guest {
            Some(guest) => super::supervision::checkpoint_of(guest, now).await.map(Some),
            None => Ok(None),
        };
        match snapshot {
            Ok(checkpoint) => {
                if let Some(checkpoint) = checkpoint {
                    self.journal.reset(checkpoint);
                }
                self.drain_outbox().await;
                self.save_checkpoint(true);
                let flushed = match &self.rooms.store {
                    Some(store) => {
                        store
                            .flush(Duration::from_millis(self.rooms.config.shutdown.timeout_ms))
                            .await
                    }
                    None => false,
                };
                if flushed {
                    tracing::info!(room = %self.label, "room state saved for the next start");
                } else {
                    tracing::error!(room = %self.label, "cannot save the room state: storage is off or failing");
                }
            }
            Err(fault) => tracing::error!(room = %self.label, "snapshot at shutdown failed, state not saved: {fault}"),
        }
        for m in self.players.values_mut() {
            if let Some(to) = &m.outbound {
                let _ = to.try_send(ToSession::Shutdown);
            }
        }
        Err(Stop::Shutdown(done))
    }
}
