//! How a version behaves in its rooms: calls, failed calls, restarts and
//! crashed rooms. Rooms count; probation reads.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Distinct crash signatures tracked per version; beyond, failures count
/// under one catch-all signature that is never excused.
const SIGNATURES_KEPT: usize = 1024;

/// Distinct sources remembered per signature (enough to tell "one player"
/// from "many").
const SOURCES_KEPT: usize = 64;

/// The signature failures beyond [`SIGNATURES_KEPT`] count under.
pub const OTHER_SIGNATURE: &str = "other:";

/// Call-time buckets: bucket `i` counts calls of `[2^i, 2^(i+1))` µs.
const BUCKETS: usize = 40;

/// Where a failed or slow call came from: a player's input, or a room's
/// own call (a tick, `init`), which no player sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// The input of this player.
    Player(u64),
    /// A call of this room (by its host-wide id) that no input caused.
    Room(u64),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Player(p) => write!(f, "player {p}"),
            Source::Room(r) => write!(f, "room {r}"),
        }
    }
}

/// Failures of one signature, and who caused them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureStats {
    /// How many calls failed this way.
    pub count: u64,
    /// Who caused them (the first [`SOURCES_KEPT`]).
    pub sources: BTreeSet<Source>,
}

/// Calls slower than a threshold, and who made them.
#[derive(Debug, Default)]
struct Slow {
    threshold_us: u64,
    count: u64,
    sources: BTreeSet<Source>,
}

/// Counters of one loaded version across all its rooms, since it loaded.
#[derive(Debug)]
pub struct VersionHealth {
    calls: AtomicU64,
    faults: AtomicU64,
    restarts: AtomicU64,
    crashes: AtomicU64,
    /// Failures by crash signature, with their sources.
    signatures: Mutex<BTreeMap<String, SignatureStats>>,
    /// Guest call times, a log2 histogram in microseconds.
    latency: [AtomicU64; BUCKETS],
    /// Calls over a threshold set when the version goes on probation.
    slow: Mutex<Slow>,
}

impl Default for VersionHealth {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            faults: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            signatures: Mutex::new(BTreeMap::new()),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            slow: Mutex::new(Slow::default()),
        }
    }
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

    /// A call failed, caused by `source`, with `signature`.
    pub fn fault_by(&self, source: Source, signature: String) {
        self.fault();
        let mut signatures = crate::lock(&self.signatures);
        let key = if signatures.len() < SIGNATURES_KEPT || signatures.contains_key(&signature) {
            signature
        } else {
            OTHER_SIGNATURE.to_owned()
        };
        let stats = signatures.entry(key).or_default();
        stats.count += 1;
        if stats.sources.len() < SOURCES_KEPT {
            stats.sources.insert(source);
        }
    }

    /// Whether this version ever failed with `signature`.
    pub fn has_signature(&self, signature: &str) -> bool {
        crate::lock(&self.signatures).contains_key(signature)
    }

    /// Failures by signature so far.
    pub fn signatures(&self) -> BTreeMap<String, SignatureStats> {
        crate::lock(&self.signatures).clone()
    }

    /// How many calls failed with each signature so far: a baseline to
    /// tell the failures of a watch (a probation, a canary) from earlier
    /// ones.
    pub fn signature_counts(&self) -> BTreeMap<String, u64> {
        crate::lock(&self.signatures)
            .iter()
            .map(|(s, st)| (s.clone(), st.count))
            .collect()
    }

    /// A call caused by `source` took `took`.
    pub fn took(&self, took: Duration, source: Source) {
        let micros = took.as_micros().max(1) as u64;
        let bucket = (63 - micros.leading_zeros() as usize).min(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let mut slow = crate::lock(&self.slow);
        if slow.threshold_us > 0 && micros > slow.threshold_us {
            slow.count += 1;
            if slow.sources.len() < SOURCES_KEPT {
                slow.sources.insert(source);
            }
        }
    }

    /// From now on, count calls slower than `threshold` and who made them
    /// (a probation watching latency).
    pub fn watch_slow(&self, threshold: Duration) {
        let mut slow = crate::lock(&self.slow);
        *slow = Slow {
            threshold_us: threshold.as_micros().max(1) as u64,
            ..Slow::default()
        };
    }

    /// Calls slower than the watched threshold, and who made them.
    pub fn slow_calls(&self) -> (u64, BTreeSet<Source>) {
        let slow = crate::lock(&self.slow);
        (slow.count, slow.sources.clone())
    }

    /// The 99th percentile of call times (the upper bound of its bucket,
    /// so within a factor of two), once `min_calls` were timed.
    pub fn p99(&self, min_calls: u64) -> Option<Duration> {
        p99_of(&self.latency_buckets(), min_calls)
    }

    /// Call times so far, per power-of-two bucket of microseconds: two
    /// readings subtracted give a window's ([`p99_of`]).
    pub fn latency_buckets(&self) -> Vec<u64> {
        self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }
}

/// The 99th percentile of `counts` (from [`VersionHealth::latency_buckets`],
/// or the difference of two readings), once `min_calls` were timed.
pub fn p99_of(counts: &[u64], min_calls: u64) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 || total < min_calls {
        return None;
    }
    quantile_of(counts, total - total / 100)
}

/// The median of `counts` (as [`p99_of`] reads them), if any call was timed.
pub fn p50_of(counts: &[u64]) -> Option<Duration> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    quantile_of(counts, total.div_ceil(2))
}

/// The upper bound of the bucket holding the `rank`-th call.
fn quantile_of(counts: &[u64], rank: u64) -> Option<Duration> {
    let mut seen = 0;
    for (i, n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(Duration::from_micros(1u64 << (i + 1)));
        }
    }
    None
}

impl VersionHealth {
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
        h.fault_by(Source::Player(4), "trap:game::f".into());
        h.fault_by(Source::Player(4), "trap:game::f".into());
        h.fault_by(Source::Room(9), "timeout:game::tick".into());
        assert!(h.has_signature("trap:game::f") && !h.has_signature("trap:game::g"));
        let seen = h.signatures();
        assert_eq!(seen["trap:game::f"].count, 2);
        assert_eq!(seen["trap:game::f"].sources, BTreeSet::from([Source::Player(4)]));
        assert_eq!(h.read().faults, 3);
        assert_eq!(h.p99(1), None, "nothing timed yet");
        (0..99).for_each(|_| h.took(Duration::from_micros(100), Source::Player(1)));
        assert_eq!(h.p99(1000), None, "too few calls");
        // 99 calls of 100 µs (bucket 64..128) and one of 10 ms: the 99th
        // percentile is the bulk's bucket bound.
        h.took(Duration::from_millis(10), Source::Player(1));
        assert_eq!(h.p99(100), Some(Duration::from_micros(128)));
        (0..5).for_each(|_| h.took(Duration::from_millis(10), Source::Player(1)));
        assert_eq!(h.p99(100), Some(Duration::from_micros(16384)));
        // Slow calls are counted, with who made them, once watched.
        h.watch_slow(Duration::from_millis(1));
        h.took(Duration::from_millis(10), Source::Player(2));
        h.took(Duration::from_micros(10), Source::Player(3));
        assert_eq!(h.slow_calls(), (1, BTreeSet::from([Source::Player(2)])));
    }

    #[test]
    fn signatures_beyond_the_bound_count_under_one() {
        let h = VersionHealth::default();
        for i in 0..SIGNATURES_KEPT + 10 {
            h.fault_by(Source::Player(1), format!("trap:f{i}"));
        }
        let seen = h.signatures();
        assert_eq!(seen.len(), SIGNATURES_KEPT + 1);
        assert_eq!(seen[OTHER_SIGNATURE].count, 10);
    }
}
