//! Newline-delimited JSON over TCP: one envelope per line, so a person can
//! play with `nc`. Blank lines are ignored; `\r\n` works too.

use super::stream::Stream;
use super::{Inbound, Transport};
use crate::config::NetConfig;
use futures_util::StreamExt;
pub use respawn_protocol::line::LineDecoder;
use std::io;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::codec::FramedRead;

/// A TCP player connection. Reads and writes take turns in the session's
/// task, so the stream is not split: writes go through the reader's
/// stream.
pub struct TcpTransport {
    reader: FramedRead<Stream, LineDecoder>,
    /// Frames fed and not yet written, and how much of them is written.
    out: Vec<u8>,
    written: usize,
    /// Bytes gathered before a write without waiting for a flush.
    write_buffer: usize,
}

impl TcpTransport {
    /// Wraps an accepted stream, with buffers sized by `net`.
    pub fn new(stream: Stream, net: &NetConfig) -> Self {
        let _ = stream.tcp().set_nodelay(true);
        Self {
            reader: FramedRead::with_capacity(stream, LineDecoder::new(net.max_message_bytes), net.read_buffer_bytes),
            out: Vec::new(),
            written: 0,
            write_buffer: net.write_buffer_bytes,
        }
    }

    /// Writes what is buffered. Cancel-safe: a write cut short resumes
    /// where it stopped.
    async fn write_out(&mut self) -> io::Result<()> {
        while self.written < self.out.len() {
            let n = self.reader.get_mut().write(&self.out[self.written..]).await?;
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
        self.write_out().await?;
        // TLS keeps records it could not send yet; a plain socket has
        // nothing to flush.
        self.reader.get_mut().flush().await
    }

    async fn heartbeat(&mut self) -> io::Result<()> {
        self.send(crate::protocol::ServerMsg::Ping.encode()).await
    }

    async fn close(&mut self) {
        let _ = self.write_out().await;
        let _ = self.reader.get_mut().flush().await;
        let _ = self.reader.get_mut().shutdown().await;
    }

    fn abort(&mut self) {
        self.out = Vec::new();
        self.written = 0;
        let _ = self.reader.get_ref().tcp().set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;

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
        let mut t = TcpTransport::new(Stream::Plain(server), &net);
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
}
