//! WebSocket players (browsers). Text and binary messages both carry JSON
//! envelopes; pings are answered by tungstenite,
//! and pings and pongs count as signs of life.

use super::stream::Stream;
use super::{Inbound, Transport};
use crate::config::NetConfig;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::io;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// How long a close frame for a refused frame may take to write.
const CLOSE_WRITE: std::time::Duration = std::time::Duration::from_secs(1);

/// A WebSocket player connection.
pub struct WsTransport {
    ws: WebSocketStream<Stream>,
    /// A close frame owed to the peer for a frame it sent that could not
    /// be taken; kept until written, so a `recv` cancelled mid-close (the
    /// session's `select!`) finishes it on the next call.
    owed_close: Option<CloseFrame>,
}

impl WsTransport {
    /// Performs the WebSocket handshake on an accepted stream.
    ///
    /// tungstenite's own size cap sits well above ours, so a message that
    /// is merely too large gets our `message_too_large` error and the
    /// connection lives on; only an absurd one ends the connection (1009).
    /// The buffers are small on purpose: tungstenite zero-fills the free
    /// part of its read buffer on every read attempt, and allocates it
    /// for every connection (its 128 KiB default cost half the host's CPU
    /// and most of an idle connection's memory).
    pub async fn accept(stream: Stream, net: &NetConfig) -> Result<Self, WsError> {
        let _ = stream.tcp().set_nodelay(true);
        let hard_cap = net.max_message_bytes.saturating_mul(4).max(1 << 20);
        let config = WebSocketConfig::default()
            .read_buffer_size(net.read_buffer_bytes)
            .write_buffer_size(net.write_buffer_bytes)
            .max_message_size(Some(hard_cap))
            .max_frame_size(Some(hard_cap));
        let ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
        Ok(Self { ws, owed_close: None })
    }
}

/// The close frame RFC 6455 asks for when a peer's frame cannot be taken:
/// 1009 for one beyond the transport's size cap, 1007 for a text frame
/// that is not UTF-8. Other errors end the connection without one.
fn close_for(e: &WsError) -> Option<CloseFrame> {
    let (code, reason) = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => (CloseCode::Size, "message too large"),
        WsError::Utf8(_) => (CloseCode::Invalid, "text frame is not UTF-8"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    })
}

impl WsTransport {
    /// Writes the close frame owed (best effort and brief: the connection
    /// ends anyway).
    async fn pay_close(&mut self) {
        if let Some(frame) = self.owed_close.clone() {
            let _ = tokio::time::timeout(CLOSE_WRITE, self.ws.close(Some(frame))).await;
            self.owed_close = None;
        }
    }
}

fn to_io(e: WsError) -> io::Error {
    match e {
        WsError::Io(e) => e,
        other => io::Error::other(other),
    }
}

impl Transport for WsTransport {
    async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        // The close is boxed (allocated only when owed), so the future
        // every connection's session holds stays small.
        if self.owed_close.is_some() {
            Box::pin(self.pay_close()).await;
            return Some(Err(io::Error::other(
                "the connection was closed after a frame it could not take",
            )));
        }
        loop {
            return match self.ws.next().await? {
                Ok(Message::Text(text)) => Some(Ok(Inbound::Data(Bytes::from(text)))),
                Ok(Message::Binary(data)) => Some(Ok(Inbound::Data(data))),
                Ok(Message::Ping(_) | Message::Pong(_)) => Some(Ok(Inbound::Heartbeat)),
                Ok(Message::Frame(_)) => continue,
                Ok(Message::Close(_)) => {
                    // Sends tungstenite's queued reply, so the client sees
                    // a clean close.
                    let _ = self.ws.flush().await;
                    None
                }
                Err(e) => {
                    if let Some(frame) = close_for(&e) {
                        self.owed_close = Some(frame);
                        Box::pin(self.pay_close()).await;
                    }
                    Some(Err(to_io(e)))
                }
            };
        }
    }

    async fn feed(&mut self, frame: Utf8Bytes) -> io::Result<()> {
        self.ws.feed(Message::Text(frame)).await.map_err(to_io)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().await.map_err(to_io)
    }

    async fn heartbeat(&mut self) -> io::Result<()> {
        self.ws.send(Message::Ping(Bytes::new())).await.map_err(to_io)
    }

    async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }

    fn abort(&mut self) {
        // tungstenite's own buffer goes with the transport.
        let _ = self.ws.get_ref().tcp().set_zero_linger();
    }
}
