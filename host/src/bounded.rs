//! Bounding a future in time without paying for a timer when it finishes
//! at once, which is what almost every socket write and guest call does.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use tokio::time::Instant;

/// Polls `fut` once, with the calling task's waker.
pub(crate) async fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

/// `fut`'s output, or `None` if it has not finished by `deadline()`. A
/// future that finishes on its first poll arms no timer, and `deadline` is
/// only called when it does not.
pub(crate) async fn bounded<F: Future>(fut: F, deadline: impl FnOnce() -> Instant) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    if let Poll::Ready(out) = poll_once(fut.as_mut()).await {
        return Some(out);
    }
    tokio::time::timeout_at(deadline(), fut).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_ready_future_never_asks_for_its_deadline_and_a_slow_one_is_cut() {
        let out = bounded(async { 7 }, || panic!("no deadline needed")).await;
        assert_eq!(out, Some(7));
        let slow = bounded(tokio::time::sleep(Duration::from_secs(60)), || {
            Instant::now() + Duration::from_millis(20)
        });
        assert_eq!(slow.await, None);
        let in_time = bounded(tokio::time::sleep(Duration::from_millis(10)), || {
            Instant::now() + Duration::from_secs(30)
        });
        assert_eq!(in_time.await, Some(()));
    }
}
