//! A room's first instance (with the state a graceful shutdown saved),
//! fresh instances for restarts and moves, and saving the state when the
//! host stops.

use super::*;

impl RoomTask {
    /// The room's first instance, with the state saved at the last
    /// shutdown if there is one, and its first checkpoint.
    pub(super) async fn start(&mut self) -> Result<GuestInstance, JoinError> {
        let now = self.now();
        let module = self.module.clone();
        let mut guest = self.instantiate(&module, now).await?;
        let dir = &self.rooms.config.state.dir;
        if let Some(saved) = crate::blocking::blocking(|| persist::load(dir, &self.key)) {
            guest = self.restore_saved(guest, saved, now).await?;
        }
        self.apply_tick_request(&mut guest);
        self.module.health.call();
        match checkpoint_of(&mut guest, now).await {
            Ok(cp) => self.journal.reset(cp),
            Err(fault) => {
                self.module.health.fault();
                tracing::error!(room = %self.label, version = %module.version, "snapshot failed at start: {fault}");
                return Err(JoinError::Closed(
                    "the game's snapshot failed; the room could not start".into(),
                ));
            }
        }
        Ok(guest)
    }

    /// Puts back the state a graceful shutdown saved; the players of then
    /// are gone, so the game is told they left. If the game cannot take
    /// the state, the room starts fresh.
    pub(super) async fn restore_saved(
        &mut self,
        mut guest: GuestInstance,
        saved: SavedRoom,
        now: u64,
    ) -> Result<GuestInstance, JoinError> {
        let written_by = saved.version.clone().unwrap_or_else(|| "an unknown version".into());
        if saved.digest.as_deref().is_some_and(|d| d != self.module.digest()) {
            tracing::info!(room = %self.label, from = %written_by, to = %self.module.version, "restoring state saved by another version");
        }
        let put_back: CallResult<Result<(), String>> = async {
            if let Err(why) = guest.restore(now, &saved.state).await? {
                return Ok(Err(why));
            }
            for player in saved.players {
                guest.on_leave(now, player).await?;
            }
            Ok(Ok(()))
        }
        .await;
        let dir = &self.rooms.config.state.dir;
        match put_back {
            Ok(Ok(())) => {
                crate::blocking::blocking(|| persist::restored(dir, &self.key));
                tracing::info!(room = %self.label, "room state restored from the last shutdown");
            }
            Ok(Err(why)) => {
                let why = format!("{} refused the state {written_by} saved: {why}", self.module.version);
                crate::blocking::blocking(|| persist::set_aside(dir, &self.key, &why));
            }
            Err(fault) => {
                let why = format!("putting back the state {written_by} saved trapped: {fault}");
                crate::blocking::blocking(|| persist::set_aside(dir, &self.key, &why));
                let module = self.module.clone();
                return Ok(self.instantiate(&module, now).await?);
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// A new instance of `module` for this room, initialised. Effects of
    /// `init` have no audience and are dropped; a tick request is kept for
    /// the caller to apply.
    pub(super) async fn instantiate(&self, module: &GameModule, now: u64) -> Result<GuestInstance, RoomFailure> {
        let rooms = &self.rooms;
        let mut guest = GuestInstance::new(&rooms.sandbox, &module.code, self.label.clone(), self.seed)
            .await
            .inspect_err(
                |e| tracing::warn!(room = %self.label, version = %module.version, "cannot instantiate: {e}"),
            )?;
        let config = rooms.config.game_init_config(&self.key.game);
        module.health.call();
        match guest.init(now, &self.key.room, &config).await {
            Ok(Ok(())) => {}
            Ok(Err(why)) => {
                tracing::warn!(room = %self.label, version = %module.version, "init refused: {why}");
                return Err(RoomFailure::InitRefused(why));
            }
            Err(fault) => {
                // No player's input: the room's own source.
                module
                    .health
                    .fault_by(crate::modules::version_health::Source::Room(self.id), fault.signature());
                tracing::error!(room = %self.label, version = %module.version, kind = ?fault.kind, "guest fault in init: {}", fault.detail);
                return Err(RoomFailure::InitTrapped(fault));
            }
        }
        guest.take_effects().for_each(drop);
        Ok(guest)
    }

    /// The host is stopping: save the state for the next start, tell the
    /// players, close. The game does not see the players leave.
    pub(super) async fn shutdown(&mut self, guest: &mut GuestInstance, done: oneshot::Sender<()>) -> Result<(), Stop> {
        let now = self.now();
        match guest.snapshot(now).await {
            Ok(state) => {
                let saved = SavedRoom {
                    players: self.players.keys().copied().collect(),
                    state,
                    version: Some(self.module.version.to_string()),
                    digest: Some(self.module.digest().to_owned()),
                };
                let dir = &self.rooms.config.state.dir;
                match crate::blocking::blocking(|| persist::save(dir, &self.key, &saved)) {
                    Ok(()) => tracing::info!(room = %self.label, "room state saved for the next start"),
                    Err(e) => tracing::error!(room = %self.label, "cannot save the room state: {e}"),
                }
            }
            Err(fault) => tracing::error!(room = %self.label, "snapshot at shutdown failed, state not saved: {fault}"),
        }
        for m in self.players.values_mut() {
            m.offer(ToSession::Shutdown);
        }
        Err(Stop::Shutdown(done))
    }
}
