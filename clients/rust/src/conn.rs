//! One connection to the host, WebSocket or TCP lines, plain or over TLS,
//! carrying JSON frames.

use crate::{ClientError, Endpoint, Tls};
use futures_util::{SinkExt, StreamExt};
use respawn_protocol::ServerFrame;
use serde_json::{Value, json};
use std::io;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A byte stream to the host: TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Stream = Box<dyn Io>;

pub(crate) enum Conn {
    Ws(Box<WebSocketStream<Stream>>),
    Tcp {
        reader: BufReader<ReadHalf<Stream>>,
        writer: WriteHalf<Stream>,
    },
    /// Cut by the caller; every operation fails until replaced.
    Closed,
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection closed")
}

/// The `host:port` of a `ws://` or `wss://` URL (port 80 or 443 when it
/// names none).
fn authority(url: &str) -> io::Result<String> {
    let (rest, port) = match (url.strip_prefix("wss://"), url.strip_prefix("ws://")) {
        (Some(rest), _) => (rest, 443),
        (_, Some(rest)) => (rest, 80),
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("`{url}` is not a ws:// or wss:// URL"),
            ));
        }
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    // A port follows the last `:`, outside an IPv6 literal's brackets.
    let has_port = host.rsplit_once(':').is_some_and(|(_, p)| !p.contains(']'));
    Ok(if has_port {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    })
}

async fn connect(addr: &str, tls: Option<&Tls>) -> io::Result<Stream> {
    let tcp = TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    Ok(match tls {
        None => Box::new(tcp),
        Some(tls) => Box::new(tls.connector().connect(tls.server_name()?, tcp).await?),
    })
}

impl Conn {
    pub(crate) async fn open(endpoint: &Endpoint, tls: Option<&Tls>) -> io::Result<Conn> {
        match endpoint {
            Endpoint::Ws(url) => {
                let secure = url.starts_with("wss://");
                if secure && tls.is_none() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a wss:// endpoint needs `Options::tls`",
                    ));
                }
                let stream = connect(&authority(url)?, tls.filter(|_| secure)).await?;
                let (ws, _) = tokio_tungstenite::client_async(url.as_str(), stream)
                    .await
                    .map_err(io::Error::other)?;
                Ok(Conn::Ws(Box::new(ws)))
            }
            Endpoint::Tcp(addr) => {
                let stream = connect(&addr.to_string(), tls).await?;
                let (r, w) = tokio::io::split(stream);
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
                writer.write_all(&line).await?;
                writer.flush().await
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

    /// The next frame of one of `kinds`, answering heartbeats on the way;
    /// an error frame is returned as [`ClientError::Refused`].
    pub(crate) async fn expect_within(&mut self, timeout: Duration, kind: &str) -> Result<Value, ClientError> {
        self.expect_any_within(timeout, &[kind]).await
    }

    /// [`Conn::expect_within`] for any of several kinds.
    pub(crate) async fn expect_any_within(&mut self, timeout: Duration, kinds: &[&str]) -> Result<Value, ClientError> {
        let wait = async {
            loop {
                let frame = match self.recv().await {
                    Some(r) => r?,
                    None => return Err(ClientError::Io(closed())),
                };
                if kinds.iter().any(|k| frame["type"] == *k) {
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
                    _ => {
                        return Err(ClientError::Protocol(format!(
                            "expected `{}`, got {frame}",
                            kinds.join("` or `")
                        )));
                    }
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| ClientError::Protocol(format!("no `{}` within {timeout:?}", kinds.join("` or `"))))?
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

#[cfg(test)]
mod tests {
    #[test]
    fn urls_without_a_port_get_the_scheme_s_default() {
        assert_eq!(
            super::authority("wss://play.example.com/").unwrap(),
            "play.example.com:443"
        );
        assert_eq!(super::authority("ws://127.0.0.1:7700/x").unwrap(), "127.0.0.1:7700");
        assert_eq!(super::authority("ws://[::1]/").unwrap(), "[::1]:80");
        assert_eq!(super::authority("wss://[::1]:9/").unwrap(), "[::1]:9");
        assert!(super::authority("http://x/").is_err());
    }
}
