//! One connection to the host, WebSocket or TCP lines, carrying JSON
//! frames.

use crate::{ClientError, Endpoint};
use futures_util::{SinkExt, StreamExt};
use respawn_protocol::ServerFrame;
use serde_json::{Value, json};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) enum Conn {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Tcp {
        reader: BufReader<OwnedReadHalf>,
        writer: OwnedWriteHalf,
    },
    /// Cut by the caller; every operation fails until replaced.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

impl Conn {
    pub(crate) async fn open(endpoint: &Endpoint) -> io::Result<Conn> {
        match endpoint {
            Endpoint::Ws(url) => {
                let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
                    .await
                    .map_err(io::Error::other)?;
                Ok(Conn::Ws(Box::new(ws)))
            }
            Endpoint::Tcp(addr) => {
                let stream = TcpStream::connect(addr).await?;
                let _ = stream.set_nodelay(true);
                let (r, w) = stream.into_split();
                Ok(Conn::Tcp {
                    reader: BufReader::new(r),
                    writer: w,
                })
            }
        }
    }

    pub(crate) async fn send(&mut self, frame: &Value) -> io::Result<()> {
        let text = frame.to_string();
        match self {
            Conn::Ws(ws) => ws.send(Message::text(text)).await.map_err(io::Error::other),
            Conn::Tcp { writer, .. } => {
                let mut line = text.into_bytes();
                line.push(b'\n');
                writer.write_all(&line).await
            }
            Conn::Closed => Err(closed()),
        }
    }

    /// The next frame; `None` when the host closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<Result<Value, ClientError>> {
        let text = match self {
            Conn::Ws(ws) => loop {
                match ws.next().await? {
                    Ok(Message::Text(t)) => break t.to_string(),
                    Ok(Message::Binary(b)) => break String::from_utf8_lossy(&b).into_owned(),
                    Ok(Message::Close(_)) => return None,
                    Ok(_) => continue,
                    Err(e) => return Some(Err(ClientError::Io(io::Error::other(e)))),
                }
            },
            Conn::Tcp { reader, .. } => {
                let mut line = String::new();
                match reader.read_line(&mut line).await {
                    Ok(0) => return None,
                    Ok(_) => line,
                    Err(e) => return Some(Err(ClientError::Io(e))),
                }
            }
            Conn::Closed => return None,
        };
        Some(serde_json::from_str(&text).map_err(|e| ClientError::Protocol(format!("invalid JSON {text:?}: {e}"))))
    }

    /// The next frame of `kind`, answering heartbeats on the way; an error
    /// frame is returned as [`ClientError::Refused`].
    pub(crate) async fn expect_within(&mut self, timeout: Duration, kind: &str) -> Result<Value, ClientError> {
        let wait = async {
            loop {
                let frame = match self.recv().await {
                    Some(r) => r?,
                    None => return Err(ClientError::Io(closed())),
                };
                if frame["type"] == kind {
                    return Ok(frame);
                }
                match crate::typed(&frame) {
                    Some(ServerFrame::Ping) => {
                        let _ = self.send(&json!({"type": "pong"})).await;
                    }
                    Some(ServerFrame::Error { .. }) => {
                        let code = frame["code"].as_str().unwrap_or_default().to_owned();
                        return Err(ClientError::Refused { code, frame });
                    }
                    _ => return Err(ClientError::Protocol(format!("expected `{kind}`, got {frame}"))),
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Protocol(format!("no `{kind}` within {timeout:?}")))?
    }

    /// Drops the socket without a close handshake.
    pub(crate) async fn abort(&mut self) {
        *self = Conn::Closed;
    }

    /// Says goodbye and closes.
    pub(crate) async fn close(&mut self) {
        match self {
            Conn::Ws(ws) => {
                let _ = WebSocketStream::close(&mut **ws, None).await;
            }
            Conn::Tcp { writer, .. } => {
                let _ = writer.shutdown().await;
            }
            Conn::Closed => {}
        }
        *self = Conn::Closed;
    }
}
