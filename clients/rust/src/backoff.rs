//! Reconnect delays: exponential backoff with full jitter, so a host that
//! comes back is not hit by every client at the same instant. The same
//! policy as the JavaScript client's `backoffDelay`.

use std::time::Duration;

/// Delay `attempt` (from 0) is uniform in `[0, min(max, base * 2^attempt))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling.
    pub base: Duration,
    /// The ceiling never grows past this.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The delay before reconnect attempt `attempt`, for a uniform `unit`
    /// in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(attempt.min(31)))
            .min(self.max);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_up_to_the_max_and_jitter_spans_all_of_it() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        assert_eq!(b.delay(0, 0.999_999), Duration::from_millis(100).mul_f64(0.999_999));
        assert_eq!(b.delay(3, 0.5), Duration::from_millis(400));
        assert_eq!(b.delay(10, 0.5), Duration::from_millis(500));
        assert_eq!(b.delay(u32::MAX, 1.0), Duration::from_millis(1000));
        assert_eq!(b.delay(5, 0.0), Duration::ZERO);
    }
}
