//! The one thread that writes the database: takes the queued writes in
//! groups (all that are waiting, up to `group_commit_max`, after lingering
//! the group-commit wait for more), commits each group in one transaction, and
//! publishes the last ticket on disk. A failed commit (a full disk) is
//! retried with the same writes until it works: nothing queued is dropped.

use super::{Backend, Op};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Receiver;
use std::time::Duration;
use tokio::sync::watch;

/// How long a failed commit waits before it is tried again.
const RETRY: Duration = Duration::from_millis(250);

pub(super) struct Writer {
    pub backend: Box<dyn Backend>,
    pub rx: Receiver<(u64, Op)>,
    pub durable: watch::Sender<u64>,
    pub healthy: Arc<AtomicBool>,
    pub queued: Arc<AtomicUsize>,
    pub failures: Arc<AtomicU64>,
    pub linger: Duration,
    pub max: usize,
}

pub(super) fn spawn(w: Writer) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("respawn-store".into())
        .spawn(move || w.run())
        .map(drop)
}

impl Writer {
    fn run(mut self) {
        let mut batch: Vec<Op> = Vec::with_capacity(self.max);
        while let Ok((mut last, first)) = self.rx.recv() {
            batch.push(first);
            // Linger asleep rather than parked on the channel: a room's
            // send then finds nobody to wake, and the writer wakes once
            // per commit instead of once per write.
            // A full batch waiting already commits at once.
            if !self.linger.is_zero() && self.queued.load(Ordering::Relaxed) < self.max {
                std::thread::sleep(self.linger);
            }
            while batch.len() < self.max {
                match self.rx.try_recv() {
                    Ok((ticket, op)) => {
                        last = ticket;
                        batch.push(op);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&batch);
            self.queued.fetch_sub(batch.len(), Ordering::Relaxed);
            batch.clear();
            self.durable.send_replace(last);
            let idle = self.rx_is_empty();
            self.backend.maintain(idle);
        }
    }

    fn rx_is_empty(&self) -> bool {
        self.queued.load(Ordering::Relaxed) == 0
    }

    fn commit(&mut self, batch: &[Op]) {
        loop {
            match self.backend.commit(batch) {
                Ok(()) => {
                    if !self.healthy.swap(true, Ordering::Relaxed) {
                        tracing::info!("storage works again; the queued writes are on disk");
                    }
                    return;
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    if self.healthy.swap(false, Ordering::Relaxed) {
                        tracing::error!(
                            "storage failed; new inputs are refused (storage_unavailable) and the queued \
                             writes are retried every {} ms: {e}",
                            RETRY.as_millis()
                        );
                    }
                    std::thread::sleep(RETRY);
                }
            }
        }
    }
}
