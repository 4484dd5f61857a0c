//! Per-connection rate limit: a token bucket, so a burst is fine and a
//! flood is not.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `rate` frames per second on average, `burst` at once.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: u32, burst: u32, now: Instant) -> Self {
        Self::with_rate(f64::from(rate_per_sec), f64::from(burst), now)
    }

    /// A full bucket refilling at a fractional rate (such as a few per
    /// minute).
    pub fn with_rate(rate_per_sec: f64, burst: f64, now: Instant) -> Self {
        Self {
            rate: rate_per_sec,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
    }

    /// Whether the bucket has refilled completely: forgetting it would
    /// give nothing away.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The joins and frames one user or one address may make, over all its
/// connections: a flood spread over many connections (or many addresses,
/// for one account) meets the same limit as one.
#[derive(Debug)]
pub struct Allowance {
    joins: TokenBucket,
    frames: TokenBucket,
}

/// An [`Allowance`] held by every connection it covers.
pub type SharedAllowance = Arc<Mutex<Allowance>>;

/// Rates of an [`Allowance`]: joins per minute and burst, frames per
/// second and burst.
#[derive(Debug, Clone, Copy)]
pub struct AllowanceRates {
    /// Joins per minute, on average.
    pub joins_per_minute: u32,
    /// Joins at once.
    pub join_burst: u32,
    /// Frames per second, on average.
    pub frames_per_sec: u32,
    /// Frames at once.
    pub frame_burst: u32,
}

impl Allowance {
    /// A full allowance.
    pub fn new(rates: AllowanceRates, now: Instant) -> Self {
        Self {
            joins: TokenBucket::with_rate(
                f64::from(rates.joins_per_minute) / 60.0,
                f64::from(rates.join_burst),
                now,
            ),
            frames: TokenBucket::new(rates.frames_per_sec, rates.frame_burst, now),
        }
    }

    /// Takes one join if there is one.
    pub fn join(&mut self, now: Instant) -> bool {
        self.joins.take(now)
    }

    /// Takes one frame if there is one.
    pub fn frame(&mut self, now: Instant) -> bool {
        self.frames.take(now)
    }

    /// Back to full: forgetting it gives nothing away.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.joins.is_full(now) && self.frames.is_full(now)
    }
}

/// Allowances by key (user id), created on first use and forgotten once
/// no connection holds them and they have refilled.
pub struct Allowances<K> {
    rates: AllowanceRates,
    map: Mutex<HashMap<K, SharedAllowance>>,
    swept_at: AtomicUsize,
}

impl<K: Eq + Hash + Clone> Allowances<K> {
    /// Allowances at `rates`.
    pub fn new(rates: AllowanceRates) -> Self {
        Self {
            rates,
            map: Mutex::new(HashMap::new()),
            swept_at: AtomicUsize::new(0),
        }
    }

    /// The allowance of `key`.
    pub fn get(&self, key: &K) -> SharedAllowance {
        let mut map = crate::lock(&self.map);
        if let Some(a) = map.get(key) {
            return a.clone();
        }
        // Sweep when the map has doubled since the last sweep: amortised
        // O(1) per insert, and the map stays within twice what is in use.
        if map.len() >= 2 * self.swept_at.load(Ordering::Relaxed).max(512) {
            let now = Instant::now();
            map.retain(|_, a| Arc::strong_count(a) > 1 || !crate::lock(a).is_full(now));
            self.swept_at.store(map.len(), Ordering::Relaxed);
        }
        let a = Arc::new(Mutex::new(Allowance::new(self.rates, Instant::now())));
        map.insert(key.clone(), a.clone());
        a
    }

    /// Keys tracked now.
    pub fn tracked(&self) -> usize {
        crate::lock(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_passes_then_the_rate_refills() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        assert!((0..3).all(|_| b.take(t0)));
        assert!(!b.take(t0));
        // 100 ms at 10/s is one token.
        assert!(b.take(t0 + Duration::from_millis(100)));
        assert!(!b.take(t0 + Duration::from_millis(100)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn one_allowance_covers_every_connection_of_a_key_and_idle_ones_are_forgotten() {
        let rates = AllowanceRates {
            joins_per_minute: 60,
            join_burst: 2,
            frames_per_sec: 10,
            frame_burst: 3,
        };
        let all: Allowances<String> = Allowances::new(rates);
        let (a, b) = (all.get(&"u".to_owned()), all.get(&"u".to_owned()));
        let now = Instant::now();
        assert!(crate::lock(&a).join(now) && crate::lock(&b).join(now));
        assert!(!crate::lock(&a).join(now), "the second connection used the same joins");
        assert!((0..3).all(|_| crate::lock(&b).frame(now)));
        assert!(!crate::lock(&a).frame(now));
        drop((a, b));
        // Full and unheld allowances go at the next sweep; held ones stay.
        let held = all.get(&"held".to_owned());
        crate::lock(&held).join(now);
        for i in 0..2000 {
            let _ = all.get(&format!("k{i}"));
        }
        assert!(all.tracked() < 1100, "{} kept", all.tracked());
        assert!(Arc::ptr_eq(&held, &all.get(&"held".to_owned())));
    }
}
