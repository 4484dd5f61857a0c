//! Durability: `kill -9` of the host, a restart, and what came back:
//! rooms, seats and game storage in the host's SQLite database.

use respawn_e2e::{Client, Host, HostOptions, Transport};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one player of a counted stream saw before its host died (or, in a
/// fleet, before its node gave the room up).
pub(crate) struct Tally {
    pub(crate) token: String,
    pub(crate) last_seq: u64,
    pub(crate) acked: u64,
    /// The connection ended with `room_moved` (a fleet's node lost its
    /// lease), not with the connection dying.
    pub(crate) moved: bool,
}

/// Joins `room` of the counting game and sends `add 1` messages, up to
/// `window` unanswered at a time, until the connection dies or the room
/// moves; counts the acknowledgements (also into `total`) and the last
/// `seq` seen.
pub(crate) async fn count_until_cut(
    addr: std::net::SocketAddr,
    room: String,
    window: u64,
    total: Arc<AtomicU64>,
) -> Tally {
    let mut c = Client::tcp(addr).await;
    let token = c.expect("welcome").await["resume"].as_str().unwrap().to_owned();
    c.join("faulty", &room, "counter").await;
    let (mut sent, mut acked, mut last_seq) = (0u64, 0u64, 0u64);
    let tally = |token, last_seq, acked, moved| Tally {
        token,
        last_seq,
        acked,
        moved,
    };
    loop {
        while sent < acked + window {
            sent += 1;
            let msg = json!({"type": "message", "data": {"do": "add", "n": 1}, "ref": sent});
            if c.try_send_raw(msg.to_string().as_bytes()).await.is_err() {
                return tally(token, last_seq, acked, false);
            }
        }
        let Some(frame) = c.try_recv().await else {
            return tally(token, last_seq, acked, false);
        };
        if let Some(seq) = frame["seq"].as_u64() {
            assert_eq!(seq, last_seq + 1, "frames are numbered without a gap: {frame}");
            last_seq = seq;
        }
        match frame["type"].as_str() {
            Some("ack") => {
                acked += 1;
                total.fetch_add(1, Ordering::Relaxed);
            }
            Some("event") => {}
            Some("error") if frame["code"] == "room_moved" => return tally(token, last_seq, acked, true),
            _ => panic!("unexpected frame {frame}"),
        }
    }
}

/// Resumes `tally`'s seat on the restarted host: returns the `resumed`
/// frame, the acknowledgements among the frames replayed, and the client.
async fn resume(host: &Host, tally: &Tally) -> (Value, u64, Client) {
    let mut c = Client::tcp(host.tcp).await;
    c.expect("welcome").await;
    c.send(json!({"type": "resume", "token": tally.token, "last_seq": tally.last_seq}))
        .await;
    let resumed = c.expect("resumed").await;
    let mut acks = 0;
    let replayed = resumed["replayed"].as_u64().unwrap_or(0);
    for seq in tally.last_seq + 1..=tally.last_seq + replayed {
        let frame = c.recv().await;
        assert_eq!(frame["seq"].as_u64(), Some(seq), "replayed in order, no gap: {frame}");
        if frame["type"] == "ack" {
            acks += 1;
        }
    }
    (resumed, acks, c)
}

async fn count_of(c: &mut Client) -> u64 {
    c.message(json!({"do": "get"})).await;
    loop {
        let f = c.recv().await;
        if f["type"] == "event" && f["data"]["count"].is_u64() {
            return f["data"]["count"].as_u64().unwrap_or(0);
        }
    }
}

/// Four rooms counting at once; the host is killed (SIGKILL) once
/// `after` messages were acknowledged in all, and started again.
async fn counted_stream_then_kill(config: &str, after: u64) -> (Host, Vec<Tally>) {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config,
        ..Default::default()
    });
    let total = Arc::new(AtomicU64::new(0));
    let players: Vec<_> = (0..4)
        .map(|i| {
            let (addr, total) = (host.tcp, total.clone());
            tokio::spawn(async move { count_until_cut(addr, format!("r{i}"), 4, total).await })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(60), async {
        while total.load(Ordering::Relaxed) < after {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the stream got going");
    host.kill();
    let mut tallies = Vec::new();
    for p in players {
        tallies.push(p.await.expect("player"));
    }
    // One host: nothing is ever moved, only cut.
    assert!(tallies.iter().all(|t| !t.moved), "room_moved from a single host");
    (host.restart(), tallies)
}

#[tokio::test]
async fn strict_loses_nothing_acknowledged_across_kill_9_and_players_resume_without_a_gap() {
    let (host, tallies) = counted_stream_then_kill(
        r#"
        [storage]
        durability = "strict"
        # A long commit window: frames sent before their input is on disk
        # would be caught.
        group_commit_ms = 10
        [supervision]
        checkpoint_every = 16
        [net]
        resume_grace_ms = 60000
        "#,
        200,
    )
    .await;
    assert!(
        host.log().contains("rooms recovered from the database"),
        "{}",
        host.log()
    );
    assert_eq!(host.runtime()["rooms"], 4, "every room is back before anyone joins");
    assert_eq!(host.runtime()["parked_seats"], 4);
    for tally in &tallies {
        assert!(tally.acked > 0, "each room counted before the kill");
        let (resumed, replayed_acks, mut c) = resume(&host, tally).await;
        assert_eq!(resumed["lost"], 0, "{resumed}");
        assert!(
            resumed.get("rewound").is_none(),
            "nothing the player saw was undone: {resumed}"
        );
        // The room holds exactly what was acknowledged: before the kill,
        // and in the frames the player missed and got on resuming.
        let count = count_of(&mut c).await;
        assert_eq!(count, tally.acked + replayed_acks, "{resumed}");
    }
}

#[tokio::test]
async fn journal_loses_at_most_the_commit_window_and_the_resume_says_so() {
    let (host, tallies) = counted_stream_then_kill(
        r#"
        [storage]
        durability = "journal"
        group_commit_ms = 20
        group_commit_max = 64
        [net]
        resume_grace_ms = 60000
        "#,
        400,
    )
    .await;
    for tally in &tallies {
        let (resumed, replayed_acks, mut c) = resume(&host, tally).await;
        let acked = tally.acked + replayed_acks;
        let count = count_of(&mut c).await;
        assert!(count <= acked, "nothing is invented: {count} > {acked}");
        // At most one group commit under way and the one filling.
        assert!(acked - count <= 2 * 64, "lost {} of {acked}", acked - count);
        if count < acked {
            assert!(
                resumed["rewound"].as_u64().is_some_and(|r| r > 0),
                "a loss the player saw is reported: {resumed}"
            );
        }
    }
}

#[tokio::test]
async fn a_room_that_cannot_come_back_is_set_aside_with_a_report_and_the_rest_start() {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[supervision]\ncheckpoint_every = 1\n[storage]\ndurability = \"strict\"",
        ..Default::default()
    });
    let mut good = host.client(Transport::Tcp).await;
    good.join("faulty", "good", "g").await;
    good.message(json!({"do": "add", "n": 7})).await;
    assert_eq!(good.event().await["count"], 7);
    let mut bad = host.client(Transport::Tcp).await;
    bad.join("faulty", "bad", "b").await;
    bad.message(json!({"do": "poison"})).await;
    assert_eq!(bad.event().await["poisoned"], true);
    // One more input, so the poisoned state is checkpointed.
    bad.message(json!({"do": "get"})).await;
    bad.event().await;
    host.kill();
    let host = host.restart();
    assert_eq!(
        host.runtime()["rooms"],
        1,
        "the good room is back; the bad one is set aside"
    );
    let crashes: Vec<Value> = std::fs::read_dir(host.state_dir().join("crashes"))
        .expect("a crash report")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect();
    assert!(
        crashes
            .iter()
            .any(|r| r["reason"] == "recovery_failed" && r["room"] == "bad"),
        "{crashes:?}"
    );
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "good", "g2").await;
    assert_eq!(count_of(&mut c).await, 7);
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
    c.join("faulty", "bad", "b2").await;
    assert_eq!(count_of(&mut c).await, 0, "the set-aside room starts fresh");
}

#[tokio::test]
async fn game_storage_keeps_values_within_limits_and_survives_kill_9() {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[storage]\ndurability = \"strict\"\nkv_quota_mib = 1",
        ..Default::default()
    });
    let mut a = host.client(Transport::Tcp).await;
    a.join("faulty", "a", "a").await;
    let mut b = host.client(Transport::Tcp).await;
    b.join("faulty", "b", "b").await;
    async fn kv(c: &mut Client, order: Value) -> Value {
        c.message(order).await;
        c.event().await
    }
    assert_eq!(
        kv(&mut a, json!({"do": "kv_get", "key": "missing"})).await,
        json!({"kv": null})
    );
    assert_eq!(
        kv(&mut a, json!({"do": "kv_set", "key": "", "value": 1})).await,
        json!({"kv_error": "invalid_key"})
    );
    assert_eq!(
        kv(&mut a, json!({"do": "kv_big", "key": "big", "bytes": 70_000})).await,
        json!({"kv_error": "too_large"})
    );
    // 1 MiB of quota: sixteen values of 60 KiB fit, the eighteenth does not.
    let mut refused = None;
    for i in 0..18 {
        let r = kv(
            &mut a,
            json!({"do": "kv_big", "key": format!("fill/{i:02}"), "bytes": 60_000}),
        )
        .await;
        if r != json!({"kv": "ok"}) {
            refused = Some((i, r));
            break;
        }
    }
    let (at, why) = refused.expect("the quota stops the fill");
    assert_eq!(why, json!({"kv_error": "quota_exceeded"}));
    assert!((16..18).contains(&at), "refused at value {at}");
    // Deleting frees room.
    assert_eq!(
        kv(&mut a, json!({"do": "kv_del", "key": "fill/00"})).await,
        json!({"kv": "ok"})
    );
    assert_eq!(
        kv(&mut a, json!({"do": "kv_big", "key": "fill/zz", "bytes": 60_000})).await,
        json!({"kv": "ok"})
    );
    // Two rooms of the game write the same key: each sees the other's
    // write once it is made, the last write wins.
    for i in 0..20 {
        let (w, r) = if i % 2 == 0 { (&mut a, "a") } else { (&mut b, "b") };
        assert_eq!(
            kv(w, json!({"do": "kv_set", "key": "shared", "value": format!("{r}{i}")})).await,
            json!({"kv": "ok"})
        );
    }
    assert_eq!(
        kv(&mut a, json!({"do": "kv_get", "key": "shared"})).await,
        json!({"kv": "b19"})
    );
    let listed = kv(
        &mut b,
        json!({"do": "kv_list", "prefix": "fill/", "after": "fill/10", "limit": 3}),
    )
    .await;
    assert_eq!(listed, json!({"kv": ["fill/11", "fill/12", "fill/13"]}));

    host.kill();
    let host = host.restart();
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "c", "c").await;
    assert_eq!(
        kv(&mut c, json!({"do": "kv_get", "key": "shared"})).await,
        json!({"kv": "b19"})
    );
    let all = kv(&mut c, json!({"do": "kv_list", "prefix": "fill/", "limit": 1000})).await;
    let keys = all["kv"].as_array().expect("keys");
    assert!(
        keys.contains(&json!("fill/zz")) && !keys.contains(&json!("fill/00")),
        "{all}"
    );
}

#[tokio::test]
async fn a_damaged_or_newer_database_stops_the_start_naming_the_file() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        ..Default::default()
    });
    // Some rooms, so the database has pages to tear.
    for i in 0..20 {
        let mut c = host.client(Transport::Tcp).await;
        c.join("faulty", &format!("t{i}"), "t").await;
        c.message(json!({"do": "kv_big", "key": format!("k{i}"), "bytes": 4000}))
            .await;
        c.event().await;
    }
    let db = host.state_dir().join("respawn.db");
    let mut host = host;
    host.kill();
    // Torn (cut short, as by a disk that lost its last writes): refused,
    // untouched.
    // (The WAL copied into the file first, so the cut takes real pages.)
    rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())))
        .expect("checkpoint");
    let whole = std::fs::read(&db).expect("database");
    assert!(whole.len() >= 64 << 10, "{} bytes", whole.len());
    std::fs::write(&db, &whole[..whole.len() / 2]).expect("tear");
    let (err, log) = host.try_restart().err().expect("a torn database must stop the start");
    assert!(log.contains("is damaged") && log.contains("respawn.db"), "{err}\n{log}");
    assert_eq!(
        std::fs::read(&db).expect("still there").len(),
        whole.len() / 2,
        "left as it was"
    );
    std::fs::write(&db, &whole).expect("mend");
    // From a newer host: refused, untouched.
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("version");
    }
    let (err, log) = host.try_restart().err().expect("a newer schema must stop the start");
    assert!(
        log.contains("schema version 99") && log.contains("respawn.db"),
        "{err}\n{log}"
    );
    // Damaged: refused, untouched.
    let garbage = vec![0x5a; 16 << 10];
    std::fs::write(&db, &garbage).expect("damage");
    let _ = std::fs::remove_file(db.with_extension("db-wal"));
    let (err, log) = host
        .try_restart()
        .err()
        .expect("a damaged database must stop the start");
    assert!(log.contains("is damaged") && log.contains("respawn.db"), "{err}\n{log}");
    assert_eq!(std::fs::read(&db).expect("still there"), garbage, "left as it was");
}

/// A small tmpfs mounted for one test (root only), unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("mount point");
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }

    fn path(&self) -> &std::path::Path {
        self.0.path()
    }

    fn remount_read_only(&self) {
        let ok = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(self.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount read-only");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

/// Fills the file system under `dir` to the last byte.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    for _ in 0..64 {
        let _ = f.write_all(&[0u8; 512]);
    }
    let _ = f.sync_all();
    path
}

#[tokio::test]
async fn a_full_disk_refuses_inputs_with_storage_unavailable_and_loses_nothing_acknowledged() {
    let Some(disk) = Tmpfs::mount("32m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let config = format!(
        "[state]\ndir = {:?}\ncode_cache = false\n[storage]\ndurability = \"strict\"",
        disk.path().join("state")
    );
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: &config,
        ..Default::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "full", "f").await;
    c.send(json!({"type": "message", "data": {"do": "add", "n": 5}, "ref": 1}))
        .await;
    assert_eq!(c.event().await["count"], 5);
    c.expect("ack").await;

    let filler = fill(disk.path());
    // The commit of this one fails: it waits, unanswered...
    c.send(json!({"type": "message", "data": {"do": "add", "n": 1}, "ref": 2}))
        .await;
    host.wait_until("the host sees its storage failing", |h| {
        h.runtime()["storage"]["healthy"] == false
    })
    .await;
    assert_eq!(host.runtime()["storage"]["durability"], "strict");
    // ...and from now on inputs are refused.
    c.send(json!({"type": "message", "data": {"do": "get"}, "ref": 3}))
        .await;
    let refused = c.expect_error("storage_unavailable").await;
    assert_eq!(refused["ref"], 3);
    // The host serves everyone else meanwhile.
    let mut other = host.client(Transport::Ws).await;
    other.ping().await;
    c.ping().await;

    // Room again: what waited goes out, in order.
    std::fs::remove_file(&filler).expect("free the disk");
    let late = c.recv().await;
    assert_eq!(late["data"]["count"], 6, "{late}");
    let ack = c.expect("ack").await;
    assert_eq!(ack["ref"], 2);
    host.kill();

    // Acknowledged, so it survives a kill.
    let host = host.restart();
    let mut back = host.client(Transport::Tcp).await;
    back.join("faulty", "full", "b").await;
    assert_eq!(count_of(&mut back).await, 6);

    // A read-only disk stops the start with the database's path.
    let mut host = host;
    host.kill();
    disk.remount_read_only();
    let (err, log) = host
        .try_restart()
        .err()
        .expect("a read-only database must stop the start");
    assert!(
        log.contains("respawn.db") && log.contains("cannot be written"),
        "{err}\n{log}"
    );
}

#[tokio::test]
async fn the_rust_client_carries_on_across_a_host_crash_without_rejoining() {
    // Fixed ports, so the restarted host is where the client reconnects.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config =
        format!("[net]\ntcp = \"127.0.0.1:{port}\"\nresume_grace_ms = 60000\n[storage]\ndurability = \"strict\"");
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: &config,
        ..Default::default()
    });
    let mut c = host.reconnecting_client(Transport::Tcp).await;
    c.join("faulty", "crash", "bot").await.expect("join");
    let player = c.player();
    c.send(json!({"type": "message", "data": {"do": "add", "n": 5}}))
        .await
        .expect("send");
    assert_eq!(c.recv().await.expect("count")["data"]["count"], 5);
    host.kill();
    let host = host.restart();
    // The client notices the dead connection, reconnects to the restarted
    // host and resumes its seat.
    let reconnected = tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .expect("the client reconnects")
        .expect("reconnected");
    assert_eq!(reconnected["resumed"], true, "{reconnected}");
    assert_eq!(reconnected["lost"], 0, "{reconnected}");
    c.send(json!({"type": "message", "data": {"do": "add", "n": 1}}))
        .await
        .expect("send after the crash");
    let next = tokio::time::timeout(Duration::from_secs(20), c.recv())
        .await
        .expect("an answer")
        .expect("count");
    assert_eq!(next["data"]["count"], 6, "{next}");
    assert_eq!(c.player(), player, "the same player, in the same seat");
    drop(host);
}

#[tokio::test]
async fn a_room_swapped_to_a_new_version_comes_back_on_it_after_a_crash() {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[storage]\ndurability = \"strict\"",
        ..Default::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "swap", "s").await;
    c.message(json!({"do": "add", "n": 3})).await;
    assert_eq!(c.event().await["count"], 3);
    // 1.1.0 counts in tens.
    host.drop_module(
        "faulty-1.1.0.wasm",
        &respawn_e2e::signed("faulty-v2", "faulty", "1.1.0"),
    );
    assert_eq!(c.expect("swapped").await["version"], "1.1.0");
    c.message(json!({"do": "count"})).await;
    assert_eq!(c.event().await["count"], 13);
    host.kill();
    let host = host.restart();
    let mut back = host.client(Transport::Tcp).await;
    back.join("faulty", "swap", "b").await;
    assert_eq!(count_of(&mut back).await, 13, "the state 1.1.0 made");
    back.message(json!({"do": "count"})).await;
    assert_eq!(back.event().await["count"], 23, "still on 1.1.0");
}

#[tokio::test]
async fn off_keeps_rooms_across_graceful_restarts_only() {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[storage]\ndurability = \"off\"",
        ..Default::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "kept", "k").await;
    c.message(json!({"do": "add", "n": 5})).await;
    assert_eq!(c.event().await["count"], 5);
    for round in 0..2 {
        let (ok, out) = host.terminate();
        assert!(ok, "graceful stop {round}: {out:?}\n{}", host.log());
        host = host.restart();
        let mut back = host.client(Transport::Tcp).await;
        back.join("faulty", "kept", "b").await;
        assert_eq!(count_of(&mut back).await, 5, "after graceful restart {round}");
    }
    // A crash loses it, once the recovery's removal of the stopped
    // state is on disk (until then a crash brings back the state of the
    // last graceful stop once more).
    host.wait_until("the recovered room is forgotten on disk", |h| {
        h.runtime()["storage"]["durable"].as_u64() >= Some(1)
    })
    .await;
    host.kill();
    let host = host.restart();
    let mut back = host.client(Transport::Tcp).await;
    back.join("faulty", "kept", "b").await;
    assert_eq!(
        count_of(&mut back).await,
        0,
        "off: a crash loses the room\n{}",
        host.log()
    );
}

#[tokio::test]
async fn rooms_recovered_on_their_version_move_to_one_promoted_while_the_host_was_down() {
    let mut host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[storage]\ndurability = \"strict\"",
        ..Default::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "behind", "b").await;
    c.message(json!({"do": "add", "n": 3})).await;
    assert_eq!(c.event().await["count"], 3);
    host.kill();
    // 1.1.0 (counts in tens) lands while the host is down.
    std::fs::write(
        host.modules_dir().join("faulty-1.1.0.wasm"),
        respawn_e2e::signed("faulty-v2", "faulty", "1.1.0"),
    )
    .expect("module");
    let host = host.restart();
    assert!(
        host.log().contains("recovered rooms moved to the active version"),
        "{}",
        host.log()
    );
    let mut back = host.client(Transport::Tcp).await;
    let joined = back.join("faulty", "behind", "b2").await;
    assert_eq!(joined["version"], "1.1.0");
    assert_eq!(count_of(&mut back).await, 3, "the state came along");
    back.message(json!({"do": "count"})).await;
    assert_eq!(back.event().await["count"], 13);
}
