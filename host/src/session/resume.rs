//! Seats kept for players whose connection dropped, and the hand-over of a
//! seat to the connection that resumes it.
//!
//! Every connection registers a token. When it drops while in a room, its
//! seat is parked under the token for the grace period; the room sees the
//! player leave only when that ends. A `resume` with the token on a new
//! connection takes the seat back, frames queued meanwhile included. If
//! the old connection is still open (a half-open TCP connection the host
//! has not noticed yet), it is asked to hand the seat over and closes.

use super::Seat;
use super::control::{Control, ControlTx};
use crate::net::admission::ParkPermit;
use crate::room::PlayerId;
use crate::storage::token_hash;
use rand::{SeedableRng, TryRng};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// A request to a live session to give up its seat (only a seat in
/// `room`, game and room, when given).
pub(crate) struct Takeover {
    pub(crate) reply: oneshot::Sender<Option<Seat>>,
    pub(crate) room: Option<(String, String)>,
}

enum Holder {
    Live {
        takeover: ControlTx,
    },
    Parked {
        seat: Box<Seat>,
        id: u64,
        _place: ParkPermit,
    },
}

/// Resume tokens of the host's players, kept by their SHA-256 (as the
/// database keeps them), so seats recovered after a restart are found by
/// the same token.
pub struct Resumes {
    entries: Mutex<HashMap<String, (PlayerId, Holder)>>,
    grace: Duration,
    takeover_wait: Duration,
    parks: AtomicU64,
    rng: Mutex<rand::rngs::ChaCha20Rng>,
}

impl Resumes {
    /// Seats are kept `grace` after a drop; a resume waits up to
    /// `takeover_wait` for a live connection to hand its seat over.
    ///
    /// Tokens are bearer secrets: they come from a ChaCha20 stream seeded
    /// by the operating system's random source, and without that source
    /// there is no host (no guessable fallback).
    pub fn new(grace: Duration, takeover_wait: Duration) -> std::io::Result<Arc<Self>> {
        let seed = crate::util::random_secret()?;
        Ok(Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            grace,
            takeover_wait,
            parks: AtomicU64::new(0),
            rng: Mutex::new(rand::rngs::ChaCha20Rng::from_seed(seed)),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (PlayerId, Holder)>> {
        crate::lock(&self.entries)
    }

    fn new_token(&self) -> String {
        let mut bytes = [0u8; 16];
        let mut rng = crate::lock(&self.rng);
        let _ = rng.try_fill_bytes(&mut bytes);
        crate::util::hex(&bytes)
    }

    /// Registers a live connection of `player`; returns its token.
    pub(crate) fn register(&self, player: PlayerId, takeover: ControlTx) -> String {
        let token = self.new_token();
        self.lock()
            .insert(token_hash(&token), (player, Holder::Live { takeover }));
        token
    }

    /// The connection ended without a seat to keep.
    pub(crate) fn forget(&self, token: &str) {
        self.lock().remove(&token_hash(token));
    }

    /// Takes over the seat of `player` in `room` (game, room), as a resume
    /// of its token would: a second join of the same user
    /// (`auth.one_seat_per_user`). `None` if that player holds no seat
    /// there (any more).
    pub(crate) async fn claim_player(&self, player: PlayerId, room: &(String, String)) -> Option<(PlayerId, Seat)> {
        // A scan, not an index: take-overs are rare, and an index of
        // seats by user would have to follow every leave, kick and
        // rejoin of every connection.
        let token = self
            .lock()
            .iter()
            .find(|(_, (p, _))| *p == player)
            .map(|(token, _)| token.clone())?;
        self.claim_where(&token, Some(room)).await
    }

    /// The connection dropped while seated: keep the seat for the grace
    /// period, then leave the room.
    pub(crate) fn park(self: &Arc<Self>, token: &str, player: PlayerId, seat: Seat, place: ParkPermit) {
        if self.grace.is_zero() {
            self.forget(token);
            tokio::spawn(async move { seat.leave(player).await });
            return;
        }
        self.park_hashed(token_hash(token), player, seat, place);
    }

    /// Parks a seat of a room recovered after a restart, under the hash of
    /// its token (the token itself was never stored).
    pub(crate) fn park_recovered(self: &Arc<Self>, hash: String, player: PlayerId, seat: Seat, place: ParkPermit) {
        self.park_hashed(hash, player, seat, place);
    }

    fn park_hashed(self: &Arc<Self>, token: String, player: PlayerId, seat: Seat, place: ParkPermit) {
        let id = self.parks.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            token.clone(),
            (
                player,
                Holder::Parked {
                    seat: Box::new(seat),
                    id,
                    _place: place,
                },
            ),
        );
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.grace).await;
            let expired = {
                let mut entries = this.lock();
                match entries.get(&token) {
                    Some((_, Holder::Parked { id: parked, .. })) if *parked == id => entries.remove(&token),
                    _ => None,
                }
            };
            if let Some((player, Holder::Parked { seat, .. })) = expired {
                tracing::debug!(player, "resume grace period over; the player leaves the room");
                seat.leave(player).await;
            }
        });
    }

    /// Takes the seat behind `token`, from the parking or from the live
    /// connection holding it. `None` if the token is unknown, its grace
    /// period ended, or it had no seat.
    pub(crate) async fn claim(&self, token: &str) -> Option<(PlayerId, Seat)> {
        self.claim_where(&token_hash(token), None).await
    }

    /// [`claim`](Self::claim) by the token's hash, of a seat in `room`
    /// only, if given.
    async fn claim_where(&self, token: &str, room: Option<&(String, String)>) -> Option<(PlayerId, Seat)> {
        let in_room = |seat: &Seat| room.is_none_or(|(g, r)| (&seat.game, &seat.room_name) == (g, r));
        let (player, holder) = {
            let mut entries = self.lock();
            if let Some((_, Holder::Parked { seat, .. })) = entries.get(token)
                && !in_room(seat)
            {
                return None;
            }
            entries.remove(token)?
        };
        let takeover = match holder {
            Holder::Parked { mut seat, .. } => return seat.resumable().then_some((player, *seat)),
            Holder::Live { takeover } => takeover,
        };
        let (tx, rx) = oneshot::channel();
        let request = Takeover {
            reply: tx,
            room: room.cloned(),
        };
        if takeover.try_send(Control::Takeover(Box::new(request))).is_ok()
            && let Ok(Ok(answer)) = tokio::time::timeout(self.takeover_wait, rx).await
        {
            match answer {
                // A seat its room already gave up (its queue overflowed)
                // cannot be resumed, live holder or not.
                Some(mut seat) => return seat.resumable().then_some((player, seat)),
                // No seat there: the connection goes on and keeps its
                // token (it put its current one back itself).
                None => return None,
            }
        }
        // The connection was ending as we asked: it parks its seat before
        // it stops listening for take-overs, so the seat is parked now...
        let mut entries = self.lock();
        if matches!(entries.get(token), Some((_, Holder::Parked { seat, .. })) if in_room(seat))
            && let Some((player, Holder::Parked { mut seat, .. })) = entries.remove(token)
        {
            return seat.resumable().then_some((player, *seat));
        }
        drop(entries);
        // ...or it is busy and keeps its seat, and its token with it.
        if !takeover.is_closed() {
            self.relist(token, player, takeover);
        }
        None
    }

    /// Puts a live connection's token (by hash) back after a take-over that
    /// did not happen, unless the token moved on meanwhile.
    pub(crate) fn relist(&self, token: &str, player: PlayerId, takeover: ControlTx) {
        self.lock()
            .entry(token.to_owned())
            .or_insert((player, Holder::Live { takeover }));
    }

    /// After a resume: the connection now plays as `player`; its own token
    /// is dropped and a new one is issued.
    pub(crate) fn rekey(&self, old: &str, player: PlayerId, takeover: ControlTx) -> String {
        self.forget(old);
        self.register(player, takeover)
    }

    /// Seats parked now.
    pub fn parked(&self) -> usize {
        self.lock()
            .values()
            .filter(|(_, h)| matches!(h, Holder::Parked { .. }))
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_128_random_bits_in_hex_and_never_repeat() {
        let resumes = Resumes::new(Duration::from_secs(1), Duration::from_secs(1)).expect("OS randomness");
        let (tx, _rx) = crate::mailbox::unbounded();
        let tokens: std::collections::HashSet<String> = (0..1000).map(|p| resumes.register(p, tx.clone())).collect();
        assert_eq!(tokens.len(), 1000);
        assert!(
            tokens
                .iter()
                .all(|t| t.len() == 32 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        );
        // Two hosts started at the same moment do not share a stream.
        let other = Resumes::new(Duration::from_secs(1), Duration::from_secs(1)).expect("OS randomness");
        assert!(!tokens.contains(&other.register(1, tx)));
    }
}
