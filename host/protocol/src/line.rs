//! Framing of the TCP transport: newline-delimited JSON, one envelope per
//! line, and what one frame from a player is on any transport.

use bytes::{Bytes, BytesMut};
use std::io;
use tokio_util::codec::Decoder;

/// One frame from a player.
#[derive(Debug)]
pub enum Inbound {
    /// A frame's bytes (a WebSocket text or binary message, or a TCP line).
    Data(Bytes),
    /// A frame over the size limit, already discarded.
    TooLarge {
        /// How many bytes it had (at least).
        len: usize,
    },
    /// A sign of life with nothing to handle (a WebSocket ping or pong).
    Heartbeat,
}

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
