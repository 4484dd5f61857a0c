//! Issue 4: health endpoints, graceful shutdown on SIGTERM, systemd
//! notifications; issue 7: the demo site is served.

use respawn_e2e::{Client, Host, HostOptions, Transport};
use serde_json::json;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

#[tokio::test]
async fn liveness_and_readiness_need_no_token_and_say_why() {
    let host = Host::start();
    assert_eq!(host.probe("/healthz"), (200, json!({"status": "ok"})));
    assert_eq!(host.probe("/readyz"), (200, json!({"status": "ready"})));
    // The operator API still needs the token.
    assert_eq!(host.probe("/status").0, 401);

    let empty = Host::start_with(HostOptions {
        games: &[],
        ..HostOptions::default()
    });
    let (code, body) = empty.probe("/readyz");
    assert_eq!(code, 503);
    assert_eq!(body["reasons"], json!(["no_games_loaded"]));
}

#[tokio::test]
async fn sigterm_tells_players_saves_rooms_and_exits_cleanly() {
    let mut host = Host::start();
    let mut seated = Client::tcp(host.tcp).await;
    let seated_token = seated.expect("welcome").await["resume"].as_str().unwrap().to_owned();
    seated.join("faulty", "saved", "t").await;
    seated
        .send(json!({"type": "message", "data": {"do": "add", "n": 42}, "ref": 1}))
        .await;
    assert_eq!(seated.event().await["count"], 42);
    seated.expect("ack").await;
    let mut lobby = host.client(Transport::Ws).await;

    let (ok, stdout) = host.terminate();
    assert!(ok, "exit status; stdout: {stdout:?}\n{}", host.log());
    assert!(
        stdout.iter().any(|l| l == "stopped rooms_saved=1 connections_left=0"),
        "{stdout:?}"
    );
    for c in [&mut seated, &mut lobby] {
        let bye = c.expect("shutdown").await;
        assert!(bye["message"].as_str().unwrap().contains("shutting down"), "{bye}");
        assert!(c.try_recv().await.is_none(), "closed after the goodbye");
    }

    // The database says which version wrote the room's last checkpoint.
    let db = rusqlite::Connection::open(host.state_dir().join("respawn.db")).expect("database");
    let version: String = db
        .query_row(
            "SELECT version FROM checkpoints WHERE game = 'faulty' AND room = 'saved'",
            [],
            |r| r.get(0),
        )
        .expect("a saved checkpoint");
    assert_eq!(version, "1.0.0");
    drop(db);

    // The room is back after a restart, before anyone joins, and the
    // player's seat waits for a resume.
    let token = seated_token;
    let host = host.restart();
    assert!(
        host.log().contains("rooms recovered from the database"),
        "{}",
        host.log()
    );
    let mut back = host.client(Transport::Tcp).await;
    back.send(json!({"type": "resume", "token": token, "last_seq": 2}))
        .await;
    let resumed = back.expect("resumed").await;
    assert_eq!(
        (resumed["lost"].as_u64(), resumed["replayed"].as_u64()),
        (Some(0), Some(0)),
        "{resumed}"
    );
    back.send(json!({"type": "message", "data": {"do": "get"}})).await;
    assert_eq!(back.event().await["count"], 42);
}

#[tokio::test]
async fn systemd_hears_ready_watchdog_pings_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut host = Host::start_with(HostOptions {
        env: vec![
            ("NOTIFY_SOCKET".into(), path.display().to_string()),
            ("WATCHDOG_USEC".into(), "100000".into()),
        ],
        ..HostOptions::default()
    });
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while messages.iter().filter(|m: &&String| m.contains("WATCHDOG=1")).count() < 3 {
        let n = socket.recv(&mut buf).expect("a notification");
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert!(messages[0].contains("READY=1"), "{messages:?}");
    let (ok, _) = host.terminate();
    assert!(ok);
    let stopping = std::iter::from_fn(|| {
        let n = socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
    .any(|m| m.contains("STOPPING=1"));
    assert!(stopping, "{messages:?}");
}

#[tokio::test]
async fn the_demo_site_and_the_js_client_are_served() {
    let host = Host::start();
    let web = host.web.expect("the demo site listens");
    let get = |path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(web).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    };
    let index = get("/");
    assert!(index.starts_with("HTTP/1.1 200"), "{index}");
    assert!(index.contains("text/html"));
    let client = get("/respawn.js");
    assert!(
        client.contains("text/javascript") && client.contains("RespawnClient"),
        "{client}"
    );
    let config = get("/config.json");
    let body: serde_json::Value = serde_json::from_str(config.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["ws_port"], host.ws.port());
    assert!(
        body["games"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "tictactoe" && g["version"] == "1.0.0")
    );
}
