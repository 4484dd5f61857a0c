//! Newline-delimited JSON over TCP: one envelope per line, so a person can
//! play with `nc`. Blank lines are ignored; `\r\n` works too.

use super::{Inbound, Transport};
use crate::config::NetConfig;
use bytes::BytesMut;
use futures_util::StreamExt;
use std::io;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::codec::{Decoder, FramedRead};

/// Splits a byte stream into lines of at most `max` bytes. An over-long
/// line is discarded as it streams in (memory stays bounded) and reported
/// once, as [`Inbound::TooLarge`], when its newline arrives.
#[derive(Debug)]
pub struct LineDecoder {
    max: usize,
    scanned: usize,
    discarded: Option<usize>,
}

impl LineDecoder {
    /// A decoder for lines of at most `max` bytes (newline excluded).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            scanned: 0,
            discarded: None,
        }
    }
}

impl Decoder for LineDecoder {
    type Item = Inbound;
    type Error = io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Inbound>> {
        loop {
            let Some(pos) = buf[self.scanned..].iter().position(|b| *b == b'\n') else {
                if buf.len() > self.max {
                    *self.discarded.get_or_insert(0) += buf.len();
                    buf.clear();
                    self.scanned = 0;
                } else {
                    self.scanned = buf.len();
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let mut line = buf.split_to(end + 1);
            self.scanned = 0;
            line.truncate(end);
            if line.last() == Some(&b'\r') {
                line.truncate(end - 1);
            }
            if let Some(earlier) = self.discarded.take() {
                return Ok(Some(Inbound::TooLarge {
                    len: earlier + line.len(),
                }));
            }
            if line.len() > self.max {
                return Ok(Some(Inbound::TooLarge { len: line.len() }));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(Inbound::Data(line.freeze())));
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Inbound>> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if self.discarded.is_some() || buf.iter().all(u8::is_ascii_whitespace) {
            buf.clear();
            return Ok(None);
        }
        // A last line without a newline still counts.
        buf.extend_from_slice(b"\n");
        self.decode(buf)
    }
}

/// A TCP player connection.
pub struct TcpTransport {
    reader: FramedRead<OwnedReadHalf, LineDecoder>,
    writer: OwnedWriteHalf,
    /// Frames fed and not yet written, and how much of them is written.
    out: Vec<u8>,
    written: usize,
    /// Bytes gathered before a write without waiting for a flush.
    write_buffer: usize,
}

impl TcpTransport {
    /// Wraps an accepted stream, with buffers sized by `net`.
    pub fn new(stream: TcpStream, net: &NetConfig) -> Self {
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Self {
            reader: FramedRead::with_capacity(r, LineDecoder::new(net.max_message_bytes), net.read_buffer_bytes),
            writer: w,
            out: Vec::new(),
            written: 0,
            write_buffer: net.write_buffer_bytes,
        }
    }

    /// Writes what is buffered. Cancel-safe: a write cut short resumes
    /// where it stopped.
    async fn write_out(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            let n = self.writer.write(&self.out[self.written..]).await?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        // A burst's buffer is not kept by an idle connection.
        if self.out.capacity() > self.write_buffer.max(64 << 10) {
            self.out = Vec::new();
        }
        Ok(())
    }
}

impl Transport for TcpTransport {
    async fn recv(&mut self) -> Option<io::Result<Inbound>> {
        self.reader.next().await
    }

    async fn feed(&mut self, frame: Utf8Bytes) -> io::Result<()> {
        self.out.extend_from_slice(frame.as_bytes());
        self.out.push(b'\n');
        if self.out.len() >= self.write_buffer {
            self.write_out().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.write_out().await
    }

    async fn heartbeat(&mut self) -> io::Result<()> {
        self.send(crate::protocol::ServerMsg::Ping.encode()).await
    }

    async fn close(&mut self) {
        let _ = self.write_out().await;
        let _ = self.writer.shutdown().await;
    }

    fn abort(&mut self) {
        self.out = Vec::new();
        self.written = 0;
        let _ = self.writer.as_ref().set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(max: usize, input: &[u8]) -> Vec<String> {
        let mut d = LineDecoder::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        // Feed byte by byte to exercise partial reads.
        for b in input {
            buf.extend_from_slice(&[*b]);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(show(f));
            }
        }
        while let Some(f) = d.decode_eof(&mut buf).unwrap() {
            out.push(show(f));
        }
        out
    }

    fn show(f: Inbound) -> String {
        match f {
            Inbound::Data(b) => String::from_utf8_lossy(&b).into_owned(),
            Inbound::TooLarge { len } => format!("<too large {len}>"),
            Inbound::Heartbeat => "<heartbeat>".into(),
        }
    }

    #[tokio::test]
    async fn frames_are_gathered_until_a_flush_or_a_full_buffer() {
        use tokio::io::AsyncBufReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let net = NetConfig {
            write_buffer_bytes: 64,
            ..NetConfig::default()
        };
        let mut t = TcpTransport::new(server, &net);
        t.feed(Utf8Bytes::from_static("one")).await.unwrap();
        t.feed(Utf8Bytes::from_static("two")).await.unwrap();
        assert_eq!(t.out, b"one\ntwo\n", "held until the flush");
        t.flush().await.unwrap();
        assert!(t.out.is_empty());
        // A frame that fills the buffer is written at once.
        t.feed(Utf8Bytes::from(format!("{:x<100}", "big"))).await.unwrap();
        assert!(t.out.is_empty());
        let mut lines = tokio::io::BufReader::new(client).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("one"));
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("two"));
        assert_eq!(lines.next_line().await.unwrap().map(|l| l.len()), Some(100));
    }

    #[test]
    fn splits_lines_skips_blanks_and_handles_crlf() {
        assert_eq!(decode_all(100, b"a\r\n\n  \nb\nc"), vec!["a", "b", "c"]);
    }

    #[test]
    fn long_lines_are_reported_once_and_the_stream_goes_on() {
        let mut input = vec![b'x'; 50];
        input.extend_from_slice(b"\nok\n");
        assert_eq!(decode_all(10, &input), vec!["<too large 50>", "ok"]);
        // A long line arriving in one piece with its newline.
        let mut d = LineDecoder::new(4);
        let mut buf = BytesMut::from(&b"123456\nab\n"[..]);
        assert_eq!(show(d.decode(&mut buf).unwrap().unwrap()), "<too large 6>");
        assert_eq!(show(d.decode(&mut buf).unwrap().unwrap()), "ab");
    }
}
