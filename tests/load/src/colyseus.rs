//! A minimal Colyseus client: the load generator's side of the Colyseus baseline
//! (`tests/load/colyseus/server.js`).
//!
//! Checked against `@colyseus/core` 0.18.17 + `@colyseus/ws-transport` 0.18.4
//! (`@colyseus/schema` 5.0.34, `msgpackr` 2.x) on Node 20, and against the
//! handshake of the official `@colyseus/sdk` 0.18.4.
//!
//! # Protocol
//!
//! **Matchmaking** (HTTP/1.1, same port as the WebSocket):
//! `POST /matchmake/joinOrCreate/chat` with `Content-Type: application/json` and
//! the join options as the body, here `{"room": <room>, "name": <name>}`. The
//! room type is filtered by `room`, so equal names share a room (until it is full).
//! `200` answers a seat reservation
//! `{"name":"chat","sessionId":…,"roomId":…,"processId":…}` (plus `devMode`,
//! `publicAddress`, `protocol` when set); an error answers a non-2xx status with
//! `{"code":…,"error":…}` (codes 520..526, e.g. 524 = seat reservation expired).
//!
//! **Seat**: WebSocket `ws://<addr>/<processId>/<roomId>?sessionId=<sessionId>`,
//! binary frames only. The seat must be taken within the reservation time
//! (15 s by default).
//!
//! **Frames**: byte 0 is the protocol code (low 5 bits; the high 3 bits are
//! modifier flags, e.g. 0x80 TIMED on state patches of input rooms), then:
//!
//! | code | name             | layout after byte 0                                       |
//! |------|------------------|-----------------------------------------------------------|
//! | 10   | JOIN_ROOM        | s→c `[u8 len][reconnection token][u8 len][serializer id]`  |
//! |      |                  | `[num state-reflection len][reflection][tagged sections]`  |
//! |      |                  | c→s `[]` (the bare code byte acknowledges the join)         |
//! | 11   | ERROR            | s→c `[num code][str message]`                              |
//! | 12   | LEAVE_ROOM       | c→s `[]` (consented leave; the server closes with 4000)    |
//! | 13   | ROOM_DATA        | `[str type \| num type][msgpack payload, optional]`        |
//! | 14   | ROOM_STATE       | state serializer bytes (ignored: the room has no state)    |
//! | 15   | ROOM_STATE_PATCH | state serializer bytes (ignored)                           |
//! | 17   | ROOM_DATA_BYTES  | `[str type \| num type][raw bytes]` (ignored)              |
//! | 18   | PING             | c→s `[]`, answered by s→c `[]` (application-level ping)    |
//! | 22   | ROOM_RESPONSE    | reply to ROOM_REQUEST (21) (ignored)                       |
//!
//! `str` and `num` in the headers are `@colyseus/schema`'s encoding, *not*
//! msgpack: msgpack type bytes (fixstr / 0xd9 / 0xda / 0xdb, fixint / 0xcc.. /
//! 0xca / 0xcb …) but with LITTLE-endian lengths and values. The ROOM_DATA
//! payload is ordinary (big-endian) msgpack written by msgpackr with
//! `useRecords: false`.
//!
//! Join: after the WebSocket upgrade the server sends JOIN_ROOM (serializer id
//! `"none"` for this stateless room, reflection length 0); the client answers a
//! bare JOIN_ROOM byte, and only then does the server deliver messages to it
//! (anything broadcast before is queued until the ack).
//!
//! Chat: `say` sends ROOM_DATA type `"say"`, payload `{"say": text}`; the room
//! broadcasts ROOM_DATA type `"said"`, payload
//! `{"type":"said","id":<n>,"from":<name>,"text":<text>,"at":<ms>}` to every
//! member, the sender included.
//!
//! Limits: the ws transport refuses client frames over 4 KiB (`maxPayload`), so
//! a chat line must stay under ~4 KiB; rooms have no message-rate limit
//! (`maxMessagesPerSecond` = Infinity).
//!
//! Liveness: the server sends a WebSocket ping every 3 s and terminates a
//! connection with two pings unanswered; tungstenite answers pings while
//! [`ColyseusConn::next_said`] (or [`ColyseusConn::say`]) drives the socket.

use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

const JOIN_ROOM: u8 = 10;
const ERROR: u8 = 11;
const LEAVE_ROOM: u8 = 12;
const ROOM_DATA: u8 = 13;
const PROTOCOL_CODE_MASK: u8 = 0x1f;

/// Upper bound on a matchmaking response (a seat reservation is ~100 bytes).
const MAX_HTTP_RESPONSE: usize = 64 * 1024;

pub struct ColyseusConn {
    ws: WebSocketStream<TcpStream>,
}

impl ColyseusConn {
    /// HTTP matchmaking (joinOrCreate "chat" with option {room: room, name: name}) then the WebSocket seat; returns once joined. `local` binds the source address of both the HTTP and WS connections.
    pub async fn join(addr: SocketAddr, room: &str, name: &str, local: Option<IpAddr>) -> anyhow::Result<ColyseusConn> {
        let body = serde_json::json!({ "room": room, "name": name }).to_string();
        let reply = http_post_json(addr, local, "/matchmake/joinOrCreate/chat", &body).await?;
        let seat = Seat::parse(&reply)?;

        let stream = connect(addr, local).await.context("colyseus: websocket connect")?;
        let url = format!(
            "ws://{addr}/{}/{}?sessionId={}",
            seat.process_id, seat.room_id, seat.session_id
        );
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .write_buffer_size(8 * 1024);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url.as_str(), stream, Some(config))
            .await
            .with_context(|| format!("colyseus: websocket handshake {url}"))?;
        let mut conn = ColyseusConn { ws };

        loop {
            let frame = match conn.ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(c))) => bail!("colyseus: closed before JOIN_ROOM: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(e).context("colyseus: waiting for JOIN_ROOM"),
                None => bail!("colyseus: closed before JOIN_ROOM"),
            };
            match frame.first().map(|b| b & PROTOCOL_CODE_MASK) {
                Some(JOIN_ROOM) => {
                    parse_join_room(&frame)?;
                    conn.ws
                        .send(Message::Binary(vec![JOIN_ROOM].into()))
                        .await
                        .context("colyseus: JOIN_ROOM ack")?;
                    return Ok(conn);
                }
                Some(ERROR) => bail!("colyseus: join refused: {}", parse_error(&frame)),
                _ => continue,
            }
        }
    }

    /// Sends one chat line ("say" message; the room broadcasts it to all members, sender included).
    pub async fn say(&mut self, text: &str) -> anyhow::Result<()> {
        let mut frame = Vec::with_capacity(16 + text.len());
        frame.push(ROOM_DATA);
        schema_write_str(&mut frame, "say");
        mp::write_map_len(&mut frame, 1);
        mp::write_str(&mut frame, "say");
        mp::write_str(&mut frame, text);
        self.ws
            .send(Message::Binary(frame.into()))
            .await
            .context("colyseus: say")?;
        Ok(())
    }

    /// The text of the next "said" message received, or None when the connection closed; other protocol frames (pings, state patches, errors) are handled inside.
    ///
    /// WebSocket pings, state frames and other message types are skipped; a
    /// server LEAVE_ROOM is acknowledged and the read goes on until the close.
    /// An ERROR frame from the room is returned as an error (the connection
    /// stays usable). A close, or the end of the stream, is `None`; a reset
    /// without a close frame is an error. Cancel-safe between frames (it only
    /// awaits the socket), so it can sit in a `select!` against a send timer.
    pub async fn next_said(&mut self) -> anyhow::Result<Option<String>> {
        loop {
            let frame = match self.ws.next().await {
                None => return Ok(None),
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(_)) => continue, // ping/pong (answered by tungstenite), close (stream ends next), text
                Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => return Ok(None),
                Some(Err(e)) => return Err(e).context("colyseus: read"),
            };
            match frame.first().map(|b| b & PROTOCOL_CODE_MASK) {
                Some(ROOM_DATA) => {
                    if let Some(text) = parse_said(&frame)? {
                        return Ok(Some(text));
                    }
                }
                Some(ERROR) => bail!("colyseus: room error: {}", parse_error(&frame)),
                Some(LEAVE_ROOM) => {
                    self.ws
                        .send(Message::Binary(vec![LEAVE_ROOM].into()))
                        .await
                        .context("colyseus: leave")?;
                }
                _ => {} // JOIN_ROOM repeat, state, ping replies, bytes, responses
            }
        }
    }
}

/// The seat reservation fields the WebSocket URL needs.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seat {
    session_id: String,
    room_id: String,
    process_id: String,
}

impl Seat {
    fn parse(body: &[u8]) -> anyhow::Result<Seat> {
        let seat: Seat = serde_json::from_slice(body)
            .with_context(|| format!("colyseus: bad seat reservation {:?}", String::from_utf8_lossy(body)))?;
        // They go into a URL path/query unescaped: insist on the nanoid alphabet.
        let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ensure!(
            ok(&seat.session_id) && ok(&seat.room_id) && ok(&seat.process_id),
            "colyseus: unexpected seat reservation {seat:?}"
        );
        Ok(seat)
    }
}

async fn connect(addr: SocketAddr, local: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One HTTP/1.1 POST with `Connection: close`; returns the body of a 2xx answer.
async fn http_post_json(addr: SocketAddr, local: Option<IpAddr>, path: &str, body: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = connect(addr, local).await.context("colyseus: matchmaking connect")?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("colyseus: matchmaking write")?;

    let mut response = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.context("colyseus: matchmaking read")?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        ensure!(
            response.len() <= MAX_HTTP_RESPONSE,
            "colyseus: matchmaking response too large"
        );
    }
    let (status, body) = parse_http_response(&response)?;
    ensure!(
        (200..300).contains(&status),
        "colyseus: POST {path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

/// Status and body of a complete HTTP/1.1 response read until EOF
/// (`Content-Length` or chunked body, or everything up to the close).
fn parse_http_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let head_end = find(raw, b"\r\n\r\n").ok_or_else(|| anyhow!("colyseus: truncated HTTP response"))?;
    let head = std::str::from_utf8(&raw[..head_end]).context("colyseus: non-UTF-8 HTTP head")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version.starts_with("HTTP/1."),
        "colyseus: bad HTTP status line {status_line:?}"
    );
    let status: u16 = parts
        .next()
        .unwrap_or_default()
        .parse()
        .with_context(|| format!("colyseus: bad HTTP status line {status_line:?}"))?;

    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(value.parse::<usize>().context("colyseus: bad Content-Length")?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }

    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        ensure!(
            rest.len() >= len,
            "colyseus: HTTP body truncated ({} of {len} bytes)",
            rest.len()
        );
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut rest: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = find(rest, b"\r\n").ok_or_else(|| anyhow!("colyseus: truncated chunk size"))?;
        let size_str = std::str::from_utf8(&rest[..line_end]).context("colyseus: bad chunk size")?;
        let size_str = size_str.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_str, 16).context("colyseus: bad chunk size")?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(rest.len() >= size + 2, "colyseus: truncated chunk");
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Checks a server JOIN_ROOM frame and returns its serializer id.
fn parse_join_room(frame: &[u8]) -> anyhow::Result<&str> {
    let mut r = Cursor { buf: frame, pos: 1 };
    let token_len = r.u8()? as usize;
    r.take(token_len)?;
    let id_len = r.u8()? as usize;
    let serializer = std::str::from_utf8(r.take(id_len)?).context("colyseus: bad serializer id")?;
    Ok(serializer)
}

/// `code: message` of an ERROR frame (best effort: it is only reported).
fn parse_error(frame: &[u8]) -> String {
    let mut r = Cursor { buf: frame, pos: 1 };
    let code = schema_read_num(&mut r)
        .map(|c| c.to_string())
        .unwrap_or_else(|_| "?".into());
    let message = schema_read_str(&mut r).map(str::to_owned).unwrap_or_default();
    format!("{code}: {message}")
}

/// The `text` of a ROOM_DATA frame of type "said", `None` for another type.
fn parse_said(frame: &[u8]) -> anyhow::Result<Option<String>> {
    let mut r = Cursor { buf: frame, pos: 1 };
    if !schema_is_str(&r) {
        return Ok(None); // numeric message type
    }
    if schema_read_str(&mut r)? != "said" {
        return Ok(None);
    }
    let mut m = mp::Reader::new(&frame[r.pos..]);
    match m.peek()? {
        // Bare string payload.
        0xa0..=0xbf | 0xd9..=0xdb => return Ok(Some(m.read_str()?.to_owned())),
        _ => {}
    }
    let entries = m.read_map_len()?;
    for _ in 0..entries {
        let key_is_text = if m.is_str()? {
            m.read_str()? == "text"
        } else {
            m.skip()?;
            false
        };
        if key_is_text {
            return match m.read_value()? {
                mp::Value::Str(s) => Ok(Some(s)),
                other => bail!("colyseus: \"said\" text is not a string: {other:?}"),
            };
        }
        m.skip()?;
    }
    bail!("colyseus: \"said\" message without text")
}

// ---------------------------------------------------------------------------
// @colyseus/schema header encoding (msgpack type bytes, little-endian payloads)
// ---------------------------------------------------------------------------

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| anyhow!("truncated frame"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn le<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
        Ok(self.take(N)?.try_into().expect("length checked"))
    }
}

/// A string as Colyseus's schema encoding writes it: msgpack's headers with
/// little-endian lengths.
fn schema_write_str(out: &mut Vec<u8>, s: &str) {
    mp::write_str_as(out, s, |n: u32, width: usize| n.to_le_bytes()[..width].to_vec());
}

/// Same test as the server's `decode.stringCheck` (an empty fixstr counts as a number).
fn schema_is_str(r: &Cursor) -> bool {
    matches!(r.buf.get(r.pos), Some(&(0xa1..=0xbf | 0xd9..=0xdb)))
}

fn schema_read_str<'a>(r: &mut Cursor<'a>) -> anyhow::Result<&'a str> {
    let len = match r.u8()? {
        p @ 0xa0..=0xbf => (p & 0x1f) as usize,
        0xd9 => r.u8()? as usize,
        0xda => u16::from_le_bytes(r.le()?) as usize,
        0xdb => u32::from_le_bytes(r.le()?) as usize,
        p => bail!("not a schema string (0x{p:02x})"),
    };
    std::str::from_utf8(r.take(len)?).context("non-UTF-8 string")
}

fn schema_read_num(r: &mut Cursor) -> anyhow::Result<f64> {
    Ok(match r.u8()? {
        p @ 0x00..=0x7f => p as f64,
        p @ 0xe0..=0xff => (p as i8) as f64,
        0xca => f32::from_le_bytes(r.le()?) as f64,
        0xcb => f64::from_le_bytes(r.le()?),
        0xcc => r.u8()? as f64,
        0xcd => u16::from_le_bytes(r.le()?) as f64,
        0xce => u32::from_le_bytes(r.le()?) as f64,
        0xcf => u64::from_le_bytes(r.le()?) as f64,
        0xd0 => (r.u8()? as i8) as f64,
        0xd1 => i16::from_le_bytes(r.le()?) as f64,
        0xd2 => i32::from_le_bytes(r.le()?) as f64,
        0xd3 => i64::from_le_bytes(r.le()?) as f64,
        p => bail!("not a schema number (0x{p:02x})"),
    })
}

// ---------------------------------------------------------------------------
// msgpack (big-endian, the spec's encoding), the subset msgpackr produces for
// JSON-like values
// ---------------------------------------------------------------------------

mod mp {
    use anyhow::{anyhow, bail};

    pub fn write_str(out: &mut Vec<u8>, s: &str) {
        write_str_as(out, s, |n: u32, width: usize| n.to_be_bytes()[4 - width..].to_vec());
    }

    /// A msgpack string header (fixstr, str8, str16, str32) and the bytes,
    /// with the 2- and 4-byte lengths in the byte order `len` writes.
    pub fn write_str_as(out: &mut Vec<u8>, s: &str, len: impl Fn(u32, usize) -> Vec<u8>) {
        let n = s.len();
        if n < 0x20 {
            out.push(0xa0 | n as u8);
        } else if n < 0x100 {
            out.extend_from_slice(&[0xd9, n as u8]);
        } else if n < 0x1_0000 {
            out.push(0xda);
            out.extend_from_slice(&len(n as u32, 2));
        } else {
            out.push(0xdb);
            out.extend_from_slice(&len(n as u32, 4));
        }
        out.extend_from_slice(s.as_bytes());
    }

    pub fn write_map_len(out: &mut Vec<u8>, n: u32) {
        if n < 16 {
            out.push(0x80 | n as u8);
        } else if n < 0x1_0000 {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            out.push(0xdf);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    #[cfg(test)]
    pub fn write_uint(out: &mut Vec<u8>, v: u64) {
        if v < 0x80 {
            out.push(v as u8);
        } else if v < 0x100 {
            out.extend_from_slice(&[0xcc, v as u8]);
        } else if v < 0x1_0000 {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v < 0x1_0000_0000 {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    #[cfg(test)]
    pub fn write_f64(out: &mut Vec<u8>, v: f64) {
        out.push(0xcb);
        out.extend_from_slice(&v.to_be_bytes());
    }

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Nil,
        Bool(bool),
        Int(i64),
        UInt(u64),
        Float(f64),
        Str(String),
        Bin(Vec<u8>),
        Array(Vec<Value>),
        Map(Vec<(Value, Value)>),
        Ext(i8, Vec<u8>),
    }

    pub struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        pub fn new(buf: &'a [u8]) -> Self {
            Reader { buf, pos: 0 }
        }

        #[cfg(test)]
        pub fn at_end(&self) -> bool {
            self.pos == self.buf.len()
        }

        pub fn peek(&self) -> anyhow::Result<u8> {
            self.buf
                .get(self.pos)
                .copied()
                .ok_or_else(|| anyhow!("msgpack: truncated"))
        }

        pub fn is_str(&self) -> anyhow::Result<bool> {
            Ok(matches!(self.peek()?, 0xa0..=0xbf | 0xd9..=0xdb))
        }

        fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
            let end = self
                .pos
                .checked_add(n)
                .filter(|&e| e <= self.buf.len())
                .ok_or_else(|| anyhow!("msgpack: truncated"))?;
            let s = &self.buf[self.pos..end];
            self.pos = end;
            Ok(s)
        }

        fn be<const N: usize>(&mut self) -> anyhow::Result<[u8; N]> {
            Ok(self.take(N)?.try_into().expect("length checked"))
        }

        fn u8(&mut self) -> anyhow::Result<u8> {
            Ok(self.take(1)?[0])
        }
        fn u16(&mut self) -> anyhow::Result<usize> {
            Ok(u16::from_be_bytes(self.be()?) as usize)
        }
        fn u32(&mut self) -> anyhow::Result<usize> {
            Ok(u32::from_be_bytes(self.be()?) as usize)
        }

        pub fn read_str(&mut self) -> anyhow::Result<&'a str> {
            let len = match self.u8()? {
                p @ 0xa0..=0xbf => (p & 0x1f) as usize,
                0xd9 => self.u8()? as usize,
                0xda => self.u16()?,
                0xdb => self.u32()?,
                p => bail!("msgpack: expected a string, found 0x{p:02x}"),
            };
            std::str::from_utf8(self.take(len)?).map_err(|_| anyhow!("msgpack: non-UTF-8 string"))
        }

        pub fn read_map_len(&mut self) -> anyhow::Result<usize> {
            match self.u8()? {
                p @ 0x80..=0x8f => Ok((p & 0x0f) as usize),
                0xde => self.u16(),
                0xdf => self.u32(),
                p => bail!("msgpack: expected a map, found 0x{p:02x}"),
            }
        }

        /// Skips one value without allocating.
        pub fn skip(&mut self) -> anyhow::Result<()> {
            let mut pending: usize = 1;
            while pending > 0 {
                pending -= 1;
                let p = self.u8()?;
                let skip = match p {
                    0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => 0,
                    0x80..=0x8f => {
                        pending += 2 * (p & 0x0f) as usize;
                        0
                    }
                    0x90..=0x9f => {
                        pending += (p & 0x0f) as usize;
                        0
                    }
                    0xa0..=0xbf => (p & 0x1f) as usize,
                    0xc4 | 0xd9 => self.u8()? as usize,
                    0xc5 | 0xda => self.u16()?,
                    0xc6 | 0xdb => self.u32()?,
                    0xc7 => self.u8()? as usize + 1,
                    0xc8 => self.u16()? + 1,
                    0xc9 => self.u32()? + 1,
                    0xcc | 0xd0 => 1,
                    0xcd | 0xd1 => 2,
                    0xca | 0xce | 0xd2 => 4,
                    0xcb | 0xcf | 0xd3 => 8,
                    0xd4 => 2,
                    0xd5 => 3,
                    0xd6 => 5,
                    0xd7 => 9,
                    0xd8 => 17,
                    0xdc => {
                        pending += self.u16()?;
                        0
                    }
                    0xdd => {
                        pending += self.u32()?;
                        0
                    }
                    0xde => {
                        pending += 2 * self.u16()?;
                        0
                    }
                    0xdf => {
                        pending += 2 * self.u32()?;
                        0
                    }
                    0xc1 => bail!("msgpack: reserved byte 0xc1"),
                };
                self.take(skip)?;
            }
            Ok(())
        }

        pub fn read_value(&mut self) -> anyhow::Result<Value> {
            self.read_value_depth(0)
        }

        fn read_value_depth(&mut self, depth: usize) -> anyhow::Result<Value> {
            if depth > 64 {
                bail!("msgpack: nested too deep");
            }
            let p = self.peek()?;
            if matches!(p, 0xa0..=0xbf | 0xd9..=0xdb) {
                return Ok(Value::Str(self.read_str()?.to_owned()));
            }
            if matches!(p, 0x80..=0x8f | 0xde | 0xdf) {
                let n = self.read_map_len()?;
                let mut entries = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    let k = self.read_value_depth(depth + 1)?;
                    let v = self.read_value_depth(depth + 1)?;
                    entries.push((k, v));
                }
                return Ok(Value::Map(entries));
            }
            self.pos += 1;
            Ok(match p {
                0x00..=0x7f => Value::UInt(p as u64),
                0xe0..=0xff => Value::Int((p as i8) as i64),
                0xc0 => Value::Nil,
                0xc2 => Value::Bool(false),
                0xc3 => Value::Bool(true),
                0x90..=0x9f | 0xdc | 0xdd => {
                    let n = match p {
                        0xdc => self.u16()?,
                        0xdd => self.u32()?,
                        _ => (p & 0x0f) as usize,
                    };
                    let mut items = Vec::with_capacity(n.min(1024));
                    for _ in 0..n {
                        items.push(self.read_value_depth(depth + 1)?);
                    }
                    Value::Array(items)
                }
                0xc4..=0xc6 => {
                    let n = match p {
                        0xc4 => self.u8()? as usize,
                        0xc5 => self.u16()?,
                        _ => self.u32()?,
                    };
                    Value::Bin(self.take(n)?.to_vec())
                }
                0xc7..=0xc9 | 0xd4..=0xd8 => {
                    let n = match p {
                        0xc7 => self.u8()? as usize,
                        0xc8 => self.u16()?,
                        0xc9 => self.u32()?,
                        _ => 1 << (p - 0xd4),
                    };
                    let ty = self.u8()? as i8;
                    Value::Ext(ty, self.take(n)?.to_vec())
                }
                0xca => Value::Float(f32::from_be_bytes(self.be()?) as f64),
                0xcb => Value::Float(f64::from_be_bytes(self.be()?)),
                0xcc => Value::UInt(self.u8()? as u64),
                0xcd => Value::UInt(u16::from_be_bytes(self.be()?) as u64),
                0xce => Value::UInt(u32::from_be_bytes(self.be()?) as u64),
                0xcf => Value::UInt(u64::from_be_bytes(self.be()?)),
                0xd0 => Value::Int(i8::from_be_bytes(self.be()?) as i64),
                0xd1 => Value::Int(i16::from_be_bytes(self.be()?) as i64),
                0xd2 => Value::Int(i32::from_be_bytes(self.be()?) as i64),
                0xd3 => Value::Int(i64::from_be_bytes(self.be()?)),
                _ => bail!("msgpack: reserved byte 0x{p:02x}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mp::{self, Value};
    use super::*;

    fn said_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![ROOM_DATA];
        schema_write_str(&mut f, "said");
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn msgpack_str_boundaries() {
        for (len, header) in [
            (0usize, vec![0xa0]),
            (31, vec![0xbf]),
            (32, vec![0xd9, 32]),
            (255, vec![0xd9, 255]),
            (256, vec![0xda, 1, 0]),
            (65535, vec![0xda, 0xff, 0xff]),
            (65536, vec![0xdb, 0, 1, 0, 0]),
        ] {
            let s = "x".repeat(len);
            let mut out = Vec::new();
            mp::write_str(&mut out, &s);
            assert_eq!(&out[..header.len()], &header[..], "len {len}");
            assert_eq!(out.len(), header.len() + len);
            let mut r = mp::Reader::new(&out);
            assert_eq!(r.read_str().unwrap(), s);
            assert!(r.at_end());
            let mut r = mp::Reader::new(&out);
            r.skip().unwrap();
            assert!(r.at_end());
        }
    }

    #[test]
    fn msgpack_utf8_length_is_bytes() {
        let mut out = Vec::new();
        mp::write_str(&mut out, "héllo ✓");
        assert_eq!(out[0], 0xa0 | "héllo ✓".len() as u8);
        assert_eq!(mp::Reader::new(&out).read_str().unwrap(), "héllo ✓");
    }

    #[test]
    fn msgpack_uints_and_floats() {
        for (v, header) in [
            (0u64, 0x00u8),
            (127, 0x7f),
            (128, 0xcc),
            (255, 0xcc),
            (256, 0xcd),
            (65535, 0xcd),
            (65536, 0xce),
            (u32::MAX as u64, 0xce),
            (1 << 32, 0xcf),
            (u64::MAX, 0xcf),
        ] {
            let mut out = Vec::new();
            mp::write_uint(&mut out, v);
            assert_eq!(out[0], header, "{v}");
            let mut r = mp::Reader::new(&out);
            assert_eq!(r.read_value().unwrap(), Value::UInt(v));
            assert!(r.at_end());
        }
        let mut out = Vec::new();
        mp::write_f64(&mut out, 1_780_000_000_123.0);
        assert_eq!(out[0], 0xcb);
        assert_eq!(out[1..], 1_780_000_000_123.0f64.to_be_bytes());
        assert_eq!(
            mp::Reader::new(&out).read_value().unwrap(),
            Value::Float(1_780_000_000_123.0)
        );
    }

    #[test]
    fn msgpack_map_round_trip() {
        let mut out = Vec::new();
        mp::write_map_len(&mut out, 1);
        mp::write_str(&mut out, "say");
        mp::write_str(&mut out, "hello");
        assert_eq!(out, b"\x81\xa3say\xa5hello");
        let v = mp::Reader::new(&out).read_value().unwrap();
        assert_eq!(
            v,
            Value::Map(vec![(Value::Str("say".into()), Value::Str("hello".into()))])
        );

        let mut big = Vec::new();
        mp::write_map_len(&mut big, 16);
        assert_eq!(big, [0xde, 0x00, 0x10]);
        for i in 0..16 {
            mp::write_str(&mut big, &format!("k{i}"));
            mp::write_uint(&mut big, i);
        }
        let mut r = mp::Reader::new(&big);
        assert_eq!(r.read_map_len().unwrap(), 16);
        let mut r = mp::Reader::new(&big);
        r.skip().unwrap();
        assert!(r.at_end());
    }

    /// Bytes msgpackr 2 (`useRecords: false`, as core configures it) produced for
    /// the server's broadcast `{type:"said", id:3, from:"p1", text:"hello",
    /// at:1780000000123}`: a map16 header even for 5 entries, `at` as float64.
    #[test]
    fn decodes_msgpackr_said() {
        let mut p = vec![0xde, 0x00, 0x05];
        p.extend_from_slice(b"\xa4type\xa4said\xa2id\x03\xa4from\xa2p1\xa4text\xa5hello\xa2at");
        p.extend_from_slice(&[0xcb, 0x42, 0x79, 0xe7, 0x04, 0x48, 0x87, 0xb0, 0x00]);
        assert_eq!(parse_said(&said_frame(&p)).unwrap().as_deref(), Some("hello"));

        // Full generic decode agrees.
        let v = mp::Reader::new(&p).read_value().unwrap();
        let Value::Map(entries) = v else { panic!("not a map") };
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[1], (Value::Str("id".into()), Value::UInt(3)));
        assert_eq!(entries[3], (Value::Str("text".into()), Value::Str("hello".into())));
        assert_eq!(entries[4], (Value::Str("at".into()), Value::Float(1_780_000_000_123.0)));
    }

    #[test]
    fn said_variants() {
        // Non-string keys, ext / bin / nested values before "text" are skipped; str8 text.
        let long = "y".repeat(40);
        let mut p = vec![
            0x84, 0x01, 0xd6, 0xff, 0, 0, 0, 0, 0xa1, b'x', 0x92, 0x81, 0xa1, b'a', 0xc3, 0xc4, 0x02, 1, 2, 0xa4,
        ];
        p.extend_from_slice(b"text");
        mp::write_str(&mut p, &long);
        p.extend_from_slice(b"\xa2at\xcf\x00\x00\x01\x9a\x00\x00\x00\x00");
        assert_eq!(parse_said(&said_frame(&p)).unwrap(), Some(long));

        // A bare string payload.
        assert_eq!(parse_said(&said_frame(b"\xa2hi")).unwrap().as_deref(), Some("hi"));

        // Other message types are not "said".
        let mut other = vec![ROOM_DATA];
        schema_write_str(&mut other, "other");
        other.extend_from_slice(b"\x81\xa4text\xa1z");
        assert_eq!(parse_said(&other).unwrap(), None);
        assert_eq!(parse_said(&[ROOM_DATA, 0x07, 0xc0]).unwrap(), None); // numeric type

        // Malformed payloads are errors, not panics.
        assert!(parse_said(&said_frame(b"\x81\xa4text\x05")).is_err());
        assert!(parse_said(&said_frame(b"\x81\xa4type\xa4said")).is_err());
        assert!(parse_said(&said_frame(b"\x81\xa4text\xa5hel")).is_err());
        assert!(parse_said(&said_frame(b"")).is_err());
    }

    #[test]
    fn schema_header_is_little_endian() {
        let mut out = Vec::new();
        schema_write_str(&mut out, &"z".repeat(300));
        assert_eq!(&out[..3], &[0xda, 0x2c, 0x01]); // 300 little-endian
        let mut r = Cursor { buf: &out, pos: 0 };
        assert_eq!(schema_read_str(&mut r).unwrap().len(), 300);

        // ERROR frame as core's getMessageBytes[ERROR](524, "seat reservation expired.").
        let mut err = vec![ERROR, 0xcd, 0x0c, 0x02];
        schema_write_str(&mut err, "seat reservation expired.");
        assert_eq!(parse_error(&err), "524: seat reservation expired.");

        let mut r = Cursor {
            buf: &[0xe0, 0xcb, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f, 0xcf, 1, 0, 0, 0, 1, 0, 0, 0],
            pos: 0,
        };
        assert_eq!(schema_read_num(&mut r).unwrap(), -32.0);
        assert_eq!(schema_read_num(&mut r).unwrap(), 1.5);
        assert_eq!(schema_read_num(&mut r).unwrap(), 4_294_967_297.0);
    }

    #[test]
    fn join_room_frame() {
        // As core sends it for a stateless room: token, "none", reflection length 0.
        let mut f = vec![JOIN_ROOM, 9];
        f.extend_from_slice(b"abcdefghi");
        f.push(4);
        f.extend_from_slice(b"none");
        f.push(0);
        assert_eq!(parse_join_room(&f).unwrap(), "none");
        assert!(parse_join_room(&f[..5]).is_err());
    }

    #[test]
    fn http_response_parsing() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 84\r\nConnection: close\r\n\r\n{\"name\":\"chat\",\"sessionId\":\"AVKNXBehh\",\"roomId\":\"RV-k05Gre\",\"processId\":\"-Wi_SflPH\"}";
        let (status, body) = parse_http_response(raw).unwrap();
        assert_eq!(status, 200);
        let seat = Seat::parse(&body).unwrap();
        assert_eq!(
            (
                seat.session_id.as_str(),
                seat.room_id.as_str(),
                seat.process_id.as_str()
            ),
            ("AVKNXBehh", "RV-k05Gre", "-Wi_SflPH")
        );

        let chunked = b"HTTP/1.1 524 Unknown\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(chunked).unwrap(), (524, b"{\"a\":1}".to_vec()));

        assert!(parse_http_response(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").is_err());
        assert!(Seat::parse(br#"{"sessionId":"a/b","roomId":"r","processId":"p"}"#).is_err());
    }

    /// Live check against `node tests/load/colyseus/server.js --port 0`:
    /// `COLYSEUS_PORT=<port> cargo test -p respawn-load colyseus -- --ignored`
    #[tokio::test]
    #[ignore = "needs a running Colyseus server (COLYSEUS_PORT)"]
    async fn three_clients_hear_hello() {
        let port: u16 = std::env::var("COLYSEUS_PORT").expect("COLYSEUS_PORT").parse().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let mut conns = Vec::new();
        for name in ["p1", "p2", "p3"] {
            conns.push(ColyseusConn::join(addr, "load-1", name, local).await.unwrap());
        }
        conns[0].say("hello").await.unwrap();
        for (i, c) in conns.iter_mut().enumerate() {
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), c.next_said())
                .await
                .unwrap()
                .unwrap();
            println!("client {i} got {got:?}");
            assert_eq!(got.as_deref(), Some("hello"));
        }
    }
}
