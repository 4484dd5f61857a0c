//! Bringing a room back after the host restarted: its last checkpoint
//! restored (through the path a hot swap uses) and the journal since
//! replayed, frames included, so each player's parked seat holds what the
//! player may have missed, numbered as before.

use super::*;
use crate::storage::StoredRoom;

/// What a recovering room starts from.
pub(crate) struct Recovery {
    pub stored: StoredRoom,
    /// Seats by player: the hash of each one's resume token.
    pub seats: HashMap<PlayerId, String>,
    /// Where the recovered seats go, for the host to park.
    pub done: oneshot::Sender<Vec<RecoveredSeat>>,
}

/// A seat of a recovered room, for the host to park until its player
/// resumes.
pub struct RecoveredSeat {
    /// The room's game.
    pub game: String,
    /// The room.
    pub room: String,
    /// The player.
    pub player: PlayerId,
    /// SHA-256 of the player's resume token.
    pub token_hash: String,
    /// The player's verified user id, if it joined with a ticket.
    pub user: Option<String>,
    /// The room's frames for the seat.
    pub frames: crate::room::Frames,
    /// `seq` of the first of `missed`, less one.
    pub seq: u64,
    /// Frames the replay produced for the player: the player may not have
    /// seen them.
    pub missed: Vec<Utf8Bytes>,
}

impl RoomTask {
    /// A room that restarted: the module that took the checkpoint (or the
    /// active one), the checkpoint, the journal replayed; players without a
    /// seat to resume leave.
    pub(super) async fn recover(&mut self) -> Result<GuestInstance, JoinError> {
        let failed = |why: String| JoinError::Closed(format!("the room could not be recovered: {why}"));
        let Some(rec) = self.recovery.as_mut() else {
            return Err(failed("nothing to recover".into()));
        };
        let Some(cp) = rec.stored.checkpoints.pop() else {
            // The host died before the room's first checkpoint was on
            // disk: there is nothing to come back to.
            self.forget_durable();
            self.recovery = None;
            return Err(failed("no checkpoint".into()));
        };
        let journal = std::mem::take(&mut rec.stored.journal);
        // Held until the first checkpoint, which waits on storage, not on
        // the guest.
        let replaying = self.rooms.recovering.clone().acquire_owned().await;
        self.generation = cp.generation;
        self.index = cp.at_index;
        self.last_now = cp.now;
        let started = std::time::Instant::now();
        let module = self.module.clone();
        let mut guest = match self.prepare(&module, cp.now, &cp.state).await {
            Ok(guest) => guest,
            // No instance now (the pool is full, a limit changed): the
            // state is not at fault and stays for the next start.
            Err(why @ RoomFailure::Instantiate(_)) => {
                tracing::error!(room = %self.label, "cannot recover the room now, it stays in the database: {why}");
                self.recovery = None;
                return Err(failed(why.to_string()));
            }
            Err(why) => return Err(self.set_aside(&why.to_string(), None)),
        };
        guest.seek_entropy(cp.entropy);
        // The tick `init` or `restore` asked for is the room's, as when it
        // first opened: not part of the first replayed input's output.
        self.apply_tick_request(&mut guest);
        self.journal.reset(Checkpoint {
            state: cp.state,
            entropy: cp.entropy,
            now: cp.now,
        });
        for m in cp.members {
            let mut member = Member::new(None, CancellationToken::new(), m.name);
            member.seq = m.seq;
            member.user = m.user;
            self.players.insert(m.player, member);
        }
        let replayed = journal.len();
        for (index, bytes) in journal {
            let entry: Entry = match serde_json::from_slice(&bytes) {
                Ok(entry) => entry,
                Err(e) => return Err(self.set_aside(&format!("journal entry {index} does not parse: {e}"), None)),
            };
            if let Err(fault) = self.replay_entry(&mut guest, entry.clone()).await {
                return Err(self.set_aside(
                    &format!("replaying entry {index} failed: {fault}"),
                    Some((fault, entry)),
                ));
            }
            self.index = index + 1;
        }
        if guest.take_divergence() {
            tracing::error!(room = %self.label, "the recovery read the game's storage differently from the first run: a nondeterministic game or a host bug");
        }
        self.apply_tick_request(&mut guest);
        // Players with a seat get it back, parked; the others leave.
        let Some(rec) = self.recovery.take() else {
            return Err(failed("recovery state lost".into()));
        };
        let mut seats = Vec::new();
        for (player, m) in &mut self.players {
            match rec.seats.get(player) {
                Some(token_hash) => {
                    let (tx, rx) = crate::mailbox::channel(self.rooms.config.net.outbound_queue);
                    m.outbound = Some(tx);
                    let missed: Vec<Utf8Bytes> = std::mem::take(&mut m.collected)
                        .into_iter()
                        .filter_map(|f| match f {
                            ToSession::Frame(f) | ToSession::Removed(f) => Some(f),
                            ToSession::Shutdown | ToSession::Notice(_) | ToSession::Moved(_) => None,
                        })
                        .collect();
                    seats.push(RecoveredSeat {
                        game: self.key.game.clone(),
                        room: self.key.room.clone(),
                        player: *player,
                        token_hash: token_hash.clone(),
                        user: m.user.clone(),
                        frames: crate::room::Frames {
                            queue: rx,
                            overflow: m.overflow.clone(),
                        },
                        seq: m.seq - missed.len() as u64,
                        missed,
                    });
                }
                None => m.leaving = true,
            }
        }
        tracing::info!(
            room = %self.label,
            version = %self.module.version,
            replayed,
            seats = seats.len(),
            ms = started.elapsed().as_millis() as u64,
            "room recovered"
        );
        let _ = rec.done.send(seats);
        if !self.durable_rooms() {
            // `off`: the state a graceful shutdown left has served.
            self.forget_durable();
        }
        if let Err(stop) = self.settle(&mut guest).await {
            let _ = stop;
            return Err(failed("the game failed as players without a seat left".into()));
        }
        drop(replaying);
        let now = self.now();
        self.first_checkpoint(&mut guest, now).await?;
        Ok(guest)
    }

    /// Replays one journaled input as the room first ran it, frames
    /// included (collected for the seats); what the guest writes to
    /// storage was saved the first time and is dropped.
    async fn replay_entry(&mut self, guest: &mut GuestInstance, entry: Entry) -> Result<(), GuestFault> {
        let now = entry.now;
        self.last_now = self.last_now.max(now);
        if let Input::Leave { player } = &entry.input {
            self.players.remove(player);
        }
        guest.replaying(entry.reads.clone());
        let answer = crate::capsule::replay::call(guest, now, &entry.input).await?;
        guest.take_kv();
        match &entry.input {
            Input::Join { player, name, user } if answer.is_ok() => {
                let mut member = Member::new(None, CancellationToken::new(), name.clone());
                member.user = user.as_ref().map(|u| u.id.clone());
                self.players.insert(*player, member);
            }
            _ => {}
        }
        let produced = crate::capsule::replay::digest_pending(guest, &answer);
        self.deliver(guest);
        if let Input::Message { player, reference, .. } = &entry.input
            && let Some(frame) = message_reply(Some(&answer), reference.as_deref())
            && let Some(m) = self.players.get_mut(player)
        {
            m.offer(*player, ToSession::Frame(frame), &mut self.outbox);
        }
        // Kicked players left in the first run; their leave is journaled.
        self.players.retain(|_, m| !m.leaving);
        self.journal.record(entry, produced);
        Ok(())
    }

    /// The room cannot come back: a crash report keeps what the database
    /// had (checkpoint and inputs), and the database forgets the room so
    /// the next start does not fail on it again.
    fn set_aside(&mut self, why: &str, failed: Option<(GuestFault, Entry)>) -> JoinError {
        let (fault, failed) = match failed {
            Some((fault, entry)) => (fault, Some(entry)),
            None => (GuestFault::trap(why), None),
        };
        self.report(&Crash {
            reason: "recovery_failed",
            fault,
            restart_error: None,
            failed,
        });
        self.recovery = None;
        self.forget_durable();
        tracing::error!(room = %self.label, "room set aside at recovery (see its crash report): {why}");
        JoinError::Closed(format!("the room could not be recovered: {why}"))
    }
}
