//! How a version behaves in its rooms: calls, failed calls, restarts and
//! crashed rooms. Rooms count; probation reads.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of one loaded version across all its rooms, since it loaded.
#[derive(Debug, Default)]
pub struct VersionHealth {
    calls: AtomicU64,
    faults: AtomicU64,
    restarts: AtomicU64,
    crashes: AtomicU64,
}

/// A reading of [`VersionHealth`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct HealthCounts {
    /// Guest calls made.
    pub calls: u64,
    /// Calls that trapped, timed out or ran out of memory.
    pub faults: u64,
    /// Rooms restarted after a fault.
    pub restarts: u64,
    /// Rooms closed for restarting too often or failing to restart.
    pub crashes: u64,
}

impl HealthCounts {
    /// What happened between `earlier` and this reading.
    pub fn since(self, earlier: HealthCounts) -> HealthCounts {
        HealthCounts {
            calls: self.calls.saturating_sub(earlier.calls),
            faults: self.faults.saturating_sub(earlier.faults),
            restarts: self.restarts.saturating_sub(earlier.restarts),
            crashes: self.crashes.saturating_sub(earlier.crashes),
        }
    }

    /// Failed calls over calls.
    pub fn error_rate(self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.faults as f64 / self.calls as f64
        }
    }
}

impl VersionHealth {
    /// A call was made.
    pub fn call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    /// A call failed.
    pub fn fault(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
    }
    /// A room was restarted.
    pub fn restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }
    /// A room crashed for good.
    pub fn crash(&self) {
        self.crashes.fetch_add(1, Ordering::Relaxed);
    }
    /// The counters now.
    pub fn read(&self) -> HealthCounts {
        HealthCounts {
            calls: self.calls.load(Ordering::Relaxed),
            faults: self.faults.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            crashes: self.crashes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_taken_over_a_window() {
        let h = VersionHealth::default();
        (0..10).for_each(|_| h.call());
        let start = h.read();
        (0..20).for_each(|_| h.call());
        h.fault();
        let window = h.read().since(start);
        assert_eq!(window.calls, 20);
        assert_eq!(window.error_rate(), 0.05);
        assert_eq!(HealthCounts::default().error_rate(), 0.0);
    }
}
