//! Under `strict` durability, what an input caused (its frames, a join's
//! answer) waits here until the input is on disk, then goes out in order.
//! Under the other levels everything passes straight through.

use super::*;
use tokio::sync::watch;

/// Something the room holds back until an input is durable.
pub(super) enum Held {
    Frame {
        player: PlayerId,
        to: crate::mailbox::Sender<ToSession>,
        overflow: CancellationToken,
        frame: ToSession,
    },
    Reply {
        reply: oneshot::Sender<Result<Joined, JoinError>>,
        result: Result<Joined, JoinError>,
        player: PlayerId,
    },
}

pub(super) struct Outbox {
    /// The store's progress, when holding back is on (`strict`).
    durable: Option<watch::Receiver<u64>>,
    /// The ticket of the last input whose effects are being produced.
    gate: u64,
    held: VecDeque<(u64, Held)>,
}

impl Outbox {
    pub(super) fn new(durable: Option<watch::Receiver<u64>>) -> Self {
        Self {
            durable,
            gate: 0,
            held: VecDeque::new(),
        }
    }

    /// What follows waits for the write with this ticket.
    pub(super) fn gate(&mut self, ticket: u64) {
        self.gate = self.gate.max(ticket);
    }

    /// `item` goes out now (returned), or is held behind the gate and
    /// behind whatever is held already.
    pub(super) fn pass(&mut self, item: Held) -> Option<Held> {
        if self.passes() {
            return Some(item);
        }
        self.held.push_back((self.gate, item));
        None
    }

    /// Whether what is produced now goes out at once: nothing is held and
    /// the gate's input is durable (always, but under `strict`). A frame
    /// that passes is sent without being wrapped in a [`Held`].
    pub(super) fn passes(&self) -> bool {
        match &self.durable {
            None => true,
            Some(durable) => self.held.is_empty() && *durable.borrow() >= self.gate,
        }
    }

    /// Whether anything waits.
    pub(super) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Waits until more is durable (forever when nothing is held).
    pub(super) async fn progress(&mut self) {
        match (&mut self.durable, self.held.is_empty()) {
            (Some(rx), false) => {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            _ => std::future::pending().await,
        }
    }

    /// What may go out now, in order.
    pub(super) fn release(&mut self) -> Vec<Held> {
        let Some(durable) = &self.durable else {
            return self.held.drain(..).map(|(_, h)| h).collect();
        };
        let on_disk = *durable.borrow();
        let mut out = Vec::new();
        while self.held.front().is_some_and(|(t, _)| *t <= on_disk) {
            if let Some((_, h)) = self.held.pop_front() {
                out.push(h);
            }
        }
        out
    }
}

impl Held {
    /// Delivers what was held; returns the player if it could not take it
    /// (a full queue, or a join whose session went away), who must leave.
    pub(super) fn deliver(self) -> Option<PlayerId> {
        match self {
            Held::Frame {
                player,
                to,
                overflow,
                frame,
            } => (!send_frame(&to, &overflow, frame)).then_some(player),
            Held::Reply { reply, result, player } => reply.send(result).is_err().then_some(player),
        }
    }
}

/// Hands a released frame to its session; a full queue gives the player up.
pub(super) fn send_frame(
    to: &crate::mailbox::Sender<ToSession>,
    overflow: &CancellationToken,
    frame: ToSession,
) -> bool {
    if to.try_send(frame).is_err() {
        overflow.cancel();
        return false;
    }
    true
}
