//! The room's clock and entropy. A guest sees only these, through our host
//! imports and through WASI, so every value it reads can be journaled and
//! replayed.

use rand::rngs::ChaCha8Rng;
use rand::{Rng, SeedableRng, TryRng};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// The room's logical time in milliseconds since the Unix epoch, set by the
/// room before every guest call and frozen during it.
#[derive(Clone, Default)]
pub struct RoomClock(Arc<AtomicU64>);

impl RoomClock {
    /// Sets the time the next guest call sees.
    pub fn set_ms(&self, now_ms: u64) {
        self.0.store(now_ms, Ordering::Relaxed);
    }

    /// The time the current guest call sees.
    pub fn ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl HostWallClock for RoomClock {
    fn resolution(&self) -> Duration {
        Duration::from_millis(1)
    }
    fn now(&self) -> Duration {
        Duration::from_millis(self.ms())
    }
}

impl HostMonotonicClock for RoomClock {
    fn resolution(&self) -> u64 {
        1_000_000
    }
    fn now(&self) -> u64 {
        self.ms().saturating_mul(1_000_000)
    }
}

/// A generator WASI owns while the room can still read and move its
/// position (to restart a guest where its checkpoint left off).
#[derive(Clone)]
pub struct SharedRng(Arc<Mutex<ChaCha8Rng>>);

impl SharedRng {
    fn lock(&self) -> std::sync::MutexGuard<'_, ChaCha8Rng> {
        crate::lock(&self.0)
    }
    /// Words drawn so far.
    pub fn position(&self) -> u128 {
        self.lock().get_word_pos()
    }
    /// Moves to a position read earlier.
    pub fn seek(&self, position: u128) {
        self.lock().set_word_pos(position);
    }
}

impl TryRng for SharedRng {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.lock().next_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.lock().next_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.lock().fill_bytes(dst);
        Ok(())
    }
}

/// Independent, reproducible generators derived from one room seed: the
/// `random-u64` import, WASI's secure and insecure random, and WASI's
/// insecure seed each get their own stream.
pub struct Entropy {
    /// For the `random-u64` import.
    pub host: ChaCha8Rng,
    /// For WASI `random`.
    pub wasi_secure: SharedRng,
    /// For WASI `insecure-random`.
    pub wasi_insecure: SharedRng,
    /// For WASI `insecure-seed`.
    pub wasi_seed: u128,
}

/// Where a room's random streams stand: with the seed, all a fresh
/// instance needs to draw the same numbers again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntropyPosition {
    /// Of the `random-u64` stream.
    pub host: u128,
    /// Of WASI `random`.
    pub wasi_secure: u128,
    /// Of WASI `insecure-random`.
    pub wasi_insecure: u128,
}

impl Entropy {
    /// All streams of one room seed.
    pub fn from_seed(seed: u64) -> Self {
        let stream = |n: u64| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(n);
            rng
        };
        Self {
            host: stream(0),
            wasi_secure: SharedRng(Arc::new(Mutex::new(stream(1)))),
            wasi_insecure: SharedRng(Arc::new(Mutex::new(stream(2)))),
            wasi_seed: u128::from(seed) << 64 | u128::from(seed.rotate_left(17)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn same_seed_same_streams_and_streams_differ() {
        let mut a = Entropy::from_seed(42);
        let mut b = Entropy::from_seed(42);
        let xs: Vec<u64> = (0..4).map(|_| a.host.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.host.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(a.wasi_secure.next_u64(), a.wasi_insecure.next_u64());
    }

    #[test]
    fn a_stream_can_be_put_back_where_it_was() {
        let mut a = Entropy::from_seed(7);
        a.wasi_secure.next_u64();
        let at = a.wasi_secure.position();
        let expected: Vec<u64> = (0..3).map(|_| a.wasi_secure.next_u64()).collect();
        let mut b = Entropy::from_seed(7);
        b.wasi_secure.seek(at);
        let again: Vec<u64> = (0..3).map(|_| b.wasi_secure.next_u64()).collect();
        assert_eq!(expected, again);
    }

    #[test]
    fn clock_is_what_the_room_set() {
        let c = RoomClock::default();
        c.set_ms(1_700_000_000_123);
        assert_eq!(HostWallClock::now(&c), Duration::from_millis(1_700_000_000_123));
        assert_eq!(HostMonotonicClock::now(&c), 1_700_000_000_123_000_000);
    }
}
