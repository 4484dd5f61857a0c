//! File work from async code: reading and verifying modules, fsync'd
//! writes of the slot store and of saved rooms. Such calls take from
//! microseconds to, on a busy disk, seconds; they must not stall the
//! sessions and rooms that share the worker thread.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Runs blocking `f` where it cannot stall other tasks: on the host's
/// multi-threaded runtime the worker hands its other tasks to the rest
/// first ([`tokio::task::block_in_place`]); outside a runtime, or on a
/// blocking-pool thread, it just runs.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// One worker thread: a slow file call on it must not stop a ticking
    /// task (a session, say) from running meanwhile.
    #[test]
    fn a_slow_file_call_does_not_stall_the_other_tasks_of_its_worker() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let ticks = Arc::new(AtomicUsize::new(0));
        runtime.block_on(async {
            let counter = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
            let before = ticks.load(Ordering::Relaxed);
            tokio::spawn(async { blocking(|| std::thread::sleep(Duration::from_millis(300))) })
                .await
                .expect("slow call");
            let during = ticks.load(Ordering::Relaxed) - before;
            ticker.abort();
            assert!(during >= 10, "the ticker ran {during} times in 300 ms");
        });
        // Without a runtime it simply runs.
        assert_eq!(blocking(|| 7), 7);
    }
}
