//! A quiet room gives its instance back (`rooms.sleep_after_ms`): its
//! linear memory, fiber stack and pool slot are what an idle room costs
//! most. Its state is the journal's checkpoint, and the next input
//! rebuilds the instance from it: the same instance going on fresh after a
//! checkpoint builds (`supervision.fresh_at_checkpoint`), so a game cannot
//! tell a room that slept from one that did not, live or in replay.

use super::*;

/// A room that cannot get an instance slot back waits this long between
/// tries, and tries this often, before it gives up.
const WAKE_RETRY: Duration = Duration::from_millis(50);
const WAKE_TRIES: u32 = 20;

impl RoomTask {
    /// Whether this room may sleep: it has players (an empty room closes
    /// instead), nothing runs on its own (a tick, a shadow, frames held
    /// for the disk, a profile), and its instance is what a rebuild from
    /// the checkpoint makes (one was made and restored fine).
    fn may_sleep(&self, guest: &GuestInstance) -> bool {
        self.rooms.config.rooms.sleep_after_ms > 0
            && self.rooms.config.supervision.fresh_at_checkpoint
            && self.on_checkpoint
            && !self.players.is_empty()
            && self.tick.is_none()
            && self.shadow.is_none()
            && self.recovery.is_none()
            && !self.outbox.holding()
            && !self.stale_instance
            && !guest.profiling()
    }

    /// When the room falls asleep if nothing happens until then.
    pub(super) fn sleep_at(&self, guest: &GuestInstance) -> Option<Instant> {
        self.may_sleep(guest)
            .then(|| self.active_at + Duration::from_millis(self.rooms.config.rooms.sleep_after_ms))
    }

    /// Checkpoints what the room journaled since its last checkpoint, then
    /// drops its instance. A checkpoint a fresh instance could not restore
    /// keeps it awake (a rebuild would fail the same way).
    pub(super) async fn fall_asleep(&mut self, guest: &mut Option<GuestInstance>) -> Result<(), Stop> {
        let Some(g) = guest.as_mut() else { return Ok(()) };
        if !self.journal.entries().is_empty() || std::mem::take(&mut self.resync) {
            self.checkpoint(g).await?;
        }
        // A fault in that snapshot restarted the room, whose notice wants
        // a checkpoint of its own: stay awake for it.
        if !self.may_sleep(g) || !self.journal.entries().is_empty() || self.resync {
            self.active_at = Instant::now();
            return Ok(());
        }
        *guest = None;
        self.metrics.asleep.inc();
        tracing::debug!(room = %self.label, "room asleep: its instance is freed until the next input");
        Ok(())
    }

    /// A sleeping room's instance, rebuilt from its checkpoint. A full
    /// instance pool is waited out for a moment (rooms take at most half
    /// of it, so a slot comes free); any other failure closes the room
    /// like a restart that failed.
    pub(super) async fn wake_up(&mut self) -> Result<GuestInstance, Stop> {
        let mut tries = 0;
        loop {
            match self.rebuild(false).await {
                Ok(mut fresh) => {
                    fresh.count_in(self.metrics.clone());
                    self.metrics.asleep.dec();
                    tracing::debug!(room = %self.label, "room awake");
                    return Ok(fresh);
                }
                Err(why) if why.is_capacity() && tries < WAKE_TRIES => {
                    tries += 1;
                    tokio::time::sleep(WAKE_RETRY).await;
                }
                Err(why) => {
                    tracing::error!(room = %self.label, version = %self.module.version, "the room cannot wake from its checkpoint: {why}");
                    let fault = why
                        .fault()
                        .cloned()
                        .unwrap_or_else(|| GuestFault::trap(why.to_string()));
                    return Err(Stop::Crashed(Box::new(Crash {
                        reason: "wake_failed",
                        fault,
                        restart_error: Some(why),
                        failed: None,
                    })));
                }
            }
        }
    }
}
