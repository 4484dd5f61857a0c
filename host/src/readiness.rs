//! Liveness and readiness, and the runtime figures behind them: what
//! `/healthz`, `/readyz` and the `runtime` part of `/status` report.

use crate::modules::Games;
use crate::net::admission::Admission;
use crate::room::Rooms;
use crate::sandbox::Sandbox;
use crate::session::Resumes;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// The host's state as load balancers and supervisors see it.
pub struct Health {
    listening: AtomicBool,
    draining: AtomicBool,
    games: Arc<Games>,
}

/// Counts that must come back to their baseline when load ends: a leak
/// shows here first.
#[derive(Debug, Clone, Serialize)]
pub struct RuntimeStats {
    /// Tokio tasks alive.
    pub tasks: usize,
    /// Resident memory of the process, in bytes (0 where unknown).
    pub rss_bytes: u64,
    /// Guest instances alive.
    pub instances: usize,
    /// Live rooms.
    pub rooms: usize,
    /// Open player connections.
    pub connections: usize,
    /// Seats kept for dropped players.
    pub parked_seats: usize,
    /// The database.
    pub storage: Option<crate::storage::StorageStats>,
}

impl Health {
    /// Not ready until the listeners are up.
    pub fn new(games: Arc<Games>) -> Arc<Self> {
        Arc::new(Self {
            listening: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            games,
        })
    }

    /// Every listener is bound.
    pub fn set_listening(&self) {
        self.listening.store(true, Ordering::Release);
    }

    /// Shutdown began: stop sending players here.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the host should get players, or why not.
    pub fn readiness(&self) -> Result<(), Vec<&'static str>> {
        let mut not = Vec::new();
        if !self.listening.load(Ordering::Acquire) {
            not.push("listeners_down");
        }
        if self.games.names().is_empty() {
            not.push("no_games_loaded");
        }
        if self.draining.load(Ordering::Acquire) {
            not.push("draining");
        }
        if not.is_empty() { Ok(()) } else { Err(not) }
    }
}

/// Where the runtime figures come from.
pub struct Gauges {
    /// Rooms.
    pub rooms: Arc<Rooms>,
    /// The engine, counting instances.
    pub sandbox: Arc<Sandbox>,
    /// Open connections.
    pub connections: Arc<Admission>,
    /// Parked seats.
    pub resumes: Arc<Resumes>,
}

impl Gauges {
    /// Reads every figure now.
    pub fn read(&self) -> RuntimeStats {
        RuntimeStats {
            tasks: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks())
                .unwrap_or(0),
            rss_bytes: rss_bytes(),
            instances: self.sandbox.live_instances(),
            rooms: self.rooms.count(),
            connections: self.connections.open(),
            parked_seats: self.resumes.parked(),
            storage: self.rooms.store.as_ref().map(|s| s.stats()),
        }
    }
}

/// Resident set size from `/proc/self/statm` (Linux), else 0.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_listening_with_games_and_not_draining() {
        let health = Health::new(Arc::new(Games::new(5)));
        assert_eq!(health.readiness(), Err(vec!["listeners_down", "no_games_loaded"]));
        health.set_listening();
        assert_eq!(health.readiness(), Err(vec!["no_games_loaded"]));
        health.set_draining();
        assert_eq!(health.readiness(), Err(vec!["no_games_loaded", "draining"]));
    }
}
