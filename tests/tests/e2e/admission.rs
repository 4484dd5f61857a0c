//! One client, or one address, cannot lock the others out: connections,
//! room creations and parked seats are capped per address and in total.

use respawn_e2e::{Client, Host, HostOptions, Transport};
use serde_json::json;

fn host(config: &str) -> Host {
    Host::start_with(HostOptions {
        games: &["echo", "chat"],
        config,
        ..HostOptions::default()
    })
}

#[tokio::test]
async fn one_address_cannot_hold_the_host_full() {
    let host = host("[net]\nmax_connections = 20\nmax_connections_per_address = 5\n");
    // 60 idle sockets from one address, reading nothing: 5 are admitted,
    // the rest are told why and closed.
    let mut hog = Vec::new();
    for _ in 0..60 {
        hog.push(Client::tcp(host.tcp).await);
    }
    let mut admitted = 0;
    for c in &mut hog {
        let first = c.recv().await;
        if first["type"] == "welcome" {
            admitted += 1;
        } else {
            assert_eq!(first["code"], "too_many_connections", "{first}");
            assert!(c.try_recv().await.is_none(), "refused connections are closed");
        }
    }
    assert_eq!(admitted, 5);
    // Everyone else still gets in and plays.
    let mut other = Client::tcp_from(host.tcp, [127, 0, 0, 2]).await;
    other.expect("welcome").await;
    other.join("echo", "free", "o").await;
    other.message(json!({"n": 1})).await;
    assert_eq!(other.event().await, json!({"n": 1}));
    assert_eq!(host.runtime()["connections"], 6);
}

#[tokio::test]
async fn room_creation_is_limited_per_connection_and_per_address_joining_is_not() {
    let host = host(
        "[rooms]\ncreate_burst = 2\ncreate_per_minute = 1\ncreate_burst_per_address = 3\ncreate_per_minute_per_address = 1\n",
    );
    let mut a = host.client(Transport::Tcp).await;
    for room in ["r1", "r2"] {
        a.join("echo", room, "a").await;
        a.send(json!({"type": "leave"})).await;
        a.expect("left").await;
    }
    a.send(json!({"type": "join", "game": "echo", "room": "r3", "name": "a", "ref": 7}))
        .await;
    let err = a.expect_error("too_many_rooms").await;
    assert_eq!(err["ref"], 7);
    // Joining a room that exists costs nothing (r2 lingers for 300 ms;
    // another player keeps it open).
    let mut b = host.client(Transport::Ws).await;
    b.join("echo", "kept", "b").await;
    a.join("echo", "kept", "a").await;
    a.send(json!({"type": "leave"})).await;
    a.expect("left").await;
    // The address has used its 3: b is refused a new room too, though its
    // own connection has created just one.
    b.send(json!({"type": "leave"})).await;
    b.expect("left").await;
    b.send(json!({"type": "join", "game": "echo", "room": "r4", "name": "b"}))
        .await;
    b.expect_error("too_many_rooms").await;
    // Another address has its own budget.
    let mut c = Client::tcp_from(host.tcp, [127, 0, 0, 3]).await;
    c.expect("welcome").await;
    c.join("echo", "r5", "c").await;
}

#[tokio::test]
async fn parked_seats_are_capped_per_address() {
    let host = host("[net]\nmax_parked_per_address = 1\nresume_grace_ms = 30000\n");
    let mut watcher = Client::tcp_from(host.tcp, [127, 0, 0, 4]).await;
    watcher.expect("welcome").await;
    watcher.join("chat", "park", "w").await;
    let mut tokens = Vec::new();
    for name in ["p1", "p2"] {
        let mut p = Client::tcp(host.tcp).await;
        let welcome = p.expect("welcome").await;
        tokens.push(welcome["resume"].as_str().unwrap().to_owned());
        p.join("chat", "park", name).await;
        assert_eq!(watcher.event_of("joined").await["name"], name);
        drop(p);
        // The first is parked before the second goes (on a busy machine
        // the two disconnects could be handled in either order).
        if name == "p1" {
            host.wait_until("p1's seat parked", |h| h.runtime()["parked_seats"] == 1)
                .await;
        }
    }
    // The first is parked for its grace period; the second is over the
    // address's cap and leaves at once.
    assert_eq!(watcher.event_of("left").await["name"], "p2");
    assert_eq!(host.runtime()["parked_seats"], 1);
    let mut back = host.client(Transport::Tcp).await;
    back.send(json!({"type": "resume", "token": tokens[1], "last_seq": 0}))
        .await;
    back.expect_error("resume_failed").await;
    back.send(json!({"type": "resume", "token": tokens[0], "last_seq": 0}))
        .await;
    back.expect("resumed").await;
}
