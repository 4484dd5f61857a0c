//! Player transports: WebSocket for browsers, newline-delimited JSON over
//! TCP for native clients, bots and `nc`. Both carry the same envelopes;
//! the session never knows which one it speaks.

pub mod admission;
pub mod metered;
pub mod stream;
pub mod tcp;
pub mod tls;
pub mod ws;

use std::future::Future;
use std::io;
use tokio_tungstenite::tungstenite::Utf8Bytes;

pub use respawn_protocol::line::Inbound;

/// A player connection as the session sees it.
pub trait Transport: Send {
    /// The next frame; `None` when the player closed the connection.
    /// Cancel-safe, so the session can `select!` on it.
    fn recv(&mut self) -> impl Future<Output = Option<io::Result<Inbound>>> + Send;
    /// Queues one frame for writing; it may be written at once if the
    /// write buffer is full, or only at the next [`flush`](Self::flush).
    /// Writing every queued frame and flushing once costs one system call
    /// where a flush per frame costs one each.
    fn feed(&mut self, frame: Utf8Bytes) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes everything queued.
    fn flush(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Writes one frame and flushes.
    fn send(&mut self, frame: Utf8Bytes) -> impl Future<Output = io::Result<()>> + Send {
        async move {
            self.feed(frame).await?;
            self.flush().await
        }
    }
    /// Asks the player for a sign of life: a WebSocket ping, or a `ping`
    /// line over TCP (answered with `pong`).
    fn heartbeat(&mut self) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the connection politely.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
    /// Gives the connection up: what is still unsent, in our buffers and
    /// the kernel's, is discarded, and dropping the transport then resets
    /// the connection instead of keeping megabytes for a reader that
    /// stopped reading.
    fn abort(&mut self);
}
