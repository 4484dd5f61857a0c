//! When a quiet connection is pinged and when it is given up: the host
//! pings a connection it has not heard from for `heartbeat` (again every
//! `heartbeat` while it stays quiet) and closes it after `idle` of silence.

use std::time::Duration;
use tokio::time::Instant;

/// What is due when the liveness timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Silent for the idle timeout: close the connection.
    Idle,
    /// Quiet for a heartbeat since the last sign of life or ping: ping.
    Ping,
    /// Heard from meanwhile: nothing yet.
    Nothing,
}

/// A connection's liveness clock.
#[derive(Debug)]
pub(crate) struct Liveness {
    heard: Instant,
    pinged: Instant,
    heartbeat: Duration,
    idle: Duration,
}

impl Liveness {
    /// A connection opened at `now`.
    pub(crate) fn new(now: Instant, heartbeat: Duration, idle: Duration) -> Self {
        Self {
            heard: now,
            pinged: now,
            heartbeat,
            idle,
        }
    }

    /// The player sent something at `now`.
    pub(crate) fn heard(&mut self, now: Instant) {
        self.heard = now;
    }

    /// The host pinged the player at `now`.
    pub(crate) fn pinged(&mut self, now: Instant) {
        self.pinged = now;
    }

    /// When something may next be due.
    pub(crate) fn deadline(&self) -> Instant {
        (self.heard.max(self.pinged) + self.heartbeat).min(self.heard + self.idle)
    }

    /// What is due at `now`.
    pub(crate) fn due(&self, now: Instant) -> Due {
        if now >= self.heard + self.idle {
            Due::Idle
        } else if now >= self.heard.max(self.pinged) + self.heartbeat {
            Due::Ping
        } else {
            Due::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_quiet_connection_is_pinged_every_heartbeat_then_closed_at_the_idle_timeout() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 100 * MS, 250 * MS);
        assert_eq!(l.deadline(), t0 + 100 * MS);
        assert_eq!(l.due(t0 + 99 * MS), Due::Nothing);
        assert_eq!(l.due(t0 + 100 * MS), Due::Ping);
        l.pinged(t0 + 100 * MS);
        assert_eq!(l.deadline(), t0 + 200 * MS);
        assert_eq!(l.due(t0 + 150 * MS), Due::Nothing);
        l.pinged(t0 + 200 * MS);
        // The idle deadline comes before the next ping.
        assert_eq!(l.deadline(), t0 + 250 * MS);
        assert_eq!(l.due(t0 + 250 * MS), Due::Idle);
    }

    #[test]
    fn hearing_from_the_player_moves_both_deadlines_and_an_early_timer_finds_nothing_due() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, 100 * MS, 250 * MS);
        // The timer was armed for t0 + 100 ms; the player spoke at 90 ms.
        l.heard(t0 + 90 * MS);
        assert_eq!(l.due(t0 + 100 * MS), Due::Nothing);
        assert_eq!(l.deadline(), t0 + 190 * MS);
        assert_eq!(l.due(t0 + 190 * MS), Due::Ping);
        assert_eq!(l.due(t0 + 339 * MS), Due::Ping);
        assert_eq!(l.due(t0 + 340 * MS), Due::Idle);
    }

    #[test]
    fn an_idle_timeout_shorter_than_the_heartbeat_closes_without_a_ping() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, 500 * MS, 200 * MS);
        assert_eq!(l.deadline(), t0 + 200 * MS);
        assert_eq!(l.due(t0 + 200 * MS), Due::Idle);
    }
}
