//! The chat payload the harness sends and the frames it reads back.

use std::borrow::Cow;

use serde::Deserialize;

/// Builds the chat text for one send: `c<sender> n<seq> t<ns since epoch>`,
/// padded with dots to `size` bytes (never trimmed away by the game, which
/// trims whitespace only).
pub fn encode_payload(sender: usize, n: u64, t_ns: u64, size: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(size.max(48));
    let _ = write!(s, "c{sender} n{n} t{t_ns}");
    if s.len() < size {
        s.push(' ');
        while s.len() < size {
            s.push('.');
        }
    }
    s
}

/// What a received chat text says about its send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    pub sender: usize,
    pub n: u64,
    pub t_ns: u64,
}

/// Parses a text made by [`encode_payload`].
pub fn parse_payload(text: &str) -> Option<Payload> {
    let mut parts = text.split_ascii_whitespace();
    let sender = parts.next()?.strip_prefix('c')?.parse().ok()?;
    let n = parts.next()?.strip_prefix('n')?.parse().ok()?;
    let t_ns = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some(Payload { sender, n, t_ns })
}

/// The Respawn `message` request carrying a chat line (the payload holds
/// no characters that need escaping).
pub fn say_frame(text: &str) -> String {
    format!(r#"{{"type":"message","data":{{"say":"{text}"}}}}"#)
}

pub fn join_frame(game: &str, room: &str, name: &str) -> String {
    serde_json::json!({"type": "join", "game": game, "room": room, "name": name}).to_string()
}

/// The parts of a host frame the harness looks at.
#[derive(Deserialize, Debug)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Option<EventData<'a>>,
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

#[derive(Deserialize, Debug)]
pub struct EventData<'a> {
    #[serde(rename = "type", default, borrow)]
    pub ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub text: Option<Cow<'a, str>>,
}

/// Parses a host frame; `None` if it is not the JSON the harness expects.
pub fn parse_frame(raw: &str) -> Option<Frame<'_>> {
    serde_json::from_str(raw).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trips_and_is_padded() {
        let s = encode_payload(17, 42, 123_456_789, 64);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("c17 n42 t123456789 ."));
        assert_eq!(
            parse_payload(&s),
            Some(Payload {
                sender: 17,
                n: 42,
                t_ns: 123_456_789
            })
        );
        // A payload smaller than its header is not truncated.
        let s = encode_payload(1, 2, 3, 4);
        assert_eq!(s, "c1 n2 t3");
        assert_eq!(parse_payload(&s).unwrap().t_ns, 3);
        assert_eq!(parse_payload("hello"), None);
        assert_eq!(parse_payload("c1 nX t3"), None);
    }

    #[test]
    fn frames_parse_for_both_key_orders() {
        let f = parse_frame(
            r#"{"seq":3,"type":"event","data":{"at":1,"from":"a","id":2,"text":"c1 n1 t5","type":"said"}}"#,
        )
        .unwrap();
        assert_eq!(f.ty, "event");
        let d = f.data.unwrap();
        assert_eq!(d.ty.as_deref(), Some("said"));
        assert_eq!(d.text.as_deref(), Some("c1 n1 t5"));
        let f = parse_frame(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#).unwrap();
        assert_eq!(f.code.as_deref(), Some("rate_limited"));
        let v: serde_json::Value = serde_json::from_str(&say_frame(&encode_payload(1, 1, 1, 32))).unwrap();
        assert_eq!(v["data"]["say"].as_str().unwrap().len(), 32);
    }
}
