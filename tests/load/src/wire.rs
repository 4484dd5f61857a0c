//! Reading Respawn's frames off a socket, for both ends the harness runs:
//! the load clients and the native baseline server. Both reads are
//! cancel-safe (they run in `select!` loops): what was read stays in the
//! caller's buffer if the future is dropped.

use futures_util::StreamExt;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Hands the next WebSocket text or binary message to `out`; false once
/// the connection closed.
pub async fn read_ws(ws: &mut WebSocketStream<TcpStream>, out: &mut impl FnMut(String)) -> anyhow::Result<bool> {
    match ws.next().await {
        None | Some(Ok(Message::Close(_))) => Ok(false),
        Some(Ok(Message::Text(t))) => {
            out(t.as_str().to_owned());
            Ok(true)
        }
        Some(Ok(Message::Binary(b))) => {
            out(String::from_utf8_lossy(&b).into_owned());
            Ok(true)
        }
        Some(Ok(_)) => Ok(true),
        Some(Err(e)) => Err(e.into()),
    }
}

/// Reads what the TCP stream has and hands every complete, non-empty line
/// (without `\n` or `\r\n`) to `out`; a partial line stays in `buf`. False
/// once the stream ended.
pub async fn read_lines(
    rd: &mut OwnedReadHalf,
    buf: &mut Vec<u8>,
    out: &mut impl FnMut(String),
) -> anyhow::Result<bool> {
    let mut chunk = [0u8; 8192];
    let n = rd.read(&mut chunk).await?;
    if n == 0 {
        return Ok(false);
    }
    buf.extend_from_slice(&chunk[..n]);
    let mut start = 0;
    while let Some(i) = buf[start..].iter().position(|&b| b == b'\n') {
        let line = &buf[start..start + i];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if !line.is_empty() {
            out(String::from_utf8_lossy(line).into_owned());
        }
        start += i + 1;
    }
    buf.drain(..start);
    Ok(true)
}
