//! The room's side of operators' requests (see [`crate::room::operations`]).

use super::*;
use crate::room::operations::{Operation, PlayerView, RoomView};

impl RoomTask {
    /// Answers an operator. A kick and a close are audited by the caller
    /// (the admin API), which knows who asked.
    pub(super) async fn operate(&mut self, guest: &mut GuestInstance, op: Operation) -> Result<(), Stop> {
        // An operator who gave up waiting (the API answered `room_busy`)
        // is not acted for: they may try again, and nothing unaudited
        // happens meanwhile.
        if op.abandoned() {
            return Ok(());
        }
        match op {
            Operation::Inspect(reply) => {
                let _ = reply.send(self.view(Some(guest)));
            }
            Operation::Kick { player, reason, reply } => {
                let frame = ServerMsg::Kicked { reason: &reason }.encode();
                let found = match self.players.get_mut(&player) {
                    Some(m) if !m.leaving => {
                        m.offer(player, ToSession::Removed(frame), &mut self.outbox);
                        m.leaving = true;
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(found);
                if found {
                    tracing::info!(room = %self.label, player, reason, "player kicked by an operator");
                    self.settle(guest).await?;
                }
            }
            Operation::Say { message, reply } => {
                // Outside the room's numbered story (like a refused
                // request's error): no input explains it, so a recovered
                // room could not number it as the players did.
                let frame = ServerMsg::System { message: &message }.encode();
                let mut told = 0;
                for m in self.players.values_mut().filter(|m| !m.leaving && m.outbound.is_some()) {
                    m.notify(frame.clone());
                    told += 1;
                }
                let _ = reply.send(told);
            }
            Operation::ProfileStart { until, reply } => {
                let name = format!("{} {}", self.label, self.module.version);
                let _ = reply.send(
                    guest
                        .start_profile(&name, until)
                        .map_err(|e| format!("cannot profile the room: {e:#}")),
                );
            }
            Operation::ProfileFinish(reply) => {
                let profile = guest.take_profiler().ok_or_else(|| {
                    "the profile was lost: the room moved to another version, or it ran past its time".to_owned()
                });
                let _ = reply.send(profile);
            }
            Operation::Close { reason, reply } => {
                let told = self.players.values().filter(|m| !m.leaving).count();
                let _ = reply.send(told);
                return Err(Stop::Closed(reason));
            }
        }
        Ok(())
    }

    /// What operators see of the room; `guest` is `None` while it sleeps.
    pub(super) fn view(&self, guest: Option<&GuestInstance>) -> RoomView {
        let depth = |to: &crate::mailbox::Sender<ToSession>| to.len();
        let mut players: Vec<PlayerView> = self
            .players
            .iter()
            .map(|(id, m)| PlayerView {
                id: *id,
                name: m.name.clone(),
                user: m.user.clone(),
                queued: m.outbound.as_ref().map_or(0, depth),
            })
            .collect();
        players.sort_by_key(|p| p.id);
        RoomView {
            game: self.key.game.clone(),
            room: self.key.room.clone(),
            version: self.module.version.to_string(),
            outbound_max: players.iter().map(|p| p.queued).max().unwrap_or(0),
            players,
            inbox: 0,
            calls: self.stats.calls,
            faults: self.stats.faults,
            restarts: self.stats.restarts,
            memory_bytes: guest.map_or(0, GuestInstance::memory_in_use),
            asleep: guest.is_none(),
            last_input_ms: self.stats.last_input_ms,
            opened_ms: self.stats.opened_ms,
            journal_entries: self.journal.entries().len(),
            journal_bytes: self.journal.bytes(),
            tick_ms: self.tick.as_ref().map(|t| t.period().as_millis() as u64),
            shadowed: self.shadow.is_some(),
        }
    }
}
