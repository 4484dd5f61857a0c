//! Delivery accounting shared by all client tasks: what was sent in the
//! measured window, what came back (fresh, duplicated, out of order), and
//! the latency histogram.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;

use crate::proto::Payload;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Per receiver: the last sequence number seen from each sender of its room.
#[derive(Debug, Clone)]
pub struct Tracker {
    base: usize,
    last: Vec<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next (or a later) number from this sender.
    Fresh,
    /// The same number again.
    Duplicate,
    /// An older number than one already seen.
    OutOfOrder,
    /// A sender that is not in this room.
    Foreign,
}

impl Tracker {
    /// A receiver in the room of clients `base .. base + members`.
    pub fn new(base: usize, members: usize) -> Self {
        Tracker {
            base,
            last: vec![0; members],
        }
    }

    pub fn arrive(&mut self, sender: usize, n: u64) -> Arrival {
        let Some(last) = sender.checked_sub(self.base).and_then(|i| self.last.get_mut(i)) else {
            return Arrival::Foreign;
        };
        if n > *last {
            *last = n;
            Arrival::Fresh
        } else if n == *last {
            Arrival::Duplicate
        } else {
            Arrival::OutOfOrder
        }
    }
}

/// A window of send times (ns since the harness epoch) with its own counts.
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
    pub sent: AtomicU64,
    pub expected: AtomicU64,
    pub delivered: AtomicU64,
    pub fresh: AtomicU64,
    hist: Vec<Mutex<Histogram<u64>>>,
    /// One histogram per second of send time (only for a run's measured
    /// window, see [`Window::timed`]): shows whether a tail is a transient
    /// (rooms checkpointing together, the machine slowing) or the steady
    /// state. Not sharded: one lock per second, which the default single
    /// generator thread never contends.
    seconds: Vec<Mutex<Histogram<u64>>>,
}

/// Seconds of a window that get their own histogram; past it, the last.
const MAX_SECONDS: u64 = 600;

/// A second's histogram: 2 significant digits are enough for its p99 and
/// keep 600 of them near 20 MB (3 digits: 170 KB each).
fn second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds")
}

impl Window {
    pub fn new(start_ns: u64, end_ns: u64, shards: usize) -> Self {
        Window {
            start_ns,
            end_ns,
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            fresh: AtomicU64::new(0),
            hist: (0..shards.max(1)).map(|_| Mutex::new(new_histogram())).collect(),
            seconds: Vec::new(),
        }
    }

    /// A window that also keeps a histogram for each second of it.
    pub fn timed(start_ns: u64, end_ns: u64, shards: usize) -> Self {
        let seconds = end_ns
            .saturating_sub(start_ns)
            .div_ceil(1_000_000_000)
            .clamp(1, MAX_SECONDS);
        Window {
            seconds: (0..seconds).map(|_| Mutex::new(second_histogram())).collect(),
            ..Window::new(start_ns, end_ns, shards)
        }
    }

    pub fn contains(&self, t_ns: u64) -> bool {
        (self.start_ns..self.end_ns).contains(&t_ns)
    }

    fn on_send(&self, t_ns: u64, members: u64) {
        if self.contains(t_ns) {
            self.sent.fetch_add(1, Relaxed);
            self.expected.fetch_add(members, Relaxed);
        }
    }

    fn on_arrival(&self, shard: usize, p: &Payload, arrival: Arrival, now_ns: u64) {
        if !self.contains(p.t_ns) {
            return;
        }
        self.delivered.fetch_add(1, Relaxed);
        if arrival == Arrival::Fresh {
            self.fresh.fetch_add(1, Relaxed);
            let us = (now_ns.saturating_sub(p.t_ns) / 1000).max(1);
            let _ = lock(&self.hist[shard % self.hist.len()]).record(us);
            let second = ((p.t_ns - self.start_ns) / 1_000_000_000) as usize;
            if let Some(h) = self.seconds.get(second).or(self.seconds.last()) {
                let _ = lock(h).record(us);
            }
        }
    }

    pub fn histogram(&self) -> Histogram<u64> {
        let mut h = new_histogram();
        for s in &self.hist {
            let _ = h.add(&*lock(s));
        }
        h
    }

    /// `f` of the latencies of the frames sent in each second of a timed
    /// window, in order (none for an untimed one).
    pub fn by_second<T>(&self, f: impl Fn(&Histogram<u64>) -> T) -> Vec<T> {
        self.seconds.iter().map(|h| f(&lock(h))).collect()
    }

    /// Expected deliveries that never came (fresh ones only count).
    pub fn lost(&self) -> u64 {
        self.expected.load(Relaxed).saturating_sub(self.fresh.load(Relaxed))
    }
}

/// Everything one measured window (a run, or one step) counts.
pub struct Stats {
    pub window: Window,
    /// Windows around hot swaps and rollbacks.
    pub marks: Vec<(String, Window)>,
    pub said: AtomicU64,
    pub duplicated: AtomicU64,
    pub out_of_order: AtomicU64,
    pub foreign: AtomicU64,
    pub bad_payload: AtomicU64,
    pub swapped: AtomicU64,
    pub disconnects: AtomicU64,
    pub errors: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    pub fn new(window: Window, marks: Vec<(String, Window)>) -> Self {
        Stats {
            window,
            marks,
            said: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            bad_payload: AtomicU64::new(0),
            swapped: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn on_send(&self, t_ns: u64, members: u64) {
        self.window.on_send(t_ns, members);
        for (_, m) in &self.marks {
            m.on_send(t_ns, members);
        }
    }

    /// Accounts one received chat line of `text` at `now_ns`.
    pub fn on_said(&self, shard: usize, tracker: &mut Tracker, text: &str, now_ns: u64) {
        self.said.fetch_add(1, Relaxed);
        let Some(p) = crate::proto::parse_payload(text) else {
            self.bad_payload.fetch_add(1, Relaxed);
            return;
        };
        let arrival = tracker.arrive(p.sender, p.n);
        match arrival {
            Arrival::Fresh => {}
            Arrival::Duplicate => {
                self.duplicated.fetch_add(1, Relaxed);
            }
            Arrival::OutOfOrder => {
                self.out_of_order.fetch_add(1, Relaxed);
            }
            Arrival::Foreign => {
                self.foreign.fetch_add(1, Relaxed);
                return;
            }
        }
        self.window.on_arrival(shard, &p, arrival, now_ns);
        for (_, m) in &self.marks {
            m.on_arrival(shard, &p, arrival, now_ns);
        }
    }

    pub fn on_error(&self, code: &str) {
        *lock(&self.errors).entry(code.to_owned()).or_default() += 1;
    }

    pub fn errors(&self) -> BTreeMap<String, u64> {
        lock(&self.errors).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::encode_payload;

    #[test]
    fn tracker_tells_fresh_duplicate_out_of_order_and_foreign() {
        let mut t = Tracker::new(10, 3);
        assert_eq!(t.arrive(10, 1), Arrival::Fresh);
        assert_eq!(t.arrive(11, 1), Arrival::Fresh);
        assert_eq!(t.arrive(10, 1), Arrival::Duplicate);
        assert_eq!(t.arrive(10, 3), Arrival::Fresh); // a gap: counted as loss by the window
        assert_eq!(t.arrive(10, 2), Arrival::OutOfOrder);
        assert_eq!(t.arrive(9, 1), Arrival::Foreign);
        assert_eq!(t.arrive(13, 1), Arrival::Foreign);
    }

    #[test]
    fn window_counts_only_measured_sends_and_finds_loss() {
        let stats = Stats::new(Window::new(1_000, 2_000, 2), vec![]);
        // Two receivers in a room of 2 (clients 0 and 1).
        let mut r0 = Tracker::new(0, 2);
        let mut r1 = Tracker::new(0, 2);
        // Warm-up send: not counted.
        stats.on_send(500, 2);
        stats.on_said(0, &mut r0, &encode_payload(0, 1, 500, 32), 600);
        // Measured sends from client 0 (n=2) and client 1 (n=1).
        stats.on_send(1_100, 2);
        stats.on_send(1_200, 2);
        stats.on_said(0, &mut r0, &encode_payload(0, 2, 1_100, 32), 3_100);
        stats.on_said(1, &mut r1, &encode_payload(0, 2, 1_100, 32), 4_100);
        stats.on_said(0, &mut r0, &encode_payload(1, 1, 1_200, 32), 5_200);
        // r1 never gets client 1's line; r0 gets client 0's twice.
        stats.on_said(0, &mut r0, &encode_payload(0, 2, 1_100, 32), 6_000);
        assert_eq!(stats.window.sent.load(Relaxed), 2);
        assert_eq!(stats.window.expected.load(Relaxed), 4);
        assert_eq!(stats.window.fresh.load(Relaxed), 3);
        assert_eq!(stats.window.delivered.load(Relaxed), 4);
        assert_eq!(stats.window.lost(), 1);
        assert_eq!(stats.duplicated.load(Relaxed), 1);
        let h = stats.window.histogram();
        assert_eq!(h.len(), 3);
        assert_eq!(h.max(), 4); // (5_200 - 1_200) ns = 4 µs
        stats.on_said(0, &mut r0, "garbage", 0);
        assert_eq!(stats.bad_payload.load(Relaxed), 1);
    }

    #[test]
    fn each_second_of_the_window_keeps_the_latencies_of_its_own_sends() {
        const S: u64 = 1_000_000_000;
        let stats = Stats::new(Window::timed(S, 4 * S, 1), vec![]);
        let mut r = Tracker::new(0, 1);
        // Sent in the first second, 1 ms late; in the third, 300 ms late.
        stats.on_said(0, &mut r, &encode_payload(0, 1, S + 10, 32), S + 10 + 1_000_000);
        stats.on_said(0, &mut r, &encode_payload(0, 2, 3 * S + 5, 32), 3 * S + 5 + 300_000_000);
        let seconds = stats.window.by_second(|h| (h.len(), h.max()));
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 0, 1]);
        assert!(seconds[0].1 < 2_000, "{seconds:?}");
        assert!(seconds[2].1 >= 297_000, "{seconds:?}");
        // A mark's window keeps none.
        assert!(Window::new(S, 4 * S, 1).by_second(|h| h.len()).is_empty());
    }
}
