//! Bad input from players: a clear error with a stable code, and the
//! connection, the room and everyone else keep working.

use respawn_e2e::{Host, HostOptions, TRANSPORTS, Transport};
use serde_json::json;

fn small_messages() -> Host {
    Host::start_with(HostOptions {
        config: "[net]\nmax_message_bytes = 1024\n",
        ..HostOptions::default()
    })
}

#[tokio::test]
async fn every_bad_frame_gets_its_error_and_the_connection_lives_on() {
    let host = small_messages();
    for transport in TRANSPORTS {
        let mut c = host.client(transport).await;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (br#"{"type":"join","game":"echo"}"#.to_vec(), "bad_request"),
            (b"[1,2,3]".to_vec(), "bad_request"),
            (br#"["ping"]"#.to_vec(), "bad_request"),
            (br#"{"type":"fly"}"#.to_vec(), "bad_request"),
            (b"{\"type\": ".to_vec(), "invalid_json"),
            (b"{\"type\":\"ping\",\"ref\":\"\xff\xfe\"}".to_vec(), "invalid_utf8"),
            (br#"{"type":"message","data":1}"#.to_vec(), "not_joined"),
            (br#"{"type":"leave"}"#.to_vec(), "not_joined"),
            (
                br#"{"type":"join","game":"nosuch","name":"p"}"#.to_vec(),
                "unknown_game",
            ),
            (br#"{"type":"join","game":"echo","name":""}"#.to_vec(), "invalid_name"),
            (
                br#"{"type":"join","game":"echo","name":"p","room":"../etc"}"#.to_vec(),
                "invalid_room",
            ),
            (
                format!(r#"{{"type":"message","data":"{}"}}"#, "x".repeat(2000)).into_bytes(),
                "message_too_large",
            ),
        ];
        for (frame, code) in cases {
            c.send_raw(&frame).await;
            let err = c.expect_error(code).await;
            if code == "unknown_game" {
                let msg = err["message"].as_str().unwrap_or_default();
                assert!(
                    msg.contains("echo") && msg.contains("tictactoe"),
                    "lists loaded games: {msg}"
                );
            }
            c.ping().await;
        }

        // Still fully usable: join, play, second join refused, play again.
        c.join("echo", "bad-input", "p").await;
        c.message(json!({"n": 1})).await;
        assert_eq!(c.event().await, json!({"n": 1}));
        c.send(json!({"type": "join", "game": "echo", "name": "p", "ref": "j2"}))
            .await;
        let err = c.expect_error("already_joined").await;
        assert_eq!(err["ref"], "j2", "errors echo the request's ref");
        // Also when the request itself is refused before it reaches the
        // session: an unknown type, a missing field, a bad name.
        for (request, code) in [
            (json!({"type": "fly", "ref": 1}), "bad_request"),
            (json!({"type": "join", "game": "echo", "ref": 2}), "bad_request"),
            (
                json!({"type": "join", "game": "echo", "name": " p", "ref": 3}),
                "invalid_name",
            ),
        ] {
            let want = request["ref"].clone();
            c.send(request).await;
            assert_eq!(c.expect_error(code).await["ref"], want, "{code} echoes the ref");
        }
        c.send_raw(b"{oops").await;
        c.expect_error("invalid_json").await;
        c.send_raw(format!(r#"{{"type":"message","data":"{}"}}"#, "y".repeat(5000)).as_bytes())
            .await;
        c.expect_error("message_too_large").await;
        c.message(json!({"n": 2})).await;
        assert_eq!(
            c.event().await,
            json!({"n": 2}),
            "the room kept working ({transport:?})"
        );
    }
}

#[tokio::test]
async fn one_players_garbage_does_not_disturb_the_room() {
    let host = small_messages();
    let mut good = host.client(Transport::Ws).await;
    let mut bad = host.client(Transport::Tcp).await;
    good.join("chat", "r", "good").await;
    bad.join("chat", "r", "bad").await;
    good.event_of("joined").await;
    bad.event_of("welcome").await;
    for frame in [&b"\xff\xff\xff"[..], b"{", b"null", b"{\"type\":\"message\"}"] {
        bad.send_raw(frame).await;
        bad.expect("error").await;
    }
    bad.send_raw(&vec![b'z'; 100_000]).await;
    bad.expect_error("message_too_large").await;
    bad.message(json!({"say": 42})).await;
    assert_eq!(bad.expect_error("rejected").await["reason"], "invalid-message");
    good.message(json!({"say": "still here"})).await;
    for c in [&mut good, &mut bad] {
        assert_eq!(c.event_of("said").await["text"], "still here");
    }
}

#[tokio::test]
async fn an_absurd_websocket_frame_closes_only_that_connection() {
    let host = small_messages();
    let mut victim = host.client(Transport::Ws).await;
    let mut other = host.client(Transport::Ws).await;
    other.join("echo", "r", "other").await;
    // Far beyond the transport's hard cap (4 x max_message_bytes, at least 1 MiB).
    // The host may close the connection before the client has finished
    // sending, so the send itself may fail.
    let _ = victim.try_send_raw(&vec![b'a'; 3 << 20]).await;
    assert!(victim.try_recv().await.is_none(), "the connection is closed");
    other.message(json!("still served")).await;
    assert_eq!(other.event().await, json!("still served"));
}

#[tokio::test]
async fn ack_and_ping_echo_the_ref() {
    let host = Host::start();
    let mut c = host.client(Transport::Tcp).await;
    c.send(json!({"type": "join", "game": "echo", "name": "p", "ref": {"any": ["json"]}}))
        .await;
    assert_eq!(c.expect("joined").await["ref"], json!({"any": ["json"]}));
    c.send(json!({"type": "message", "data": "hi", "ref": 17})).await;
    assert_eq!(c.event().await, json!("hi"));
    assert_eq!(c.expect("ack").await["ref"], 17);
    c.send(json!({"type": "message", "data": null})).await;
    assert_eq!(
        c.event().await,
        json!(null),
        "null is a valid payload, and no ref means no ack"
    );
    c.ping().await;
}

/// A masked client frame header: FIN, `opcode`, and a payload length.
fn ws_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xffff => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    // A zero mask: the payload goes as it is.
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

#[tokio::test]
async fn websocket_frames_the_transport_cannot_take_close_with_the_rfc_codes() {
    let host = small_messages();
    // Beyond the transport's cap (4 × 1024 B, at least 1 MiB): 1009. The
    // header alone is refused; the payload is never sent.
    let mut c = host.client(Transport::Ws).await;
    c.send_ws_wire(&ws_header(0x2, 2 << 20)).await;
    assert_eq!(c.close_code().await, Some(1009), "message too big");
    // A text frame that is not UTF-8: 1007 (RFC 6455, 8.1).
    let mut c = host.client(Transport::Ws).await;
    let mut frame = ws_header(0x1, 2);
    frame.extend_from_slice(&[0xff, 0xfe]);
    c.send_ws_wire(&frame).await;
    assert_eq!(c.close_code().await, Some(1007), "invalid UTF-8 in a text frame");
    // The same bytes in a binary frame are an ordinary bad request.
    let mut c = host.client(Transport::Ws).await;
    let mut frame = ws_header(0x2, 2);
    frame.extend_from_slice(&[0xff, 0xfe]);
    c.send_ws_wire(&frame).await;
    c.expect_error("invalid_utf8").await;
    c.ping().await;
}
