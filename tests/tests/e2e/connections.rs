//! Issue 4: player connections — heartbeats and idle timeout, rate limit,
//! slow consumers, resume tokens with a grace period, take-over.

use respawn_e2e::{Client, Host, HostOptions, Transport};
use serde_json::{Value, json};
use std::time::Duration;

fn host(config: &str) -> Host {
    Host::start_with(HostOptions {
        config,
        ..HostOptions::default()
    })
}

#[tokio::test]
async fn silent_connections_are_pinged_then_closed_and_answering_keeps_them() {
    let host = host("[net]\nheartbeat_ms = 100\nidle_timeout_ms = 500\n");
    // A TCP client that never answers: pinged, then told, then closed.
    let mut mute = Client::tcp(host.tcp).await;
    let welcome = mute.expect("welcome").await;
    assert_eq!(welcome["idle_timeout_ms"], 500);
    let mut pings = 0;
    let reason = loop {
        match mute.try_recv().await {
            Some(f) if f["type"] == "ping" => pings += 1,
            Some(f) => break f,
            None => panic!("closed without a reason"),
        }
    };
    assert!(pings >= 2, "{pings} pings");
    assert_eq!(reason["code"], "idle_timeout", "{reason}");
    assert!(mute.try_recv().await.is_none(), "the connection closes");

    // The reconnecting client answers pings: alive after 3 idle timeouts.
    let mut tcp = host.reconnecting_client(Transport::Tcp).await;
    // A WebSocket client answers the host's WebSocket pings while reading.
    let mut ws = host.client(Transport::Ws).await;
    let quiet = tokio::time::timeout(Duration::from_millis(1500), async {
        tokio::join!(tcp.recv(), ws.try_recv())
    })
    .await;
    assert!(quiet.is_err(), "nothing but heartbeats arrive: {quiet:?}");
    tcp.send(json!({"type": "ping", "ref": 1})).await.unwrap();
    assert_eq!(tcp.recv().await.unwrap()["type"], "pong");
    assert_eq!(tcp.reconnects(), (0, 0), "no reconnect was needed");
    ws.ping().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_the_connection_lives_on() {
    let host = host("[net]\nrate_per_sec = 5\nrate_burst = 5\n");
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut c = host.client(transport).await;
        for i in 0..20 {
            c.send(json!({"type": "ping", "ref": i})).await;
        }
        let (mut pongs, mut limited) = (0, 0);
        for _ in 0..20 {
            let f = c.recv().await;
            match f["type"].as_str() {
                Some("pong") => pongs += 1,
                _ if f["code"] == "rate_limited" => limited += 1,
                _ => panic!("unexpected {f}"),
            }
        }
        // The burst passes (the bucket refills at 5/s while the flood
        // is read); the rest is refused, one error each.
        assert!((5..=7).contains(&pongs), "{pongs} pongs");
        assert_eq!(pongs + limited, 20);
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.ping().await;
    }
}

/// Says lines of 500 bytes in a chat room until another member, who never
/// reads, is dropped; returns the lines said and the `left` event.
async fn talk_until_someone_leaves(talker: &mut Client) -> (u64, Value) {
    let text = "x".repeat(500);
    let mut sent = 0;
    loop {
        assert!(sent < 100_000, "the slow player was never dropped");
        talker.message(json!({"say": text})).await;
        sent += 1;
        loop {
            let data = talker.event().await;
            if data["type"] == "left" {
                return (sent, data);
            }
            if data["type"] == "said" {
                break;
            }
        }
    }
}

#[tokio::test]
async fn a_player_who_stops_reading_is_disconnected_not_buffered() {
    let host = host("[net]\noutbound_queue = 8\nwrite_timeout_ms = 300\nrate_per_sec = 100000\nrate_burst = 100000\n");
    let mut reader = host.client(Transport::Tcp).await;
    reader.join("chat", "flood", "slow").await;
    let mut talker = host.client(Transport::Tcp).await;
    talker.join("chat", "flood", "fast").await;
    // Socket buffers hold a few MB, then the queue of 8 fills.
    let (sent, left) = talk_until_someone_leaves(&mut talker).await;
    assert_eq!(left["name"], "slow");
    println!("the slow player was dropped after {sent} lines");
    host.wait_until("the slow connection is closed", |h| h.runtime()["connections"] == 1)
        .await;
}

/// A raw TCP player seated in `game`/`room`, and its resume token.
async fn seated(host: &Host, game: &str, room: &str, name: &str) -> (Client, String) {
    let mut c = Client::tcp(host.tcp).await;
    let token = c.expect("welcome").await["resume"].as_str().unwrap().to_owned();
    c.join(game, room, name).await;
    (c, token)
}

/// A resume with `token` on a new connection is refused.
async fn resume_fails(host: &Host, token: &str) {
    let mut c = host.client(Transport::Tcp).await;
    c.send(json!({"type": "resume", "token": token})).await;
    c.expect_error("resume_failed").await;
}

/// Plays tictactoe moves until the state event shows `cells` marks.
async fn board_after(c: &mut Client, cells: usize) -> Value {
    loop {
        let data = c.event().await;
        if data["type"] == "state"
            && data["board"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|v| !v.is_null())
                .count()
                == cells
        {
            return data;
        }
    }
}

#[tokio::test]
async fn a_dropped_player_resumes_its_seat_and_gets_what_it_missed() {
    let host = host("[net]\nresume_grace_ms = 5000\n");
    let mut x = Client::tcp(host.tcp).await;
    let welcome = x.expect("welcome").await;
    let token = welcome["resume"].as_str().unwrap().to_owned();
    let x_id = welcome["player"].clone();
    x.join("tictactoe", "resume", "xena").await;
    let mut o = host.client(Transport::Ws).await;
    o.join("tictactoe", "resume", "otto").await;
    x.message(json!({"action": "move", "cell": 4})).await;
    board_after(&mut o, 1).await;
    // X's connection drops; O moves while X is away.
    drop(x);
    o.message(json!({"action": "move", "cell": 0})).await;
    board_after(&mut o, 2).await;
    // X comes back on a new connection with the token. It read no room
    // frame before the drop (`last_seq` 0): those the dead connection had
    // swallowed come again, then those queued while it was away.
    let mut x = host.client(Transport::Ws).await;
    x.send(json!({"type": "resume", "token": token, "last_seq": 0, "ref": "r"}))
        .await;
    let resumed = x.expect("resumed").await;
    assert_eq!(resumed["player"], x_id);
    assert_eq!(
        (resumed["game"].as_str(), resumed["room"].as_str()),
        (Some("tictactoe"), Some("resume"))
    );
    assert_eq!(resumed["ref"], "r");
    let new_token = resumed["resume"].as_str().unwrap().to_owned();
    assert_ne!(new_token, token, "the token is rotated");
    // The frames queued while away arrive: O's move is on X's board.
    let board = board_after(&mut x, 2).await;
    assert_eq!(board["board"][0], "O");
    assert_eq!(board["players"]["X"]["name"], "xena", "X kept the seat");
    // And X plays on.
    x.message(json!({"action": "move", "cell": 1})).await;
    board_after(&mut o, 3).await;
    // The old token is spent.
    resume_fails(&host, &token).await;
}

#[tokio::test]
async fn after_the_grace_period_the_seat_is_gone_and_the_game_saw_the_player_leave() {
    let host = host("[net]\nresume_grace_ms = 200\n");
    let (x, token) = seated(&host, "tictactoe", "grace", "xena").await;
    let mut o = host.client(Transport::Tcp).await;
    o.join("tictactoe", "grace", "otto").await;
    drop(x);
    // The game sees X leave only when the grace period ends.
    loop {
        let data = o.event().await;
        if data["type"] == "state" && data["players"]["X"].is_null() {
            break;
        }
    }
    resume_fails(&host, &token).await;
    host.wait_until("no seat is parked", |h| h.runtime()["parked_seats"] == 0)
        .await;
}

#[tokio::test]
async fn resuming_a_seat_whose_connection_still_looks_alive_takes_it_over() {
    let host = host("");
    let (mut old, token) = seated(&host, "faulty", "takeover", "t").await;
    let mut new = host.client(Transport::Tcp).await;
    new.send(json!({"type": "resume", "token": token})).await;
    new.expect("resumed").await;
    old.expect_error("superseded").await;
    assert!(old.try_recv().await.is_none(), "the old connection is closed");
    new.send(json!({"type": "message", "data": {"do": "count"}, "ref": 1}))
        .await;
    assert_eq!(new.event().await["count"], 1);
}

#[tokio::test]
async fn the_rust_client_reconnects_with_backoff_and_resumes() {
    let host = host("");
    for transport in [Transport::Tcp, Transport::Ws] {
        let mut c = host.reconnecting_client(transport).await;
        let room = format!("rc-{transport:?}");
        c.join("faulty", &room, "bot").await.unwrap();
        let player = c.player();
        c.send(json!({"type": "message", "data": {"do": "add", "n": 5}}))
            .await
            .unwrap();
        assert_eq!(c.recv().await.unwrap()["data"]["count"], 5);
        c.drop_connection().await;
        // The next send reconnects and resumes first, and says so.
        c.send(json!({"type": "message", "data": {"do": "add", "n": 1}}))
            .await
            .unwrap();
        let reconnected = json!({"type": "reconnected", "resumed": true, "replayed": 0, "lost": 0, "rewound": 0});
        assert_eq!(c.recv().await.unwrap(), reconnected);
        assert_eq!(c.recv().await.unwrap()["data"]["count"], 6);
        assert_eq!(c.player(), player);
        assert_eq!(c.reconnects(), (1, 1));
        // A drop noticed while reading: recv says so, then goes on.
        c.drop_connection().await;
        assert_eq!(c.recv().await.unwrap(), reconnected);
    }
}

#[tokio::test]
async fn a_parked_seat_whose_queue_overflows_is_given_up_and_cannot_be_resumed() {
    let host = host("[net]\noutbound_queue = 4\nresume_grace_ms = 30000\n");
    let (mut x, token) = seated(&host, "faulty", "busy", "x").await;
    // Every 10 ms the room broadcasts a tick: a parked seat's queue of 4
    // overflows long before the grace period ends.
    x.message(json!({"do": "tick", "ms": 10})).await;
    x.event().await;
    drop(x);
    host.wait_until("the room let the player go", |h| {
        h.log().contains("player left the room")
    })
    .await;
    resume_fails(&host, &token).await;
}

#[tokio::test]
async fn frames_a_dead_connection_swallowed_are_resent_after_last_seq() {
    let host = host("");
    let (mut x, token) = seated(&host, "faulty", "lossless", "x").await;
    x.send(json!({"type": "message", "data": {"do": "add", "n": 5}, "ref": "a"}))
        .await;
    let event = x.expect("event").await;
    assert_eq!(
        (event["seq"].as_u64(), event["data"]["count"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(x.expect("ack").await["seq"], 2);
    // The host writes frames 3 and 4 into the socket; the player never
    // reads them, and the connection dies.
    x.send(json!({"type": "message", "data": {"do": "add", "n": 7}, "ref": "b"}))
        .await;
    let mut watcher = host.client(Transport::Tcp).await;
    watcher.join("faulty", "lossless", "w").await;
    loop {
        watcher.send(json!({"type": "message", "data": {"do": "get"}})).await;
        if watcher.event().await["count"] == 12 {
            break;
        }
    }
    drop(x);
    let mut x = host.client(Transport::Tcp).await;
    x.send(json!({"type": "resume", "token": token, "last_seq": 2})).await;
    let resumed = x.expect("resumed").await;
    assert_eq!(
        (resumed["replayed"].as_u64(), resumed["lost"].as_u64()),
        (Some(2), Some(0)),
        "{resumed}"
    );
    let event = x.expect("event").await;
    assert_eq!(
        (event["seq"].as_u64(), event["data"]["count"].as_u64()),
        (Some(3), Some(12))
    );
    let ack = x.expect("ack").await;
    assert_eq!((ack["seq"].as_u64(), ack["ref"].as_str()), (Some(4), Some("b")));
    // Numbering goes on.
    x.send(json!({"type": "message", "data": {"do": "get"}})).await;
    assert_eq!(x.expect("event").await["seq"], 5);
}

#[tokio::test]
async fn a_room_that_closed_while_the_player_was_away_says_so_on_resume() {
    let host = host("[supervision]\nmax_restarts = 0\n");
    let (x, token) = seated(&host, "faulty", "gone", "x").await;
    drop(x);
    let mut y = host.client(Transport::Tcp).await;
    y.join("faulty", "gone", "y").await;
    // No restart allowed: the room closes, with a last word for both.
    y.message(json!({"do": "panic"})).await;
    y.expect_error("guest_fault").await;
    let mut back = host.client(Transport::Tcp).await;
    back.send(json!({"type": "resume", "token": token, "last_seq": 0}))
        .await;
    back.expect("resumed").await;
    let closed = back.expect_error("guest_fault").await;
    assert!(closed["message"].as_str().unwrap().contains("room closed"), "{closed}");
    back.send(json!({"type": "message", "data": {"do": "get"}})).await;
    back.expect_error("not_joined").await;
}

#[tokio::test]
async fn a_slow_consumer_is_cut_at_once_and_the_kernel_keeps_nothing_for_it() {
    // A write timeout far beyond the test's patience: the cut must come
    // from the overflow itself.
    let host =
        host("[net]\noutbound_queue = 8\nwrite_timeout_ms = 120000\nrate_per_sec = 100000\nrate_burst = 100000\n");
    for transport in respawn_e2e::TRANSPORTS {
        let room = format!("cut-{transport:?}");
        let mut reader = host.client(transport).await;
        reader.join("chat", &room, "slow").await;
        let (slow, listener) = (reader.local_addr(), host.addr(transport));
        let mut talker = host.client(Transport::Tcp).await;
        talker.join("chat", &room, "fast").await;
        talk_until_someone_leaves(&mut talker).await;
        // Closed by the host well within its wait_until (30 s), a quarter
        // of the write timeout.
        host.wait_until("the slow connection is closed", |h| h.runtime()["connections"] == 1)
            .await;
        // Reset, not closed politely: the host's socket toward the player
        // is gone, not left in FIN-WAIT-1 holding what it could not send.
        host.wait_until("the host's socket is released", |_| {
            !respawn_e2e::kernel_has_socket(listener, slow)
        })
        .await;
        // The player reads what had reached it, then the end; if the
        // goodbye got through, it says why.
        let mut last = None;
        while let Some(frame) = reader.try_recv().await {
            last = Some(frame);
        }
        if let Some(frame) = last.filter(|f| f["type"] == "error") {
            assert_eq!(frame["code"], "slow_consumer", "{frame}");
        }
        drop(talker);
        host.wait_until("the talker is gone", |h| h.runtime()["connections"] == 0)
            .await;
    }
}
