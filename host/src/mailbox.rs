//! A queue with one receiver that holds no buffer until something is queued:
//! each seat's frames from its room, and each session's control messages.
//!
//! Why not tokio's `mpsc`: it allocates a block of 32 slots (1.5 KiB for
//! a room's frames) when the channel is made, which every idle connection
//! paid for, and its bounded flavour takes a semaphore on every send and a
//! lock on every receive. Here one lock covers the queue, the count of
//! senders and the receiver's waker, so a send and a receive touch the
//! same few cache lines, and an empty queue holds no buffer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// Items a drained queue may keep room for; a burst beyond it (a slow
/// player's backlog) gives its buffer back once the queue is empty again.
const KEEP_CAPACITY: usize = 16;

/// A queue of at most `capacity` items.
pub(crate) fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            items: VecDeque::new(),
            senders: 1,
            open: true,
            waker: None,
        }),
        capacity,
        refused: AtomicBool::new(false),
    });
    (Sender(shared.clone()), Receiver(shared))
}

/// A queue without a bound of its own, for messages whose senders bound
/// them (one shutdown, one take-over per resuming connection).
pub(crate) fn unbounded<T>() -> (Sender<T>, Receiver<T>) {
    channel(usize::MAX)
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// A send found the queue full (it stays set): read without the lock,
    /// by a receiver that checks it once per batch.
    refused: AtomicBool,
}

struct State<T> {
    items: VecDeque<T>,
    senders: usize,
    /// The receiver still takes items (not dropped, not closed).
    open: bool,
    /// The receiver waiting for an item or the last sender's end.
    waker: Option<Waker>,
}

/// Why [`Sender::try_send`] gave the item back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TrySendError<T> {
    /// The queue holds `capacity` items.
    Full(T),
    /// The receiver is gone or closed.
    Closed(T),
}

/// Why [`Receiver::try_recv`] has nothing.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TryRecvError {
    /// Nothing queued right now.
    Empty,
    /// Nothing queued, and every sender is gone.
    Disconnected,
}

/// A sending end; clones share the queue.
pub(crate) struct Sender<T>(Arc<Shared<T>>);

impl<T> Sender<T> {
    /// Queues `item` unless the queue is full or the receiver gone, and
    /// wakes the receiver if it waits.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        let mut state = crate::lock(&self.0.state);
        if !state.open {
            return Err(TrySendError::Closed(item));
        }
        if state.items.len() >= self.0.capacity {
            self.0.refused.store(true, Ordering::Relaxed);
            return Err(TrySendError::Full(item));
        }
        state.items.push_back(item);
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Items queued and not yet received.
    pub(crate) fn len(&self) -> usize {
        crate::lock(&self.0.state).items.len()
    }

    /// Whether the receiver is gone or closed.
    pub(crate) fn is_closed(&self) -> bool {
        !crate::lock(&self.0.state).open
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        crate::lock(&self.0.state).senders += 1;
        Self(self.0.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let mut state = crate::lock(&self.0.state);
        state.senders -= 1;
        let waker = if state.senders == 0 { state.waker.take() } else { None };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving end.
pub(crate) struct Receiver<T>(Arc<Shared<T>>);

impl<T> Receiver<T> {
    /// The next item; `None` once every sender is gone and the queue is
    /// empty. Cancel-safe: an item is taken only when it is returned.
    pub(crate) async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = crate::lock(&self.0.state);
        if let Some(item) = state.items.pop_front() {
            return Poll::Ready(Some(item));
        }
        give_back(&mut state.items);
        if state.senders == 0 || !state.open {
            return Poll::Ready(None);
        }
        if state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        let old = state.waker.replace(cx.waker().clone());
        drop(state);
        // Dropped outside the lock, like every waker here.
        drop(old);
        Poll::Pending
    }

    /// The next item if one is queued.
    pub(crate) fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let mut state = crate::lock(&self.0.state);
        match state.items.pop_front() {
            Some(item) => Ok(item),
            None => {
                give_back(&mut state.items);
                Err(if state.senders == 0 {
                    TryRecvError::Disconnected
                } else {
                    TryRecvError::Empty
                })
            }
        }
    }

    /// Whether a send ever found the queue full.
    pub(crate) fn was_full(&self) -> bool {
        self.0.refused.load(Ordering::Relaxed)
    }

    /// Whether nothing is queued right now.
    pub(crate) fn is_empty(&self) -> bool {
        crate::lock(&self.0.state).items.is_empty()
    }

    /// Whether every sender is gone or the receiver closed (items may
    /// still be queued).
    pub(crate) fn is_closed(&self) -> bool {
        let state = crate::lock(&self.0.state);
        state.senders == 0 || !state.open
    }

    /// Takes nothing more: sends fail from now on; what is queued can
    /// still be received, then `recv` returns `None`.
    pub(crate) fn close(&mut self) {
        crate::lock(&self.0.state).open = false;
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (items, waker) = {
            let mut state = crate::lock(&self.0.state);
            state.open = false;
            (std::mem::take(&mut state.items), state.waker.take())
        };
        // Dropped outside the lock: an item's drop may do anything, and
        // the waker would keep the finished task alive for the senders.
        drop((items, waker));
    }
}

/// An empty queue keeps a small buffer for the next items, not the one a
/// burst grew.
fn give_back<T>(items: &mut VecDeque<T>) {
    if items.capacity() > KEEP_CAPACITY {
        *items = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn items_arrive_in_order_and_the_end_follows_the_last_sender() {
        let (tx, mut rx) = channel(8);
        let tx2 = tx.clone();
        tx.try_send(1).unwrap();
        tx2.try_send(2).unwrap();
        drop(tx);
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.try_recv(), Ok(2));
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        assert!(!rx.is_closed());
        drop(tx2);
        assert!(rx.is_closed());
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn a_full_queue_and_a_closed_receiver_give_the_item_back() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(!rx.was_full());
        assert_eq!(tx.try_send(3), Err(TrySendError::Full(3)));
        assert!(rx.was_full());
        assert_eq!(tx.len(), 2);
        rx.close();
        assert!(tx.is_closed() && rx.is_closed());
        assert_eq!(tx.try_send(4), Err(TrySendError::Closed(4)));
        // What was queued before the close is still there, then the end.
        assert_eq!(rx.try_recv(), Ok(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, None);
        drop(rx);
        assert_eq!(tx.try_send(5), Err(TrySendError::Closed(5)));
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_an_item_and_for_the_end() {
        let (tx, mut rx) = channel::<u32>(4);
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await;
            let end = rx.recv().await;
            (first, end)
        });
        tokio::task::yield_now().await;
        tx.try_send(7).unwrap();
        tokio::task::yield_now().await;
        drop(tx);
        assert_eq!(waiting.await.unwrap(), (Some(7), None));
    }

    #[test]
    fn a_drained_queue_gives_back_a_burst_buffer() {
        let (tx, mut rx) = channel(1000);
        for i in 0..100 {
            tx.try_send(i).unwrap();
        }
        while rx.try_recv().is_ok() {}
        assert!(crate::lock(&rx.0.state).items.capacity() <= KEEP_CAPACITY);
        // A small queue keeps its buffer.
        tx.try_send(1).unwrap();
        let _ = rx.try_recv();
        let _ = rx.try_recv();
        assert!(crate::lock(&rx.0.state).items.capacity() > 0);
    }
}
