//! Global memory budgets: many holders (seats' replay buffers, rooms'
//! journals) each charge what they keep, and give it back when they drop
//! it, so the host can tell when their sum passes a configured total and
//! make every holder keep less.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes kept by all holders of one kind, against a limit.
#[derive(Debug)]
pub struct Budget {
    used: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            used: AtomicUsize::new(0),
            limit,
        })
    }

    /// A holder keeps `bytes` more.
    pub fn charge(&self, bytes: usize) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A holder let go of `bytes` it had charged.
    pub fn release(&self, bytes: usize) {
        // Saturating: a release never wraps the total even if misused.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(bytes)));
    }

    /// Whether the holders together keep more than the limit: each should
    /// keep only its minimum.
    pub fn over(&self) -> bool {
        self.used.load(Ordering::Relaxed) > self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}
