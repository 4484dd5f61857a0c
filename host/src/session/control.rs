//! Each live session's control channel: what reaches a session from
//! outside its connection and its room (a take-over by a resuming
//! connection, the host's shutdown). One queue per session carries both,
//! so a session waits on one channel instead of also polling a shared
//! shutdown token at every wake-up (a lock per poll, measurable per frame).

use super::resume::Takeover;
use crate::mailbox;
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// What reaches a live session from outside its connection and its room.
pub(crate) enum Control {
    /// Another connection resumes this seat: hand it over (`None`: no seat).
    /// Boxed: every session's channel allocates a block of these at once,
    /// which an idle connection pays for.
    Takeover(Box<Takeover>),
    /// The host is shutting down: say goodbye and close.
    Shutdown,
}

/// A live session's control channel. Unbounded, and bounded in practice:
/// one shutdown, and one take-over per connection trying to resume.
pub(crate) type ControlTx = mailbox::Sender<Control>;

/// The control channels of the live sessions, and whether the host is
/// shutting down (a session that starts after that is told at once).
#[derive(Default)]
pub(crate) struct Controls {
    live: Mutex<(bool, HashMap<u64, ControlTx>)>,
    next: AtomicU64,
}

impl Controls {
    /// Lists a new session's channel; returns the id to delist it by.
    pub(crate) fn enlist(&self, control: ControlTx) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut live = crate::lock(&self.live);
        if live.0 {
            let _ = control.try_send(Control::Shutdown);
        }
        live.1.insert(id, control);
        id
    }

    /// The session ended.
    pub(crate) fn delist(&self, id: u64) {
        crate::lock(&self.live).1.remove(&id);
    }

    /// Tells every listed session, and every one listed from now on, that
    /// the host is shutting down.
    pub(crate) fn shutdown(&self) {
        let mut live = crate::lock(&self.live);
        live.0 = true;
        for control in live.1.values() {
            let _ = control.try_send(Control::Shutdown);
        }
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub(crate) fn closing(&self) -> bool {
        crate::lock(&self.live).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_shutdown(rx: &mut mailbox::Receiver<Control>) -> bool {
        matches!(rx.try_recv(), Ok(Control::Shutdown))
    }

    #[test]
    fn shutdown_reaches_listed_sessions_and_later_ones_but_not_delisted_ones() {
        let controls = Controls::default();
        let (a, mut a_rx) = mailbox::unbounded();
        let (b, mut b_rx) = mailbox::unbounded();
        controls.enlist(a);
        let b_id = controls.enlist(b);
        controls.delist(b_id);
        assert!(!controls.closing());
        assert!(a_rx.try_recv().is_err(), "nothing before the shutdown");

        controls.shutdown();
        assert!(controls.closing());
        assert!(is_shutdown(&mut a_rx));
        assert!(b_rx.try_recv().is_err(), "a delisted session is not told");

        let (c, mut c_rx) = mailbox::unbounded();
        controls.enlist(c);
        assert!(
            is_shutdown(&mut c_rx),
            "a session that starts after the shutdown is told at once"
        );
    }
}
