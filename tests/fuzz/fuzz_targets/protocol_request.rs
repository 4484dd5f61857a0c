//! A player's frame, as the session parses it: never a panic, and a parsed
//! message's `data` is a slice of the frame (what the session forwards).
#![no_main]

use libfuzzer_sys::fuzz_target;
use respawn_protocol::{Request, parse_request, reference_of};

fuzz_target!(|frame: &[u8]| {
    let _ = reference_of(frame);
    if let Ok(Request::Message { data, .. }) = parse_request(frame) {
        let (start, end) = (frame.as_ptr() as usize, frame.as_ptr() as usize + frame.len());
        let p = data.get().as_ptr() as usize;
        assert!(
            p >= start && p + data.get().len() <= end,
            "data is a slice of the frame"
        );
    }
});
