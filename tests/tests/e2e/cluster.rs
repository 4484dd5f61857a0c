//! A fleet: three hosts on a three-server NATS JetStream cluster, all on
//! loopback. Players reach rooms from any node, a `kill -9` of a node
//! moves its rooms to survivors with nothing acknowledged lost, and a node
//! cut off from NATS stops serving before its rooms move.

use super::durability::{Tally, count_until_cut};
use respawn_e2e::nats::{Nats, Proxy};
use respawn_e2e::{Client, Host, HostOptions, Transport, shared_code_cache, sign_with, signed};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// A node's config: short heartbeats so tests see deaths in about a
/// second, `strict` durability, seats kept long enough to resume, and the
/// run's shared code cache (nodes start without compiling).
fn node_config(node: &str, urls: &str) -> String {
    shared_code_cache()
        + &format!(
            r#"
        [cluster]
        node = "{node}"
        urls = {urls}
        heartbeat_ms = 200
        lease_ms = 600
        dead_after_ms = 1200
        [storage]
        durability = "strict"
        [supervision]
        checkpoint_every = 16
        [net]
        resume_grace_ms = 60000
        rate_per_sec = 100000
        rate_burst = 100000
        "#
        )
}

fn start_node(node: &str, urls: &str) -> Host {
    Host::start_with(HostOptions {
        games: &["tictactoe", "faulty", "chat"],
        config: &node_config(node, urls),
        ..Default::default()
    })
}

/// Three nodes `a`, `b`, `c` on `nats`.
fn fleet(nats: &Nats) -> Vec<Host> {
    ["a", "b", "c"]
        .iter()
        .map(|n| start_node(n, &nats.toml_urls()))
        .collect()
}

/// Waits until `host` sees `alive` nodes up.
async fn wait_nodes_up(host: &Host, alive: usize) {
    host.wait_until_within(&format!("{alive} nodes up"), Duration::from_secs(20), |h| {
        nodes_up(h) == alive
    })
    .await;
}

fn nodes_up(host: &Host) -> usize {
    host.status()["cluster"]["nodes"]
        .as_array()
        .map_or(0, |n| n.iter().filter(|n| n["alive"] == true).count())
}

/// Sends `msg` on a fresh connection to `start`, following
/// `room_elsewhere` to the node it names, and starting over from `start`
/// after a while when a node answers `storage_unavailable` (a room
/// changing hands): the client, the answer, and the nodes it was sent to.
async fn follow(start: SocketAddr, msg: &Value, expect: &str) -> (Client, Value, Vec<String>) {
    let mut visited = Vec::new();
    let mut addr = start;
    for _ in 0..40 {
        // A node sent to may have just died.
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            addr = start;
            continue;
        }
        let mut c = Client::tcp(addr).await;
        c.expect("welcome").await;
        c.send(msg.clone()).await;
        let answer = c.recv().await;
        if answer["code"] == "storage_unavailable" {
            tokio::time::sleep(Duration::from_millis(250)).await;
            addr = start;
            continue;
        }
        if answer["type"] == "error" && answer["code"] == "room_elsewhere" {
            let node = &answer["node"];
            visited.push(node["id"].as_str().unwrap_or("?").to_owned());
            addr = node["tcp"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("room_elsewhere names a TCP address");
            continue;
        }
        assert_eq!(answer["type"], expect, "{answer}");
        return (c, answer, visited);
    }
    panic!("room_elsewhere kept sending the player on: {visited:?}");
}

#[tokio::test]
async fn players_on_any_node_reach_the_room_and_play_tictactoe_and_chat_across_the_fleet() {
    let nats = Nats::cluster(3);
    let hosts = fleet(&nats);
    for h in &hosts {
        wait_nodes_up(h, 3).await;
    }
    let (cli_ok, out, _) = hosts[1].cli(&["status"]);
    assert!(cli_ok && out.contains("NODE") && out.contains("(this)"), "{out}");

    // X creates the room on node a; O arrives at node b and is sent on.
    let mut x = hosts[0].client(Transport::Ws).await;
    x.join("tictactoe", "m1", "xena").await;
    assert_eq!(x.event().await, json!({"type": "seat", "mark": "X"}));
    assert_eq!(x.event_of("state").await["status"], "waiting");
    let mut o = hosts[1].client(Transport::Tcp).await;
    o.send(json!({"type": "join", "game": "tictactoe", "room": "m1", "name": "otto"}))
        .await;
    let elsewhere = o.expect_error("room_elsewhere").await;
    assert_eq!(elsewhere["node"]["id"], "a", "{elsewhere}");
    assert_eq!(elsewhere["node"]["tcp"], hosts[0].tcp.to_string(), "{elsewhere}");
    assert!(
        elsewhere["node"]["ws"]
            .as_str()
            .is_some_and(|w| w.ends_with(&hosts[0].ws.port().to_string()))
    );
    let join = json!({"type": "join", "game": "tictactoe", "room": "m1", "name": "otto"});
    let (mut o, joined, visited) = follow(hosts[2].tcp, &join, "joined").await;
    assert_eq!(visited, ["a"]);
    assert_eq!(joined["room"], "m1");
    assert_eq!(o.event().await, json!({"type": "seat", "mark": "O"}));
    assert_eq!(o.event_of("state").await["turn"], "X");
    assert_eq!(x.event_of("state").await["status"], "playing");
    // A short game to X's win on the top row, each move seen by both.
    let mut last = Value::Null;
    for (who, cell) in [(0, 0), (1, 3), (0, 1), (1, 4), (0, 2)] {
        let c = if who == 0 { &mut x } else { &mut o };
        c.message(json!({"action": "move", "cell": cell})).await;
        for c in [&mut x, &mut o] {
            last = c.event_of("state").await;
            assert_eq!(last["board"][cell as usize], if who == 0 { "X" } else { "O" }, "{last}");
        }
    }
    assert_eq!(last["winner"], "X", "{last}");

    // A chat room made on node c; members arriving at a and b are sent on,
    // and every line reaches every member.
    let mut cat = hosts[2].client(Transport::Ws).await;
    cat.join("chat", "lounge", "cat").await;
    assert_eq!(cat.event().await["type"], "welcome");
    let mut members = vec![cat];
    for (start, name) in [(hosts[0].tcp, "ann"), (hosts[1].tcp, "bob")] {
        let join = json!({"type": "join", "game": "chat", "room": "lounge", "name": name});
        let (mut c, _, visited) = follow(start, &join, "joined").await;
        assert_eq!(visited, ["c"], "{name} is sent on to node c");
        assert_eq!(c.event().await["type"], "welcome");
        members.push(c);
    }
    for (i, from) in ["cat", "ann", "bob"].iter().enumerate() {
        members[i].message(json!({"say": format!("hello from {from}")})).await;
        for m in &mut members {
            let said = m.event_of("said").await;
            assert_eq!(said["from"], *from, "{said}");
            assert_eq!(said["text"], format!("hello from {from}"), "{said}");
        }
    }
    // Exactly one node serves each room.
    let rooms: Vec<u64> = hosts
        .iter()
        .map(|h| h.runtime()["rooms"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(rooms, [1, 0, 1]);
}

/// Resumes `tally`'s seat through `addr` (following `room_elsewhere`) and
/// checks that the room holds every input the player saw acknowledged,
/// each once.
///
/// `lost` may be above zero: frames the old node had sent (their inputs
/// durable) that were still on the wire at the kill, from before the
/// room's last checkpoint, which the new node's replay (from that
/// checkpoint on) cannot produce again. Their acks are the only inputs
/// the count may hold beyond what the player saw.
async fn resume_and_check(addr: SocketAddr, tally: &Tally) {
    let msg = json!({"type": "resume", "token": tally.token, "last_seq": tally.last_seq});
    let (mut c, resumed, _) = follow(addr, &msg, "resumed").await;
    assert!(resumed.get("rewound").is_none(), "nothing seen was undone: {resumed}");
    let lost = resumed["lost"].as_u64().unwrap_or(0);
    assert!(lost <= 8, "at most the frames in flight at the kill: {resumed}");
    let first = tally.last_seq + lost + 1;
    let mut replayed_acks = 0;
    for seq in first..first + resumed["replayed"].as_u64().unwrap_or(0) {
        let frame = c.recv().await;
        assert_eq!(frame["seq"].as_u64(), Some(seq), "replayed in order, no gap: {frame}");
        if frame["type"] == "ack" {
            replayed_acks += 1;
        }
    }
    c.message(json!({"do": "get"})).await;
    let count = loop {
        let f = c.recv().await;
        if f["type"] == "event" && f["data"]["count"].is_u64() {
            break f["data"]["count"].as_u64().unwrap_or(0);
        }
    };
    let seen = tally.acked + replayed_acks;
    assert!(
        (seen..=seen + lost).contains(&count),
        "every acknowledged input counted, once (count {count}, acks seen {seen}, lost {lost}): {resumed}"
    );
}

/// A counting player in each of `rooms` rooms created on `owner`, four
/// messages unanswered at a time, until their connections end.
async fn counted_rooms(owner: SocketAddr, rooms: usize) -> Vec<tokio::task::JoinHandle<Tally>> {
    let total = Arc::new(AtomicU64::new(0));
    (0..rooms)
        .map(|i| tokio::spawn(count_until_cut(owner, format!("r{i}"), 4, total.clone())))
        .collect()
}

#[tokio::test]
async fn a_killed_node_s_rooms_come_back_on_survivors_and_nothing_acknowledged_is_lost() {
    let nats = Nats::cluster(3);
    let mut hosts = fleet(&nats);
    for h in &hosts {
        wait_nodes_up(h, 3).await;
    }
    let players = counted_rooms(hosts[0].tcp, 6).await;
    hosts[0]
        .wait_until_within("rooms counting", Duration::from_secs(30), |h| {
            h.runtime()["rooms"].as_u64() == Some(6)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed = std::time::Instant::now();
    hosts[0].kill();
    let mut tallies = Vec::new();
    for p in players {
        tallies.push(p.await.expect("player"));
    }
    assert!(
        tallies.iter().all(|t| t.acked > 0),
        "every room counted before the kill"
    );
    // Survivors adopt the six rooms between them.
    hosts[1]
        .wait_until_within("the rooms adopted", Duration::from_secs(20), |h| {
            let b = h.runtime()["rooms"].as_u64().unwrap_or(0);
            b > 0 || h.log().contains("adopted a room")
        })
        .await;
    for t in &tallies {
        resume_and_check(hosts[1].tcp, t).await;
    }
    eprintln!(
        "rooms back and resumed {} ms after the kill",
        killed.elapsed().as_millis()
    );
    let served: u64 = hosts[1..]
        .iter()
        .map(|h| h.runtime()["rooms"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(served, 6, "each room runs on exactly one survivor");
    assert_eq!(nodes_up(&hosts[1]), 2);
    // The killed node comes back and rejoins the fleet.
    let back = hosts[0].try_restart().unwrap_or_else(|(m, log)| panic!("{m}\n{log}"));
    wait_nodes_up(&hosts[1], 3).await;
    wait_nodes_up(&back, 3).await;
}

#[tokio::test]
async fn a_node_cut_off_from_nats_stops_its_rooms_before_they_move_and_players_resume_elsewhere() {
    let nats = Nats::cluster(3);
    let mut proxy = Proxy::to(nats.urls[0].trim_start_matches("nats://"));
    let cut_off = start_node("a", &format!("[\"nats://{}\"]", proxy.addr));
    let others: Vec<Host> = ["b", "c"].iter().map(|n| start_node(n, &nats.toml_urls())).collect();
    for h in others.iter().chain([&cut_off]) {
        wait_nodes_up(h, 3).await;
    }
    let players = counted_rooms(cut_off.tcp, 3).await;
    cut_off
        .wait_until_within("rooms counting", Duration::from_secs(30), |h| {
            h.runtime()["rooms"].as_u64() == Some(3)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    proxy.cut();
    let mut tallies = Vec::new();
    for p in players {
        tallies.push(
            tokio::time::timeout(Duration::from_secs(20), p)
                .await
                .expect("told within the lease")
                .expect("player"),
        );
    }
    // The cut-off node stopped its rooms itself (its lease lapsed), told
    // every player so, and still runs, serving nothing.
    assert!(tallies.iter().all(|t| t.moved), "every player was told room_moved");
    assert_eq!(cut_off.runtime()["rooms"], 0);
    let lapsed = first_line_with(&cut_off.log(), "lease lapsed").expect("the lease lapsed");
    for t in &tallies {
        assert!(t.acked > 0);
        resume_and_check(others[0].tcp, t).await;
    }
    let served: u64 = others.iter().map(|h| h.runtime()["rooms"].as_u64().unwrap_or(0)).sum();
    assert_eq!(served, 3);
    // No room ran on two nodes: every adoption came after the old owner
    // had stopped (the hosts' log times share this machine's clock).
    for h in &others {
        if let Some(adopted) = first_line_with(&h.log(), "adopted a room") {
            assert!(
                adopted[..27] > lapsed[..27],
                "adopted {adopted}\nbefore the lease lapsed {lapsed}"
            );
        }
    }
}

/// The first log line containing `what`.
fn first_line_with(log: &str, what: &str) -> Option<String> {
    log.lines().find(|l| l.contains(what)).map(str::to_owned)
}

#[tokio::test]
async fn a_rollback_on_one_node_rolls_the_fleet_back_while_players_play_and_pins_follow() {
    let nats = Nats::cluster(3);
    let start = |node: &str| {
        Host::start_with(HostOptions {
            games: &["faulty"],
            config: &node_config(node, &nats.toml_urls()),
            extra_modules: vec![("faulty-2.wasm", signed("faulty-v2", "faulty", "2.0.0"))],
            ..Default::default()
        })
    };
    let (a, b) = (start("a"), start("b"));
    for h in [&a, &b] {
        wait_nodes_up(h, 2).await;
        h.wait_until("2.0.0 is active", |h| h.active("faulty").as_deref() == Some("2.0.0"))
            .await;
    }
    // Node c starts later with nothing in its modules folder.
    let start_c = || {
        Host::start_with(HostOptions {
            games: &[],
            config: &node_config("c", &nats.toml_urls()),
            ..Default::default()
        })
    };
    // A player on node b counts; the operator rolls back on node a.
    let mut p = b.client(Transport::Tcp).await;
    p.join("faulty", "live", "p").await;
    for _ in 0..3 {
        p.message(json!({"do": "add", "n": 1})).await;
    }
    let (ok, out, err) = a.cli(&["rollback", "faulty"]);
    assert!(ok, "{out} {err}");
    assert_eq!(a.active("faulty").as_deref(), Some("1.0.0"));
    b.wait_until_within("b follows the fleet", Duration::from_secs(10), |h| {
        h.active("faulty").as_deref() == Some("1.0.0")
    })
    .await;
    let swapped = loop {
        let f = p.recv().await;
        if f["type"] == "swapped" {
            break f;
        }
    };
    assert_eq!(swapped["version"], "1.0.0", "{swapped}");
    // The room kept its state through the fleet's rollback.
    p.message(json!({"do": "get"})).await;
    let count = loop {
        let f = p.recv().await;
        if f["type"] == "event" && f["data"]["count"].is_u64() {
            break f["data"]["count"].as_u64();
        }
    };
    assert_eq!(count, Some(3));
    assert!(
        b.audit()
            .iter()
            .any(|e| e["event"] == "fleet_decision" && e["version"] == "1.0.0"),
        "{:?}",
        b.audit()
    );
    // A pin follows too, and a node that starts later converges on both.
    let (ok, out, err) = a.cli(&["pin", "faulty"]);
    assert!(ok, "{out} {err}");
    b.wait_until_within("b pins", Duration::from_secs(10), |h| {
        h.game("faulty")["pinned"] == true
    })
    .await;
    // A version signed by a key node a trusts and node b does not: a
    // loads it (pinned: not promoted) and ships it; b verifies it against
    // its own trust folder and refuses it.
    let other = respawn_signing::SecretKey::generate().expect("key");
    std::fs::write(a.trust_dir().join("other.pub"), other.public().to_openssh("other")).expect("trust");
    a.wait_for_audit("trust_changed", Some("key_added")).await;
    let faulty = std::fs::read(respawn_e2e::guest("faulty")).expect("guest");
    a.drop_module("faulty-3.wasm", &sign_with(&faulty, &other, "faulty", "3.0.0"));
    a.wait_until("a loads 3.0.0", |h| has_version(h, "faulty", "3.0.0"))
        .await;
    refuses_from_fleet(&b, "faulty-3.0.0").await;
    let c = start_c();
    c.wait_until_within("c converges", Duration::from_secs(10), |h| {
        h.active("faulty").as_deref() == Some("1.0.0") && h.game("faulty")["pinned"] == true
    })
    .await;
    // c has 2.0.0 from the fleet too, to roll forward to, and refuses 3.0.0
    // as b did.
    c.wait_until_within("c has 2.0.0 from the fleet", Duration::from_secs(10), |h| {
        has_version(h, "faulty", "2.0.0")
    })
    .await;
    refuses_from_fleet(&c, "faulty-3.0.0").await;
    assert!(!has_version(&b, "faulty", "3.0.0"));
    assert!(!has_version(&c, "faulty", "3.0.0"));
}

/// Waits for `host` to refuse the fleet's `<game>-<version>` for its
/// signer. An unverified file names no version: the fleet's file name does.
async fn refuses_from_fleet(host: &Host, game_version: &str) {
    let refused = host.wait_for_audit("reject", Some("untrusted_signer")).await;
    assert!(
        refused["file"]
            .as_str()
            .is_some_and(|f| f.contains(&format!("fleet-modules/{game_version}-"))),
        "{refused}"
    );
}

/// Whether `host` has `version` of `game` in its slots.
fn has_version(host: &Host, game: &str, version: &str) -> bool {
    host.game(game)["versions"]
        .as_array()
        .is_some_and(|vs| vs.iter().any(|v| v["version"] == version))
}

#[tokio::test]
async fn a_probation_failing_on_one_node_rolls_the_whole_fleet_back() {
    let nats = Nats::cluster(3);
    let config = |node: &str| {
        node_config(node, &nats.toml_urls()) + "[probation]\nwindow_ms = 60000\nmin_calls = 10\nmax_error_rate = 0.05\n"
    };
    let start = |node: &str| {
        Host::start_with(HostOptions {
            games: &["faulty"],
            config: &config(node),
            ..Default::default()
        })
    };
    let (a, b) = (start("a"), start("b"));
    for h in [&a, &b] {
        wait_nodes_up(h, 2).await;
    }
    // 1.1.0 is dropped on node a only: a promotes it, b receives it
    // through the fleet, verifies it, and follows a's decision.
    let mut on_b = b.client(Transport::Tcp).await;
    on_b.join("faulty", "calm", "b").await;
    a.drop_module("faulty-1.1.0.wasm", &signed("faulty", "faulty", "1.1.0"));
    for h in [&a, &b] {
        h.wait_until("1.1.0 is active", |h| h.active("faulty").as_deref() == Some("1.1.0"))
            .await;
    }
    // On node a, two players' calls fail: a's probation rolls back, and
    // the fleet with it, though nothing failed on b.
    let mut players = Vec::new();
    for room in ["p1", "p2"] {
        let mut c = a.client(Transport::Tcp).await;
        c.join("faulty", room, "t").await;
        players.push(c);
    }
    for c in &mut players {
        for i in 0..5 {
            c.send(json!({"type": "message", "data": {"do": "add", "n": 1}, "ref": i}))
                .await;
        }
    }
    for (i, c) in players.iter_mut().enumerate() {
        c.send(json!({"type": "message", "data": {"do": "panic"}, "ref": format!("x{i}")}))
            .await;
    }
    a.wait_for_audit("auto_rollback", None).await;
    b.wait_until_within("b follows a's rollback", Duration::from_secs(10), |h| {
        h.active("faulty").as_deref() == Some("1.0.0")
    })
    .await;
    let followed = b.wait_for_audit("fleet_decision", None).await;
    assert_eq!(followed["version"], "1.0.0", "{followed}");
    let swapped = loop {
        let f = on_b.recv().await;
        if f["type"] == "swapped" && f["version"] == "1.0.0" {
            break f;
        }
    };
    assert_eq!(swapped["version"], "1.0.0");
}
