//! TCP bytes in arbitrary pieces: lines come out within the limit, without
//! their newline, and memory stays bounded by the limit.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use respawn_protocol::line::{Inbound, LineDecoder};
use tokio_util::codec::Decoder;

const MAX: usize = 64;

fuzz_target!(|input: &[u8]| {
    let Some((&piece, bytes)) = input.split_first() else {
        return;
    };
    let piece = usize::from(piece % 16) + 1;
    let mut decoder = LineDecoder::new(MAX);
    let mut buf = BytesMut::new();
    let check = |frame: Inbound| {
        if let Inbound::Data(line) = frame {
            assert!(line.len() <= MAX);
            assert!(!line.contains(&b'\n'));
        }
    };
    for chunk in bytes.chunks(piece) {
        buf.extend_from_slice(chunk);
        while let Some(frame) = decoder.decode(&mut buf).expect("decoding never fails") {
            check(frame);
        }
        assert!(buf.len() <= MAX + piece, "the buffer stays bounded");
    }
    while let Some(frame) = decoder.decode_eof(&mut buf).expect("decoding never fails") {
        check(frame);
    }
});
