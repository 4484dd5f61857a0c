//! Who is in the room and what reaches them: each player's bounded queue,
//! the guest's effects delivered to it, and departures settled after each
//! call.

use super::outbox::{Held, Outbox, send_frame};
use super::*;

pub(super) struct Member {
    /// The session's queue; `None` while the room is being recovered after
    /// a restart and its frames are collected for the parked seat.
    pub(super) outbound: Option<crate::mailbox::Sender<ToSession>>,
    /// Raised when the queue overflowed (see [`crate::room::Frames`]).
    pub(super) overflow: CancellationToken,
    /// Kicked or too slow: receives nothing more, leaves after this batch.
    pub(super) leaving: bool,
    pub(super) name: String,
    /// The verified user id, when the player joined with a ticket.
    pub(super) user: Option<String>,
    /// Room frames the player was sent: the session numbers them the same
    /// way (`seq`), and a checkpoint keeps it so a recovered seat goes on
    /// from there.
    pub(super) seq: u64,
    /// Frames of a recovering room, for the seat it will park.
    pub(super) collected: Vec<ToSession>,
}

impl Member {
    pub(super) fn new(
        outbound: Option<crate::mailbox::Sender<ToSession>>,
        overflow: CancellationToken,
        name: String,
    ) -> Self {
        Self {
            outbound,
            overflow,
            leaving: false,
            name,
            user: None,
            seq: 0,
            collected: Vec::new(),
        }
    }

    /// Queues a [`ToSession::Notice`] at once, past anything held.
    pub(super) fn notify(&mut self, frame: Utf8Bytes) {
        if let (false, Some(to)) = (self.leaving, &self.outbound)
            && !send_frame(to, &self.overflow, ToSession::Notice(frame))
        {
            self.leaving = true;
        }
    }

    /// Queues a frame unless the player is on the way out. A full queue
    /// makes the player leave: it is too slow to keep up, and its session
    /// is told at once. Under `strict` durability the frame may wait in
    /// `outbox` for its input to reach the disk.
    pub(super) fn offer(&mut self, player: PlayerId, frame: ToSession, outbox: &mut Outbox) {
        if self.leaving {
            return;
        }
        self.seq += 1;
        let Some(to) = &self.outbound else {
            self.collected.push(frame);
            return;
        };
        // The common case, once per frame and player: straight into the
        // queue, without the clones a held frame needs.
        if outbox.passes() {
            if !send_frame(to, &self.overflow, frame) {
                self.leaving = true;
            }
            return;
        }
        let held = Held::Frame {
            player,
            to: to.clone(),
            overflow: self.overflow.clone(),
            frame,
        };
        if let Some(Held::Frame {
            to, overflow, frame, ..
        }) = outbox.pass(held)
            && !send_frame(&to, &overflow, frame)
        {
            self.leaving = true;
        }
    }
}

impl RoomTask {
    /// Drops a player (its queue closes) and tells the guest.
    pub(super) async fn remove(&mut self, guest: &mut GuestInstance, player: PlayerId) -> Result<(), Stop> {
        if let Some(m) = self.players.get_mut(&player) {
            m.leaving = true;
        }
        self.settle(guest).await
    }

    /// Delivers the effects of the last guest call, then lets every player
    /// marked as leaving (kicked, too slow, or gone) leave: each departure
    /// calls `on-leave`, whose effects are delivered in turn. Ends because
    /// every round removes a player.
    pub(super) async fn settle(&mut self, guest: &mut GuestInstance) -> Result<(), Stop> {
        self.deliver(guest);
        while let Some(player) = self.players.iter().find(|(_, m)| m.leaving).map(|(id, _)| *id) {
            self.players.remove(&player);
            self.metrics.leaves.inc();
            self.seat_gone(player);
            tracing::debug!(room = %self.label, player, "player left the room");
            if self.apply(guest, Input::Leave { player }).await?.is_none() {
                // The game failed on the leave and restarted without it, so
                // it still counts the player: once more, or the room cannot
                // go on consistently.
                if self.apply(guest, Input::Leave { player }).await?.is_none() {
                    return Err(Stop::Crashed(Box::new(Crash {
                        reason: "leave_failed",
                        fault: GuestFault::trap(format!("on-leave of player {player} failed twice")),
                        restart_error: None,
                        failed: Some(Entry {
                            now: self.last_now,
                            input: Input::Leave { player },
                            reads: Vec::new(),
                        }),
                    })));
                }
            }
            self.deliver(guest);
        }
        if self.players.is_empty() && self.empty_deadline.is_none() {
            self.empty_deadline = Some(Instant::now() + self.rooms.config.rooms.linger());
        }
        Ok(())
    }

    /// Queues the effects of the last guest call for their players.
    pub(super) fn deliver(&mut self, guest: &mut GuestInstance) {
        for effect in guest.take_effects() {
            match effect {
                Effect::Send { to, payload } => {
                    if let Some(m) = self.players.get_mut(&to) {
                        if crate::metrics::enabled() {
                            self.metrics.frames.inc();
                        }
                        m.offer(to, ToSession::Frame(protocol::event_frame(&payload)), &mut self.outbox);
                    }
                }
                Effect::Broadcast { payload, except } => self.broadcast(protocol::event_frame(&payload), except),
                Effect::Kick { player, reason } => {
                    if let Some(m) = self.players.get_mut(&player) {
                        m.offer(
                            player,
                            ToSession::Removed(ServerMsg::Kicked { reason: &reason }.encode()),
                            &mut self.outbox,
                        );
                        m.leaving = true;
                    }
                }
            }
        }
        self.apply_tick_request(guest);
    }

    /// Queues one frame for every player but `except`.
    pub(super) fn broadcast(&mut self, frame: Utf8Bytes, except: Option<PlayerId>) {
        let mut sent = 0;
        for (id, m) in &mut self.players {
            if Some(*id) != except {
                m.offer(*id, ToSession::Frame(frame.clone()), &mut self.outbox);
                sent += 1;
            }
        }
        if crate::metrics::enabled() {
            self.metrics.frames.inc_by(sent);
        }
    }

    /// Sends what the store made durable since; a join whose session
    /// went away meanwhile becomes a leave.
    pub(super) async fn release(&mut self, guest: &mut GuestInstance) -> Result<(), Stop> {
        for held in self.outbox.release() {
            if let Some(gone) = held.deliver()
                && let Some(m) = self.players.get_mut(&gone)
            {
                m.leaving = true;
            }
        }
        self.settle(guest).await
    }

    pub(super) fn apply_tick_request(&mut self, guest: &mut GuestInstance) {
        let Some(ms) = guest.take_tick_request() else {
            return;
        };
        self.tick = (ms > 0).then(|| {
            let ms = ms.max(self.rooms.config.rooms.min_tick_ms);
            let period = Duration::from_millis(u64::from(ms));
            let mut interval = tokio::time::interval_at(Instant::now() + period, period);
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
    }
}
