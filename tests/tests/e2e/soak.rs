//! Issue 4: fault-injection soak. Many reconnecting clients in a few rooms
//! add numbers to their room's counter while some of their messages trap
//! the guest and some of their connections are cut. At the end: the host
//! is alive, every room's counter is exactly the sum of the additions it
//! acknowledged (only trapping inputs were lost), every message got its
//! reply or an error (cuts with a reply in flight included: the reply
//! comes after the resume), and tasks, instances, rooms, connections and parked
//! seats are back to their baseline.
//!
//! Short by default (CI); `just soak` runs it longer:
//! `SOAK_SECS=60 SOAK_CLIENTS=200 cargo test -p respawn-e2e --test e2e soak -- --nocapture`.

use respawn_client::{Backoff, Client, Endpoint, Options};
use respawn_e2e::{Host, HostOptions};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// What one client did.
#[derive(Debug, Default)]
struct Tally {
    room: usize,
    acked_sum: u64,
    adds: u64,
    traps: u64,
    cuts: u64,
    in_flight_cuts: u64,
    unanswered: u64,
}

/// A tiny deterministic generator per client (xorshift).
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn play(endpoint: Endpoint, i: usize, rooms: usize, until: Instant) -> (Tally, Client) {
    let options = Options {
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(200),
        },
        ..Options::default()
    };
    let mut c = Client::connect(endpoint, options).await.expect("connect");
    let mut t = Tally {
        room: i % rooms,
        ..Tally::default()
    };
    c.join("faulty", &format!("soak-{}", t.room), &format!("p{i}"))
        .await
        .expect("join");
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
    let mut reference = 0u64;
    while Instant::now() < until {
        let roll = dice.roll(100);
        if roll < 4 {
            // A cut between two messages.
            c.drop_connection().await;
            t.cuts += 1;
            continue;
        }
        reference += 1;
        let (data, n) = if roll < 14 {
            (json!({"do": "panic"}), 0)
        } else {
            let n = 1 + dice.roll(9);
            (json!({"do": "add", "n": n}), n)
        };
        c.send(json!({"type": "message", "data": data, "ref": reference}))
            .await
            .expect("send");
        if dice.roll(100) < 5 {
            // A cut with the reply in flight: it comes after the resume,
            // from the seat's queue or resent after `last_seq`.
            c.drop_connection().await;
            t.cuts += 1;
            t.in_flight_cuts += 1;
        }
        let reply = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let f = c.recv().await.expect("recv");
                if f["ref"] == reference && (f["type"] == "ack" || f["type"] == "error") {
                    return f;
                }
            }
        })
        .await;
        match reply {
            Ok(f) if f["type"] == "ack" => {
                assert!(n > 0, "a trap was acknowledged: {f}");
                t.acked_sum += n;
                t.adds += 1;
            }
            Ok(f) => {
                assert_eq!(f["code"], "guest_restarted", "{f}");
                assert_eq!(n, 0, "an addition failed: {f}");
                t.traps += 1;
            }
            Err(_) => {
                eprintln!("soak: player {} got no reply to {reference}", c.player());
                t.unanswered += 1;
            }
        }
    }
    (t, c)
}

async fn room_count(host: &Host, room: usize) -> u64 {
    let mut c = host.client(respawn_e2e::Transport::Tcp).await;
    c.join("faulty", &format!("soak-{room}"), "checker").await;
    c.send(json!({"type": "message", "data": {"do": "get"}})).await;
    let data: Value = c.event().await;
    data["count"].as_u64().expect("count")
}

#[tokio::test]
async fn soak_with_traps_and_cut_connections() {
    let secs = env_or("SOAK_SECS", 6);
    let clients = env_or("SOAK_CLIENTS", 24) as usize;
    let rooms = (clients / 4).max(1);
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[supervision]\nmax_restarts = 10000\nwindow_ms = 1000\n\
                 [net]\nresume_grace_ms = 1000\nrate_per_sec = 100000\nrate_burst = 100000\n\
                 [probation]\nwindow_ms = 0\n[sandbox]\nmax_instances = 512\n",
        ..HostOptions::default()
    });
    let baseline = host.runtime();
    let until = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let endpoint = if i % 2 == 0 {
            Endpoint::Tcp(host.tcp)
        } else {
            Endpoint::Ws(format!("ws://{}/", host.ws))
        };
        tasks.push(tokio::spawn(play(endpoint, i, rooms, until)));
    }
    let mut tallies = Vec::new();
    let mut held = Vec::new();
    for t in tasks {
        let (tally, client) = t.await.expect("client task");
        tallies.push(tally);
        held.push(client);
    }
    let elapsed = started.elapsed();
    let peak = host.runtime();

    // Every room holds exactly what it acknowledged.
    let mut counts = Vec::new();
    for room in 0..rooms {
        let expected: u64 = tallies.iter().filter(|t| t.room == room).map(|t| t.acked_sum).sum();
        counts.push((room, room_count(&host, room).await, expected));
    }
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let (adds, traps, cuts, unanswered) = (
        sum(|t| t.adds),
        sum(|t| t.traps),
        sum(|t| t.cuts),
        sum(|t| t.unanswered),
    );
    let in_flight = sum(|t| t.in_flight_cuts);
    let (reconnects, resumes) = held
        .iter()
        .map(|c| c.reconnects())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    println!(
        "soak: rooms (room, counter, acknowledged): {counts:?}; unanswered {unanswered}; reconnects {reconnects}, resumed {resumes}"
    );
    for (room, count, expected) in counts {
        assert_eq!(count, expected, "room soak-{room}");
    }
    assert_eq!(unanswered, 0, "every message got its reply or an error");
    assert!(traps > 0 && in_flight > 0 && resumes > 0, "faults were injected");

    for c in held {
        c.close().await;
    }
    host.wait_until("rooms, connections, seats and instances are gone", |h| {
        let rt = h.runtime();
        rt["rooms"] == 0 && rt["connections"] == 0 && rt["parked_seats"] == 0 && rt["instances"] == 0
    })
    .await;
    let base_tasks = baseline["tasks"].as_u64().unwrap_or(0);
    host.wait_until("tasks are back to the baseline", |h| {
        h.runtime()["tasks"].as_u64().unwrap_or(u64::MAX) <= base_tasks
    })
    .await;
    let end = host.runtime();
    let mib = |v: &Value| v["rss_bytes"].as_u64().unwrap_or(0) as f64 / (1 << 20) as f64;
    println!(
        "soak: {clients} clients in {rooms} rooms for {:.1} s: {adds} additions, {traps} traps, {cuts} cuts \
         ({in_flight} with a reply in flight; {reconnects} reconnects, {resumes} resumed), {:.0} messages/s; tasks {} -> {} -> {}; \
         instances peak {}; RSS {:.1} -> {:.1} -> {:.1} MiB",
        elapsed.as_secs_f64(),
        (adds + traps) as f64 / elapsed.as_secs_f64(),
        baseline["tasks"],
        peak["tasks"],
        end["tasks"],
        peak["instances"],
        mib(&baseline),
        mib(&peak),
        mib(&end),
    );
    // Memory: allocators keep some of what they freed, so only a gross
    // leak is an error; the figures above are the report.
    assert!(mib(&end) < mib(&baseline) + 256.0, "memory did not come back");
}
