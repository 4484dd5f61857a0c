//! A player's place in a room as its session holds it: the room, the queue
//! of frames from it, and the last frames written, numbered, so a resume
//! can replay what a dying connection swallowed. A seat outlives its
//! connection for the resume grace period.

use crate::budget::Budget;
use crate::mailbox;
use crate::room::{Frames, PlayerId, RoomHandle, ToSession};
use std::collections::VecDeque;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

/// Bytes of room frames a seat keeps for replay, whatever their count.
pub(crate) const REPLAY_BYTES: usize = 1 << 20;

/// Frames a seat keeps for replay even when all seats together are over
/// their budget.
pub(crate) const REPLAY_MIN_FRAMES: usize = 16;

pub(crate) struct Seat {
    pub(crate) room: RoomHandle,
    inbox: Inbox,
    /// Raised by the room when it gave the seat up for a full queue.
    pub(crate) overflow: CancellationToken,
    pub(crate) game: String,
    pub(crate) room_name: String,
    pub(crate) replay: Replay,
    /// The verified user id of the player who joined it with a ticket.
    pub(crate) user: Option<String>,
}

impl Seat {
    pub(crate) fn new(
        room: RoomHandle,
        frames: Frames,
        game: String,
        room_name: String,
        keep: usize,
        budget: Arc<Budget>,
    ) -> Self {
        Self {
            room,
            inbox: Inbox::new(frames.queue),
            overflow: frames.overflow,
            game,
            room_name,
            replay: Replay::new(keep, REPLAY_BYTES, budget),
            user: None,
        }
    }

    /// The next frame from the room; `None` once the room dropped the
    /// queue. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<ToSession> {
        self.inbox.next().await
    }

    /// The next room frame if one is already queued and is a plain frame.
    pub(crate) fn try_next_frame(&mut self) -> Option<Utf8Bytes> {
        self.inbox.try_next_frame()
    }

    /// Whether nothing from the room is waiting right now.
    pub(crate) fn is_empty(&self) -> bool {
        self.inbox.is_empty()
    }

    /// Whether the room gave the seat up for a full queue: `overflow`'s
    /// signal, read without a lock (once per batch of frames).
    pub(crate) fn given_up(&self) -> bool {
        self.inbox.frames.was_full()
    }

    /// Puts a frame taken from the room back in front, unwritten.
    pub(crate) fn put_back(&mut self, frame: ToSession) {
        self.inbox.drained.push_front(frame);
    }

    /// A seat of a room recovered after a restart: numbering goes on from
    /// `seq`, and `missed` (what the room's replay produced) is kept for
    /// the resume as if it had been written.
    pub(crate) fn recovered(mut self, seq: u64, missed: &[Utf8Bytes]) -> Self {
        self.replay.seq = seq;
        for frame in missed {
            self.replay.stamp(frame);
        }
        self
    }

    /// Whether a resume may take the seat (see [`Inbox::resumable`]).
    pub(crate) fn resumable(&mut self) -> bool {
        !self.overflow.is_cancelled() && self.inbox.resumable()
    }

    /// Tells the room the player left.
    pub(crate) async fn leave(self, player: PlayerId) {
        let _ = self.room.leave(player).await;
    }
}

/// The queue of what the room sends a seat, with the frames taken out of
/// it early (to look at a closed queue's last word, or past the end of a
/// batch) put back in front.
struct Inbox {
    frames: mailbox::Receiver<ToSession>,
    drained: VecDeque<ToSession>,
}

impl Inbox {
    fn new(frames: mailbox::Receiver<ToSession>) -> Self {
        Self {
            frames,
            drained: VecDeque::new(),
        }
    }

    /// Cancel-safe.
    async fn next(&mut self) -> Option<ToSession> {
        match self.drained.pop_front() {
            Some(frame) => Some(frame),
            None => self.frames.recv().await,
        }
    }

    /// The next frame if one is already queued and is a plain frame, for
    /// writing a batch with one flush. A last word or the end of the queue
    /// is left for [`next`](Self::next), which handles them.
    fn try_next_frame(&mut self) -> Option<Utf8Bytes> {
        if self.drained.is_empty() {
            match self.frames.try_recv() {
                Ok(ToSession::Frame(frame)) => return Some(frame),
                Ok(other) => self.drained.push_back(other),
                Err(_) => return None,
            }
        }
        match self.drained.front() {
            Some(ToSession::Frame(_)) => match self.drained.pop_front() {
                Some(ToSession::Frame(frame)) => Some(frame),
                _ => None,
            },
            _ => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.drained.is_empty() && self.frames.is_empty()
    }

    /// Whether a resume may take the seat. A room that dropped the player
    /// for an overflowing queue (a busy room fills a parked seat's queue)
    /// left no last word: that seat is gone. One that kicked the player or
    /// closed left a last frame, which the resume delivers.
    fn resumable(&mut self) -> bool {
        if !self.frames.is_closed() {
            return true;
        }
        while let Ok(frame) = self.frames.try_recv() {
            self.drained.push_back(frame);
        }
        matches!(self.drained.back(), Some(ToSession::Removed(_) | ToSession::Shutdown))
    }
}

/// The numbering of a seat's room frames and the last ones written.
pub(crate) struct Replay {
    seq: u64,
    /// Unstamped frames (shared with the room's other recipients) by seq.
    kept: VecDeque<(u64, Utf8Bytes)>,
    bytes: usize,
    max_frames: usize,
    max_bytes: usize,
    /// Every seat's replay together (`net.replay_budget_mib`): over it,
    /// seats keep only their last [`REPLAY_MIN_FRAMES`].
    budget: Arc<Budget>,
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}

impl Replay {
    pub(crate) fn new(max_frames: usize, max_bytes: usize, budget: Arc<Budget>) -> Self {
        Self {
            seq: 0,
            kept: VecDeque::new(),
            bytes: 0,
            max_frames: max_frames.max(1),
            max_bytes,
            budget,
        }
    }

    /// The `seq` of the last frame numbered.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Numbers a room frame (`"seq"`, from 1 per seat), keeps it, and
    /// returns it stamped.
    pub(crate) fn stamp(&mut self, frame: &Utf8Bytes) -> Utf8Bytes {
        self.seq += 1;
        self.kept.push_back((self.seq, frame.clone()));
        self.bytes += frame.len();
        self.budget.charge(frame.len());
        while self.kept.len() > self.max_frames
            || (self.bytes > self.max_bytes && self.kept.len() > 1)
            || (self.kept.len() > REPLAY_MIN_FRAMES && self.budget.over())
        {
            if let Some((_, old)) = self.kept.pop_front() {
                self.bytes -= old.len();
                self.budget.release(old.len());
            }
        }
        stamp(frame, self.seq)
    }

    /// The kept frames after `last_seq`, stamped, and how many after it
    /// are no longer kept. A `last_seq` beyond the numbering (a client
    /// confused about its seat) counts as 0: everything kept is replayed.
    pub(crate) fn since(&self, last_seq: u64) -> (Vec<Utf8Bytes>, u64) {
        let last = if last_seq > self.seq { 0 } else { last_seq };
        let oldest = self.kept.front().map_or(self.seq + 1, |(seq, _)| *seq);
        let lost = oldest.saturating_sub(last + 1).min(self.seq - last);
        let frames = self
            .kept
            .iter()
            .filter(|(seq, _)| *seq > last)
            .map(|(seq, f)| stamp(f, *seq))
            .collect();
        (frames, lost)
    }
}

/// `frame` (a JSON object) with `"seq":seq` as its first member. Runs for
/// every frame to every player, so it builds the text in one allocation
/// without the formatting machinery.
fn stamp(frame: &Utf8Bytes, seq: u64) -> Utf8Bytes {
    let text = frame.as_str();
    let Some(rest) = text.strip_prefix('{') else {
        return frame.clone();
    };
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = seq;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let comma = !rest.trim_start().starts_with('}');
    // Exactly the length: `Bytes` takes over a full buffer as it is, but
    // allocates a header of its own for one with room to spare.
    const SEQ: &str = r#"{"seq":"#;
    let mut out = String::with_capacity(SEQ.len() + digits.len() - at + usize::from(comma) + rest.len());
    out.push_str(SEQ);
    out.extend(digits[at..].iter().map(|d| char::from(*d)));
    if comma {
        out.push(',');
    }
    out.push_str(rest);
    debug_assert_eq!(out.len(), out.capacity());
    Utf8Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &'static str) -> Utf8Bytes {
        Utf8Bytes::from_static(t)
    }

    fn shown(f: Option<ToSession>) -> String {
        match f {
            Some(ToSession::Frame(f)) => format!("frame {f}"),
            Some(ToSession::Removed(f)) => format!("removed {f}"),
            Some(ToSession::Notice(f)) => format!("notice {f}"),
            Some(ToSession::Shutdown) => "shutdown".into(),
            Some(ToSession::Moved(f)) => format!("moved {f}"),
            None => "end".into(),
        }
    }

    #[tokio::test]
    async fn a_batch_takes_plain_frames_and_leaves_the_last_word_in_order() {
        let (tx, rx) = mailbox::channel(8);
        let mut inbox = Inbox::new(rx);
        assert!(inbox.is_empty());
        assert_eq!(inbox.try_next_frame(), None);
        tx.try_send(ToSession::Frame(text("a"))).unwrap();
        tx.try_send(ToSession::Frame(text("b"))).unwrap();
        tx.try_send(ToSession::Removed(text("kicked"))).unwrap();
        tx.try_send(ToSession::Frame(text("never"))).unwrap();
        drop(tx);
        assert!(!inbox.is_empty());
        assert_eq!(inbox.try_next_frame().as_deref(), Some("a"));
        assert_eq!(inbox.try_next_frame().as_deref(), Some("b"));
        // The last word stops the batch and stays first in line, however
        // often a batch looks.
        assert_eq!(inbox.try_next_frame(), None);
        assert_eq!(inbox.try_next_frame(), None);
        assert_eq!(shown(inbox.next().await), "removed kicked");
        assert_eq!(shown(inbox.next().await), "frame never");
        assert_eq!(shown(inbox.next().await), "end");
    }

    #[tokio::test]
    async fn a_closed_queue_resumes_only_with_a_last_word() {
        let (tx, rx) = mailbox::channel(8);
        let mut inbox = Inbox::new(rx);
        assert!(inbox.resumable(), "an open queue");
        tx.try_send(ToSession::Frame(text("a"))).unwrap();
        drop(tx);
        assert!(!inbox.resumable(), "dropped for overflowing: no last word");

        let (tx, rx) = mailbox::channel(8);
        let mut inbox = Inbox::new(rx);
        tx.try_send(ToSession::Frame(text("a"))).unwrap();
        tx.try_send(ToSession::Removed(text("closed"))).unwrap();
        drop(tx);
        assert!(inbox.resumable());
        // What resumable() looked at is still delivered, in order.
        assert_eq!(inbox.try_next_frame().as_deref(), Some("a"));
        assert_eq!(shown(inbox.next().await), "removed closed");
    }

    fn frame(n: u64) -> Utf8Bytes {
        Utf8Bytes::from(format!(r#"{{"type":"event","data":{n}}}"#))
    }

    #[test]
    fn stamps_are_the_first_member_and_keep_the_json_valid() {
        let stamped = stamp(&Utf8Bytes::from_static(r#"{"type":"event","data":1}"#), 7);
        assert_eq!(stamped.as_str(), r#"{"seq":7,"type":"event","data":1}"#);
        assert_eq!(stamp(&Utf8Bytes::from_static("{}"), 1).as_str(), r#"{"seq":1}"#);
        assert_eq!(stamp(&Utf8Bytes::from_static("[]"), 1).as_str(), "[]");
        assert_eq!(stamp(&Utf8Bytes::from_static("{ }"), 0).as_str(), r#"{"seq":0 }"#);
        assert_eq!(
            stamp(&Utf8Bytes::from_static(r#"{"a":1}"#), u64::MAX).as_str(),
            format!(r#"{{"seq":{},"a":1}}"#, u64::MAX)
        );
    }

    #[test]
    fn replay_resends_what_follows_last_seq_and_counts_what_is_gone() {
        let mut r = Replay::new(3, REPLAY_BYTES, Budget::new(1 << 30));
        for n in 1..=5 {
            assert!(r.stamp(&frame(n)).starts_with(&format!(r#"{{"seq":{n},"#)));
        }
        // Kept: 3, 4, 5.
        let (frames, lost) = r.since(3);
        assert_eq!(frames.len(), 2);
        assert!(frames[0].starts_with(r#"{"seq":4,"#));
        assert_eq!(lost, 0);
        assert_eq!(r.since(5), (vec![], 0));
        // 2 was not kept.
        let (frames, lost) = r.since(1);
        assert_eq!((frames.len(), lost), (3, 1));
        // Beyond the numbering, or absurd: everything kept.
        assert_eq!(r.since(99).0.len(), 3);
        assert_eq!(r.since(u64::MAX).0.len(), 3);
        assert_eq!(Replay::new(4, REPLAY_BYTES, Budget::new(1 << 30)).since(0), (vec![], 0));
    }

    #[test]
    fn replay_is_bounded_in_bytes_too() {
        let mut r = Replay::new(100, 60, Budget::new(1 << 30));
        for n in 1..=10 {
            r.stamp(&frame(n));
        }
        let (frames, lost) = r.since(0);
        assert!(frames.len() < 10 && !frames.is_empty(), "{}", frames.len());
        assert_eq!(frames.len() as u64 + lost, 10);
    }

    #[test]
    fn replay_buffers_together_stay_within_their_budget() {
        let budget = Budget::new(64 << 10);
        let mut seats: Vec<Replay> = (0..20)
            .map(|_| Replay::new(256, REPLAY_BYTES, budget.clone()))
            .collect();
        let big = Utf8Bytes::from(format!(r#"{{"type":"event","data":"{}"}}"#, "x".repeat(1000)));
        for _ in 0..200 {
            for seat in &mut seats {
                seat.stamp(&big);
            }
            // Over the budget each seat keeps its last 16 frames at most.
            let floor = 20 * REPLAY_MIN_FRAMES * big.len();
            assert!(
                budget.used() <= (64 << 10).max(floor) + 20 * big.len(),
                "{}",
                budget.used()
            );
        }
        // What a seat still has is its newest frames, and the rest counts
        // as lost on a resume.
        let (frames, lost) = seats[0].since(0);
        assert_eq!(frames.len(), REPLAY_MIN_FRAMES);
        assert_eq!(lost, 200 - REPLAY_MIN_FRAMES as u64);
        drop(seats);
        assert_eq!(budget.used(), 0);
    }
}
