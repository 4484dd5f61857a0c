//! How a version behaves in its rooms: calls, failed calls, restarts and
//! crashed rooms. Rooms count; probation reads.

use serde::Serialize;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Failures kept per version, newest first out.
const FAILURES_KEPT: usize = 256;

/// Distinct crash signatures kept per version.
const SIGNATURES_KEPT: usize = 1024;

/// Call-time buckets: bucket `i` counts calls of `[2^i, 2^(i+1))` µs.
const BUCKETS: usize = 40;

/// Counters of one loaded version across all its rooms, since it loaded.
#[derive(Debug)]
pub struct VersionHealth {
    calls: AtomicU64,
    faults: AtomicU64,
    restarts: AtomicU64,
    crashes: AtomicU64,
    /// The newest failures, with who caused them and their signature.
    failures: Mutex<VecDeque<Failure>>,
    /// Every crash signature seen (bounded).
    signatures: Mutex<BTreeSet<String>>,
    /// Guest call times, a log2 histogram in microseconds.
    latency: [AtomicU64; BUCKETS],
}

impl Default for VersionHealth {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            failures: Mutex::new(VecDeque::new()),
            signatures: Mutex::new(BTreeSet::new()),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// When.
    pub at: Instant,
    /// The player whose input it was (`None`: a tick, or a host call).
    pub player: Option<u64>,
    /// The crash signature (see [`crate::sandbox::GuestFault::signature`]).
    pub signature: String,
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
    /// A call failed (not on a player's input, or not worth telling).
    pub fn fault(&self) {
        self.faults.fetch_add(1, Ordering::Relaxed);
    }

    /// A call failed on `player`'s input (or a tick's) with `signature`.
    pub fn fault_by(&self, player: Option<u64>, signature: String) {
        self.fault();
        {
            let mut signatures = crate::lock(&self.signatures);
            if signatures.len() < SIGNATURES_KEPT {
                signatures.insert(signature.clone());
            }
        }
        let mut failures = crate::lock(&self.failures);
        if failures.len() == FAILURES_KEPT {
            failures.pop_front();
        }
        failures.push_back(Failure {
            at: Instant::now(),
            player,
            signature,
        });
    }

    /// Whether this version ever failed with `signature`.
    pub fn has_signature(&self, signature: &str) -> bool {
        crate::lock(&self.signatures).contains(signature)
    }

    /// The kept failures since `since`.
    pub fn failures_since(&self, since: Instant) -> Vec<Failure> {
        crate::lock(&self.failures)
            .iter()
            .filter(|f| f.at >= since)
            .cloned()
            .collect()
    }

    /// A call took `took`.
    pub fn took(&self, took: Duration) {
        let micros = took.as_micros().max(1) as u64;
        let bucket = (63 - micros.leading_zeros() as usize).min(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The 99th percentile of call times (the upper bound of its bucket,
    /// so within a factor of two), once `min_calls` were timed.
    pub fn p99(&self, min_calls: u64) -> Option<Duration> {
        let counts: Vec<u64> = self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 || total < min_calls {
            return None;
        }
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_micros(1u64 << (i + 1)));
            }
        }
        None
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

    #[test]
    fn failures_remember_who_and_how_and_call_times_give_a_p99() {
        let h = VersionHealth::default();
        let start = Instant::now();
        h.fault_by(Some(4), "trap:game::f".into());
        h.fault_by(None, "timeout:game::tick".into());
        assert!(h.has_signature("trap:game::f") && !h.has_signature("trap:game::g"));
        let seen = h.failures_since(start);
        assert_eq!(seen.iter().map(|f| f.player).collect::<Vec<_>>(), vec![Some(4), None]);
        assert_eq!(h.read().faults, 2);
        assert_eq!(h.p99(1), None, "nothing timed yet");
        (0..99).for_each(|_| h.took(Duration::from_micros(100)));
        assert_eq!(h.p99(1000), None, "too few calls");
        // 99 calls of 100 µs (bucket 64..128) and one of 10 ms: the 99th
        // percentile is the bulk's bucket bound.
        h.took(Duration::from_millis(10));
        assert_eq!(h.p99(100), Some(Duration::from_micros(128)));
        (0..5).for_each(|_| h.took(Duration::from_millis(10)));
        assert_eq!(h.p99(100), Some(Duration::from_micros(16384)));
    }
}
