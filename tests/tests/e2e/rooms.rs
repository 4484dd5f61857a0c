//! Rooms: isolation, containment of guest failures, lifecycle and limits.

use respawn_e2e::{Client, Host, HostOptions, Transport, signed};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

async fn count(c: &mut Client) -> Value {
    c.message(json!({"do": "count"})).await;
    c.event().await["count"].take()
}

#[tokio::test]
async fn a_guest_error_leaves_the_room_running() {
    let host = Host::start();
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "r", "p").await;
    assert_eq!(count(&mut c).await, 1);
    c.message(json!({"do": "reject"})).await;
    let err = c.expect_error("rejected").await;
    assert_eq!(err["reason"], "asked-to");
    assert_eq!(err["message"], "rejected on request");
    assert_eq!(count(&mut c).await, 2, "state survived the rejection");
}

#[tokio::test]
async fn two_rooms_of_one_game_do_not_share_state() {
    let host = Host::start();
    let mut a = host.client(Transport::Ws).await;
    let mut b = host.client(Transport::Tcp).await;
    a.join("faulty", "room-a", "a").await;
    b.join("faulty", "room-b", "b").await;
    for n in 1..=3 {
        assert_eq!(count(&mut a).await, n);
    }
    assert_eq!(count(&mut b).await, 1);

    let mut x = host.client(Transport::Ws).await;
    let mut y = host.client(Transport::Ws).await;
    x.join("tictactoe", "t1", "x").await;
    y.join("tictactoe", "t2", "y").await;
    assert_eq!(y.event().await["mark"], "X", "alone in its own room, y gets X too");
}

/// The frames a player gets when the game fails on its message: the room
/// restarted, and the message failed.
async fn expect_restart(c: &mut Client, reason: &str) {
    let restarted = c.expect("restarted").await;
    assert_eq!(restarted["reason"], reason, "{restarted}");
    c.expect_error("guest_restarted").await;
}

#[tokio::test]
async fn a_trapping_guest_restarts_only_its_room_and_keeps_its_state() {
    let host = Host::start();
    let mut p1 = host.client(Transport::Ws).await;
    let mut p2 = host.client(Transport::Tcp).await;
    let mut elsewhere = host.client(Transport::Tcp).await;
    p1.join("faulty", "doomed", "p1").await;
    p2.join("faulty", "doomed", "p2").await;
    elsewhere.join("faulty", "fine", "e").await;
    assert_eq!(count(&mut elsewhere).await, 1);
    assert_eq!(count(&mut p1).await, 1);

    p1.message(json!({"do": "panic"})).await;
    expect_restart(&mut p1, "trap").await;
    assert_eq!(p2.expect("restarted").await["reason"], "trap");
    // Both players are still in the room, whose state survived.
    assert_eq!(count(&mut p2).await, 2);
    // The other room of the same game is untouched.
    assert_eq!(count(&mut elsewhere).await, 2);
    let log = host.log();
    assert!(log.contains("guest fault, restarting the room"), "the fault is logged");
    assert!(
        log.contains("guest panicked") && log.contains("panic on request"),
        "with the guest's panic message"
    );
}

#[tokio::test]
async fn an_endless_loop_is_cut_off_and_other_rooms_keep_answering() {
    let host = Host::start_with(HostOptions {
        config: "[sandbox]\ncall_timeout_ms = 200\n",
        ..HostOptions::default()
    });
    let mut spinner = host.client(Transport::Tcp).await;
    let mut other = host.client(Transport::Ws).await;
    spinner.join("faulty", "spin", "s").await;
    other.join("echo", "calm", "o").await;
    spinner.message(json!({"do": "loop"})).await;
    for i in 0..5 {
        other.message(json!(i)).await;
        assert_eq!(other.event().await, json!(i));
    }
    expect_restart(&mut spinner, "timeout").await;
    spinner.ping().await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_limit_not_the_host() {
    let host = Host::start_with(HostOptions {
        config: "[sandbox]\nmemory_mib = 16\n",
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "bomb", "b").await;
    c.message(json!({"do": "alloc", "mb": 4})).await;
    assert_eq!(c.event().await["allocated_mb"], 4);
    c.message(json!({"do": "alloc", "mb": 64})).await;
    expect_restart(&mut c, "out_of_memory").await;
    assert_eq!(count(&mut c).await, 1);
}

#[tokio::test]
async fn a_kicked_player_is_told_and_leaves_the_room() {
    let host = Host::start();
    let mut k = host.client(Transport::Ws).await;
    let mut stay = host.client(Transport::Ws).await;
    k.join("faulty", "r", "k").await;
    stay.join("faulty", "r", "s").await;
    k.message(json!({"do": "kick"})).await;
    assert_eq!(k.expect("kicked").await["reason"], "kicked on request");
    k.message(json!({"do": "count"})).await;
    k.expect_error("not_joined").await;
    assert_eq!(count(&mut stay).await, 1);
}

#[tokio::test]
async fn ticks_arrive_with_the_rooms_clock() {
    let host = Host::start();
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "ticking", "t").await;
    c.message(json!({"do": "tick", "ms": 20})).await;
    assert_eq!(c.event().await["ticking"], 20);
    let mut last = 0;
    for _ in 0..3 {
        let now = c.event().await["tick"].as_u64().unwrap_or_default();
        assert!(now > last, "the room clock moves forward");
        last = now;
    }
    c.message(json!({"do": "tick", "ms": 0})).await;
    c.event_of_value("ticking", 0).await;
}

trait TickExt {
    async fn event_of_value(&mut self, key: &str, value: u64);
}

impl TickExt for Client {
    /// Skips events until one with `key == value` (ticks may still be queued).
    async fn event_of_value(&mut self, key: &str, value: u64) {
        loop {
            if self.event().await[key] == value {
                return;
            }
        }
    }
}

#[tokio::test]
async fn the_guest_sees_only_the_hosts_clock() {
    let host = Host::start();
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "clock", "t").await;
    c.message(json!({"do": "time"})).await;
    let t = c.event().await;
    assert_eq!(t["host_ms"], t["wasi_ms"], "WASI's clock is the room's clock: {t}");
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let host_ms = t["host_ms"].as_u64().unwrap_or_default();
    assert!(
        wall.abs_diff(host_ms) < 60_000,
        "the room clock is wall time: {host_ms} vs {wall}"
    );
}

#[tokio::test]
async fn an_empty_room_closes_after_its_linger_and_a_new_one_starts_fresh() {
    let host = Host::start();
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "brief", "p").await;
    assert_eq!(count(&mut c).await, 1);
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
    // Rejoining within the linger finds the same room.
    c.join("faulty", "brief", "p").await;
    assert_eq!(count(&mut c).await, 2);
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    c.join("faulty", "brief", "p").await;
    assert_eq!(count(&mut c).await, 1, "the lingering room closed; this is a new one");
    assert!(host.log().contains("room closed: empty"));
}

#[tokio::test]
async fn limits_on_players_and_connections_are_clear_refusals() {
    let host = Host::start_with(HostOptions {
        config: "[rooms]\nmax_players = 2\n[net]\nmax_connections = 3\n",
        ..HostOptions::default()
    });
    let mut a = host.client(Transport::Tcp).await;
    let mut b = host.client(Transport::Ws).await;
    let mut c = host.client(Transport::Tcp).await;
    a.join("echo", "small", "a").await;
    b.join("echo", "small", "b").await;
    c.send(json!({"type": "join", "game": "echo", "room": "small", "name": "c"}))
        .await;
    c.expect_error("room_full").await;
    c.join("echo", "other", "c").await;

    let mut d = Client::tcp(host.tcp).await;
    d.expect_error("server_full").await;
    assert!(d.try_recv().await.is_none(), "refused connections are closed");
    drop(a);
    // The freed place is reusable once the host has seen the disconnect.
    let mut welcomed = false;
    for _ in 0..50 {
        let mut e = Client::ws(host.ws).await;
        if e.recv().await["type"] == "welcome" {
            welcomed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(welcomed);
}

#[tokio::test]
async fn rooms_may_use_half_the_instance_pool_so_a_swap_always_fits() {
    let host = Host::start_with(HostOptions {
        config: "[sandbox]\nmax_instances = 4\n",
        ..HostOptions::default()
    });
    let mut a = host.client(Transport::Tcp).await;
    let mut b = host.client(Transport::Tcp).await;
    let mut c = host.client(Transport::Tcp).await;
    a.join("faulty", "one", "a").await;
    b.join("faulty", "two", "b").await;
    c.send(json!({"type": "join", "game": "faulty", "room": "three", "name": "c"}))
        .await;
    c.expect_error("server_full").await;
    // Both rooms can still move to a new version: the pool has room for it.
    host.drop_module("faulty-2.wasm", &respawn_e2e::signed("faulty-v2", "faulty", "2.0.0"));
    for p in [&mut a, &mut b] {
        assert_eq!(p.recv().await["type"], "swapped");
        assert_eq!(count(p).await, 10);
    }
}

#[tokio::test]
async fn a_game_that_refuses_to_start_a_room_is_a_clear_error() {
    let host = Host::start_with(HostOptions {
        config: "[games.faulty.config]\nfail_init = true\n",
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.send(json!({"type": "join", "game": "faulty", "name": "p"})).await;
    let err = c.expect_error("room_closed").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap_or_default()
            .contains("init refused by config"),
        "{err}"
    );
    c.join("echo", "lobby", "p").await;
}

#[tokio::test]
async fn a_quiet_room_sleeps_without_its_instance_and_wakes_with_its_state() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        // Long enough for the test to see the room awake between sleeps
        // on a busy machine.
        config: "[rooms]\nsleep_after_ms = 2000\n",
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "nap", "p").await;
    assert_eq!(count(&mut c).await, 1);
    assert_eq!(count(&mut c).await, 2);
    let admin = host.admin_client();
    let view = || admin.request("GET", "/debug/rooms/faulty/nap", None).1;
    host.wait_until("the room sleeps", |_| view()["asleep"] == true).await;
    assert_eq!(view()["memory_bytes"], 0, "{}", view());
    assert_eq!(host.runtime()["instances"], 0, "its instance went back to the pool");

    // The next message wakes it, with the state it had.
    assert_eq!(count(&mut c).await, 3);
    let awake = view();
    assert_eq!(awake["asleep"], false, "{awake}");
    assert!(awake["memory_bytes"].as_u64().unwrap_or(0) > 0, "{awake}");
    host.wait_until("it sleeps again", |_| view()["asleep"] == true).await;
    assert_eq!(count(&mut c).await, 4);

    // A room that ticks has something to do: it stays awake, even when its
    // ticks are further apart than the sleep (none comes in this wait).
    c.message(json!({"do": "tick", "ms": 10_000, "spin": 0})).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(view()["asleep"], false);
    assert_eq!(host.runtime()["instances"], 1);
}

/// A host whose rooms checkpoint every 32 inputs (`extra`: more of the
/// `[supervision]` section).
fn every_32(extra: &str) -> Host {
    Host::start_with(HostOptions {
        games: &["faulty"],
        config: &format!("[supervision]\ncheckpoint_every = 32\n{extra}"),
        ..HostOptions::default()
    })
}

/// A player named `name` in each of the rooms `r0` to `r7`.
async fn players_in_8_rooms(host: &Host, name: &str) -> Vec<Client> {
    let mut players = Vec::new();
    for r in 0..8 {
        let mut c = host.client(Transport::Tcp).await;
        c.join("faulty", &format!("r{r}"), name).await;
        players.push(c);
    }
    players
}

/// `c` sends `n` inputs to its room and gets their answers.
async fn inputs(c: &mut Client, n: usize) {
    for _ in 0..n {
        c.message(json!({"do": "count"})).await;
    }
    for _ in 0..n {
        assert!(c.event().await["count"].is_u64());
    }
}

/// Room `r{r}` as the admin API shows it.
fn room_view(host: &Host, r: usize) -> Value {
    host.admin_client()
        .request("GET", &format!("/debug/rooms/faulty/r{r}"), None)
        .1
}

fn journal_entries(view: &Value) -> u64 {
    view["journal_entries"].as_u64().unwrap_or_else(|| panic!("{view}"))
}

/// Journal entries (inputs since the last checkpoint) of rooms `r0` to
/// `r7` of `host` after each took the same 31 inputs from a new player
/// (its join and 30 messages).
async fn journals_after_31_inputs(host: &Host) -> Vec<u64> {
    let mut journals = Vec::new();
    for (r, mut c) in players_in_8_rooms(host, "p").await.into_iter().enumerate() {
        inputs(&mut c, 30).await;
        journals.push(journal_entries(&room_view(host, r)));
    }
    journals
}

/// With `checkpoint_every = 32`, 31 inputs leave 31 entries in a journal
/// whose first span is whole, and `h - 1` in one shortened by `h` (1 to
/// 16, by the room's seed); at least two of 8 rooms must differ (all 8
/// drawing the same `h` has a chance of 17^-7).
fn assert_staggered(journals: &[u64]) {
    assert!(journals.iter().all(|&n| n == 31 || n <= 15), "{journals:?}");
    let distinct: std::collections::BTreeSet<_> = journals.iter().collect();
    assert!(
        distinct.len() > 1,
        "every room checkpointed at the same input: {journals:?}"
    );
}

#[tokio::test]
async fn rooms_opened_together_take_their_first_checkpoint_at_different_inputs() {
    assert_staggered(&journals_after_31_inputs(&every_32("")).await);
    // Off: every room checkpoints at exactly its 32nd input.
    let host = every_32("stagger_checkpoints = false\n");
    assert_eq!(journals_after_31_inputs(&host).await, [31; 8]);
}

#[tokio::test]
async fn rooms_recovered_together_take_their_first_checkpoint_at_different_inputs() {
    let mut host = every_32("");
    let _first = players_in_8_rooms(&host, "first").await;
    let (ok, out) = host.terminate();
    assert!(ok, "graceful stop: {out:?}\n{}", host.log());
    // All 8 come back at once, from the checkpoints the stop took.
    let host = host.restart();
    assert_staggered(&journals_after_31_inputs(&host).await);
}

#[tokio::test]
async fn rooms_swapped_together_take_their_next_checkpoint_at_different_inputs() {
    let host = every_32("");
    let mut players = players_in_8_rooms(&host, "p").await;
    // All 8 move to 2.0.0 at once, and each checkpoints right after.
    host.drop_module("faulty-2.wasm", &signed("faulty-v2", "faulty", "2.0.0"));
    let mut journals = Vec::new();
    for (r, c) in players.iter_mut().enumerate() {
        while c.recv().await["type"] != "swapped" {}
        inputs(c, 31).await;
        let view = room_view(&host, r);
        assert_eq!(view["version"], "2.0.0", "{view}");
        journals.push(journal_entries(&view));
    }
    assert_staggered(&journals);
}
