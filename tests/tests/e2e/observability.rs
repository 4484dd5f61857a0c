//! Issue 15: Prometheus metrics (checked by `promtool` and scraped by a
//! real Prometheus server), pprof-style profiles, the Tokio and room
//! views, room operations, `respawn top`, JSON logs with spans, and crash
//! events to a stand-in for Sentry's ingest API.

use pprof::protos::Message;
use respawn_e2e::{Client, Host, HostOptions, Transport};
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// GET on the admin API with the token: (status, body bytes).
fn fetch(host: &Host, path: &str) -> (u16, Vec<u8>) {
    fetch_as(host, path, Some(&token(host)))
}

fn fetch_as(host: &Host, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let mut req = agent.get(format!("{}{path}", host.admin_url()));
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req.call().expect("admin API");
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()
        .expect("body");
    (status, body)
}

fn token(host: &Host) -> String {
    std::fs::read_to_string(host.state_dir().join("admin.token"))
        .expect("token")
        .trim()
        .to_owned()
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

/// A player in a chat room saying something every 25 ms until `stop` is
/// set, reading everything the room sends; answers how much it said.
fn chatter(
    host: &Host,
    room: &str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    let addr = host.addr(Transport::Tcp);
    let room = room.to_owned();
    tokio::spawn(async move {
        let mut c = Client::tcp(addr).await;
        c.expect("welcome").await;
        c.join("chat", &room, "talker").await;
        let mut said = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            c.send(json!({"type": "message", "data": {"say": "hello"}})).await;
            while c.recv().await["type"] != "event" {}
            said += 1;
            // 40 a second: well under the connection's rate limit.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        said
    })
}

#[tokio::test]
async fn prometheus_scrapes_a_host_under_traffic() {
    let host = Host::start_with(HostOptions {
        games: &["chat"],
        ..HostOptions::default()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let talk = chatter(&host, "metrics", stop.clone());

    // The exposition is clean by Prometheus' own linter.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, text) = fetch(&host, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(text).expect("UTF-8");
    for family in [
        "respawn_connections{transport=\"tcp\"} 1",
        "respawn_frames_sent_total{transport=\"tcp\"}",
        "respawn_guest_call_duration_seconds_bucket{export=\"on-message\",game=\"chat\"",
        "respawn_rooms{game=\"chat\",version=\"1.0.0\"} 1",
        "respawn_joins_total{game=\"chat\"} 1",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
    ] {
        assert!(text.contains(family), "{family} missing from:\n{text}");
    }
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's `prometheus` package; `just test-deps` installs it)");
    std::io::Write::write_all(&mut lint.stdin.take().expect("stdin"), text.as_bytes()).expect("promtool stdin");
    let out = lint.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scrapes it every second with the token as its
    // bearer credential (the README's scrape config).
    let dir = tempfile::tempdir().expect("dir");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let admin = host.admin_url();
    let target = admin.trim_start_matches("http://");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: respawn\n    \
         authorization:\n      credentials_file: {token}\n    static_configs:\n      - targets: ['{target}']\n",
        token = host.state_dir().join("admin.token").display()
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("prometheus (Debian's `prometheus` package)");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = prometheus.stderr.take();
    let _prometheus = Kill(prometheus);
    let query = |q: &str| -> Option<f64> {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent
            .get(format!("http://127.0.0.1:{port}/api/v1/query"))
            .query("query", q)
            .call()
            .ok()?;
        let v: Value = r.body_mut().read_json().ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    // Traffic goes on until Prometheus has the answers (or 60 s).
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut rate, mut p99) = (None, None);
    while Instant::now() < deadline {
        rate = query("sum(rate(respawn_frames_sent_total[5s]))").filter(|r| *r > 0.0);
        p99 = query(
            "histogram_quantile(0.99, sum by (le) (rate(respawn_guest_call_duration_seconds_bucket{game=\"chat\"}[5s])))",
        )
        .filter(|q| *q > 0.0);
        if rate.is_some() && p99.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let said = talk.await.expect("chatter");
    let (Some(rate), Some(p99)) = (rate, p99) else {
        let mut log = String::new();
        if let Some(mut e) = stderr {
            let _ = e.read_to_string(&mut log);
        }
        panic!("Prometheus never had the answers (rate {rate:?}, p99 {p99:?}); its log:\n{log}");
    };
    // One talker: at most one message and one frame back every 25 ms, and
    // some frames every second; a chat message's call takes well under
    // the 100 ms call deadline.
    assert!(
        rate > 1.0 && rate < 1000.0,
        "frames/s {rate} (the client said {said} things)"
    );
    assert!(p99 < 0.1, "p99 of on-message {p99} s");
}

/// A faulty room ticking every 10 ms, each tick spinning the guest for a
/// few milliseconds: CPU for the profilers to find.
async fn busy_room(host: &Host, room: &str) -> Client {
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", room, "spinner").await;
    c.send(json!({"type": "message", "data": {"do": "tick", "ms": 10, "spin": 3}}))
        .await;
    c
}

#[tokio::test]
async fn profiles_decode_and_name_the_code_that_ran() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        ..HostOptions::default()
    });
    let _busy = busy_room(&host, "busy").await;

    // The host's CPU profile, in pprof's format, and two at once: one
    // is refused (one profiler at a time), whichever came second.
    let ask = |secs: u64| {
        let (url, token) = (host.admin_url(), token(&host));
        std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
            let mut r = agent
                .get(format!("{url}/debug/pprof/profile?seconds={secs}"))
                .header("Authorization", format!("Bearer {token}"))
                .call()
                .expect("profile");
            let status = r.status().as_u16();
            (
                status,
                r.body_mut().with_config().limit(1 << 30).read_to_vec().expect("body"),
            )
        })
    };
    let (first, second) = (ask(2), ask(2));
    let answers = [first.join().expect("profile"), second.join().expect("profile")];
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert!(statuses.contains(&200) && statuses.contains(&409), "{statuses:?}");
    let (_, refused) = answers.iter().find(|(s, _)| *s == 409).expect("the refusal");
    assert_eq!(json_of(refused)["error"], "profile_running");
    let (_, body) = answers.iter().find(|(s, _)| *s == 200).expect("the profile");
    let profile = pprof::protos::Profile::decode(body.as_slice()).expect("a pprof protobuf");
    assert!(!profile.sample.is_empty(), "no samples");
    assert!(
        profile.string_table.iter().any(|s| s.contains("respawn")),
        "the host's functions are named"
    );
    let (status, svg) = fetch(&host, "/debug/pprof/profile?seconds=1&format=svg");
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&svg).contains("<svg"), "a flame graph");

    // The heap, sampled by jemalloc, gzipped pprof.
    let (status, body) = fetch(&host, "/debug/pprof/heap");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(body.as_slice())
        .read_to_end(&mut raw)
        .expect("gzip");
    let heap = pprof::protos::Profile::decode(raw.as_slice()).expect("a pprof protobuf");
    assert!(!heap.sample.is_empty(), "no heap samples");
    assert!(
        heap.sample_type.iter().any(|t| heap
            .string_table
            .get(t.ty as usize)
            .is_some_and(|s| s.contains("space"))),
        "in-use space"
    );
    // Each profile drops the symbol tables it was named with (hundreds of
    // MB kept otherwise): the next one parses them again and still names
    // the host's functions.
    for _ in 0..2 {
        let (status, body) = fetch(&host, "/debug/pprof/heap");
        assert_eq!(status, 200);
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(body.as_slice())
            .read_to_end(&mut raw)
            .expect("gzip");
        let heap = pprof::protos::Profile::decode(raw.as_slice()).expect("a pprof protobuf");
        assert!(
            heap.string_table.iter().any(|s| s.contains("respawn::")),
            "the host's functions are named after the symbol tables were dropped"
        );
    }

    // One room's guest code, in the Firefox profiler's format, naming
    // the game's functions.
    let (status, body) = fetch(&host, "/debug/rooms/faulty/busy/profile?seconds=1");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let guest = json_of(&body);
    let thread = &guest["threads"][0];
    assert!(thread["samples"]["length"].as_u64().unwrap_or(0) > 10, "{thread:#}");
    assert!(
        thread["stringArray"]
            .as_array()
            .expect("strings")
            .iter()
            .any(|s| s.as_str().unwrap_or("").contains("on_tick")),
        "the game's tick function is named"
    );

    // Tokio's figures.
    let (status, body) = fetch(&host, "/debug/runtime");
    assert_eq!(status, 200);
    let rt = json_of(&body);
    assert!(rt["workers"].as_u64().unwrap_or(0) >= 1, "{rt}");
    assert!(rt["alive_tasks"].as_u64().unwrap_or(0) >= 1, "{rt}");
    assert!(
        rt["per_worker"][0]["busy_seconds"].as_f64().unwrap_or(0.0) > 0.0,
        "{rt}"
    );

    // Bad requests: out of range, unknown rooms, no token.
    for (path, code, error) in [
        ("/debug/pprof/profile?seconds=0", 400, "bad_seconds"),
        ("/debug/pprof/profile?seconds=61", 400, "bad_seconds"),
        ("/debug/pprof/profile?format=png", 400, "bad_format"),
        ("/debug/rooms/faulty/busy/profile?seconds=999", 400, "bad_seconds"),
        ("/debug/rooms/faulty/nowhere", 404, "unknown_room"),
        ("/debug/rooms/nogame/busy", 404, "unknown_game"),
        ("/debug/rooms/nogame/busy/profile", 404, "unknown_game"),
    ] {
        let (status, body) = fetch(&host, path);
        assert_eq!(status, code, "{path}");
        assert_eq!(json_of(&body)["error"], error, "{path}");
    }
    for path in ["/metrics", "/debug/runtime", "/debug/pprof/heap", "/debug/rooms"] {
        let (status, body) = fetch_as(&host, path, None);
        assert_eq!(status, 401, "{path}");
        assert_eq!(json_of(&body)["error"], "unauthorized", "{path}: nothing else");
    }
}

/// Reads frames until one of `kind` arrives.
async fn until(c: &mut Client, kind: &str) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == kind {
            return f;
        }
    }
}

#[tokio::test]
async fn operators_see_a_room_and_kick_speak_and_close() {
    let host = Host::start_with(HostOptions {
        games: &["chat"],
        ..HostOptions::default()
    });
    let mut a = host.client(Transport::Tcp).await;
    let joined = a.join("chat", "ops", "alice").await;
    let alice = joined["player"].as_u64().expect("id");
    let mut b = host.client(Transport::Ws).await;
    let bob = b.join("chat", "ops", "bob").await["player"].as_u64().expect("id");
    a.send(json!({"type": "message", "data": {"say": "hi"}})).await;
    while until(&mut b, "event").await["data"]["text"] != "hi" {}

    // The room as the test set it up.
    let (status, body) = fetch(&host, "/debug/rooms/chat/ops");
    assert_eq!(status, 200);
    let view = json_of(&body);
    assert_eq!(view["version"], "1.0.0");
    let ids: Vec<u64> = view["players"]
        .as_array()
        .expect("players")
        .iter()
        .map(|p| p["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [alice.min(bob), alice.max(bob)]);
    assert_eq!(view["players"][usize::from(alice > bob)]["name"], "alice");
    // Two joins and a message, each a guest call.
    assert_eq!(view["calls"], 3, "{view:#}");
    assert_eq!(view["faults"], 0);
    assert!(view["memory_bytes"].as_u64().unwrap_or(0) > 0);
    assert!(view["last_input_ms"].as_u64().unwrap_or(0) >= view["opened_ms"].as_u64().unwrap_or(u64::MAX));
    let (_, body) = fetch(&host, "/debug/rooms?game=chat");
    let list = json_of(&body);
    assert_eq!(list["rooms"].as_array().map(Vec::len), Some(1), "{list}");

    // The CLI shows the same.
    let (ok, out, err) = host.cli(&["rooms"]);
    assert!(ok, "{err}");
    assert!(out.contains("ops") && out.contains("1.0.0"), "{out}");
    let (ok, out, err) = host.cli(&["room", "chat", "ops"]);
    assert!(ok, "{err}");
    assert!(out.contains("alice") && out.contains("bob"), "{out}");
    let (ok, out, err) = host.cli(&["top", "--once", "--interval", "300ms"]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("chat"))
        .unwrap_or_else(|| panic!("{out}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[..4], ["chat", "1.0.0*", "1", "2"], "{out}");

    // A system message reaches both.
    let (ok, out, err) = host.cli(&["say", "chat", "ops", "restart in 5 minutes"]);
    assert!(ok, "{err}");
    assert!(out.contains("told 2 players"), "{out}");
    for c in [&mut a, &mut b] {
        assert_eq!(until(c, "system").await["message"], "restart in 5 minutes");
    }

    // A kick: bob is told why and is out; unknown players and rooms are
    // clear errors.
    let (ok, _, err) = host.cli(&["kick", "chat", "ops", &bob.to_string(), "--reason", "spam"]);
    assert!(ok, "{err}");
    assert_eq!(until(&mut b, "kicked").await["reason"], "spam");
    let (_, body) = fetch(&host, "/debug/rooms/chat/ops");
    assert_eq!(json_of(&body)["players"].as_array().map(Vec::len), Some(1));
    let (ok, _, err) = host.cli(&["kick", "chat", "ops", "999999", "--reason", "x"]);
    assert!(!ok && err.contains("unknown_player"), "{err}");
    let (ok, _, err) = host.cli(&["say", "chat", "nowhere", "hello"]);
    assert!(!ok && err.contains("unknown_room"), "{err}");
    let (ok, _, err) = host.cli(&["say", "chat", "ops", " "]);
    assert!(!ok && err.contains("bad_request"), "{err}");

    // Close: alice is told why; the room is gone; a new join starts a
    // fresh one.
    let (ok, out, err) = host.cli(&["close", "chat", "ops", "--reason", "maintenance"]);
    assert!(ok, "{err}");
    assert!(out.contains("1 players told"), "{out}");
    let closed = until(&mut a, "closed").await;
    assert_eq!(closed["reason"], "maintenance");
    assert!(closed["seq"].as_u64().is_some(), "a numbered room frame: {closed}");
    let (status, _) = fetch(&host, "/debug/rooms/chat/ops");
    assert_eq!(status, 404);
    // Still connected; joining again starts a fresh room (one call: this
    // join), with the old room's history gone.
    a.join("chat", "ops", "alice").await;
    let (_, body) = fetch(&host, "/debug/rooms/chat/ops");
    let fresh = json_of(&body);
    assert_eq!(
        (fresh["calls"].as_u64(), fresh["players"].as_array().map(Vec::len)),
        (Some(1), Some(1))
    );
    let welcome = until(&mut a, "event").await;
    assert_eq!(welcome["data"]["history"], json!([]), "{welcome}");

    // Each operation is audited, with the room and the player.
    assert_eq!(
        host.wait_for_audit("room_say", None).await["detail"],
        "restart in 5 minutes"
    );
    let kick = host.wait_for_audit("room_kick", None).await;
    assert_eq!(
        (kick["room"].as_str(), kick["player"].as_u64()),
        (Some("ops"), Some(bob))
    );
    assert_eq!(host.wait_for_audit("room_close", None).await["detail"], "maintenance");
}

#[tokio::test]
async fn json_logs_carry_the_room_and_connection_spans() {
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: "[observability]\nlog_format = \"json\"\n",
        env: vec![("RUST_LOG".into(), "info,respawn::server=debug".into())],
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "logged", "p").await;
    c.send(json!({"type": "message", "data": {"do": "log", "text": "hello from the game"}}))
        .await;
    host.wait_until("the guest's log line", |h| h.log().contains("hello from the game"))
        .await;
    drop(c);
    host.wait_until("the disconnect", |h| h.log().contains("player disconnected"))
        .await;
    let lines: Vec<Value> = host
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(!lines.is_empty(), "JSON lines:\n{}", host.log());
    let guest = lines
        .iter()
        .find(|l| l["fields"]["message"] == "hello from the game")
        .expect("the guest's line");
    assert_eq!(guest["target"], "guest");
    assert_eq!(guest["span"]["name"], "room", "{guest}");
    assert_eq!(guest["span"]["game"], "faulty");
    assert_eq!(guest["span"]["room"], "logged");
    assert_eq!(guest["span"]["version"], "1.0.0");
    let conn = lines
        .iter()
        .find(|l| l["fields"]["message"] == "player disconnected")
        .expect("the connection's line");
    assert_eq!(conn["span"]["name"], "conn", "{conn}");
    assert_eq!(conn["span"]["transport"], "tcp");
    assert!(conn["span"]["player"].as_u64().is_some(), "{conn}");
    assert!(
        conn["span"]["peer"].as_str().unwrap_or("").starts_with("127.0.0.1:"),
        "{conn}"
    );
}

#[tokio::test]
async fn a_crash_report_is_also_a_sentry_event() {
    let (port, events) = respawn_e2e::http_sink();
    let host = Host::start_with(HostOptions {
        games: &["faulty"],
        config: &format!(
            "[supervision]\nmax_restarts = 0\n[observability.sentry]\ndsn = \"http://abc123@127.0.0.1:{port}/7\"\n\
             environment = \"test\"\n"
        ),
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("faulty", "doomed", "p").await;
    c.send(json!({"type": "message", "data": {"do": "count"}})).await;
    c.recv().await;
    c.send(json!({"type": "message", "data": {"do": "panic"}})).await;
    until(&mut c, "error").await;

    // The envelope: a header line, an item header, the event.
    let (path, body) = events
        .recv_timeout(Duration::from_secs(20))
        .expect("an event reached the stand-in");
    assert_eq!(path, "/api/7/envelope/");
    let text = String::from_utf8(body).expect("UTF-8");
    let event: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("exception").is_some())
        .unwrap_or_else(|| panic!("no event in {text}"));
    assert_eq!(event["release"], "faulty@1.0.0", "{event:#}");
    assert_eq!(event["environment"], "test");
    assert_eq!(event["level"], "fatal");
    let tags = &event["tags"];
    assert_eq!(
        (&tags["game"], &tags["room"], &tags["version"], &tags["kind"]),
        (&json!("faulty"), &json!("doomed"), &json!("1.0.0"), &json!("trap")),
        "{event:#}"
    );
    let exception = &event["exception"]["values"][0];
    let frames = exception["stacktrace"]["frames"].as_array().expect("frames");
    assert!(
        frames
            .iter()
            .any(|f| f["function"].as_str().unwrap_or("").contains("on_message")),
        "the wasm backtrace's functions: {exception:#}"
    );
    let crumbs = event["breadcrumbs"]["values"].as_array().expect("breadcrumbs");
    let categories: Vec<&str> = crumbs.iter().filter_map(|b| b["category"].as_str()).collect();
    assert!(categories.contains(&"input.join"), "{crumbs:?}");
    assert!(
        crumbs
            .iter()
            .any(|b| b["message"].as_str().unwrap_or("").contains("panic")),
        "the failing input is the last breadcrumb: {crumbs:?}"
    );
}

#[tokio::test]
async fn with_metrics_and_spans_off_the_message_path_counts_nothing() {
    let host = Host::start_with(HostOptions {
        games: &["chat"],
        config: "[observability]\nmetrics = false\nspans = false\nheap_profiling = false\n",
        ..HostOptions::default()
    });
    let mut c = host.client(Transport::Tcp).await;
    c.join("chat", "dark", "p").await;
    c.send(json!({"type": "message", "data": {"say": "hi"}})).await;
    while until(&mut c, "event").await["data"]["text"] != "hi" {}
    let (status, text) = fetch(&host, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(text).expect("UTF-8");
    // Nothing counted on the way, what is read at scrape time still there.
    assert!(!text.contains("respawn_frames_sent_total{"), "{text}");
    assert!(
        text.contains("respawn_guest_call_duration_seconds_count{export=\"on-message\",game=\"chat\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("respawn_rooms{game=\"chat\",version=\"1.0.0\"} 1"),
        "{text}"
    );
    assert!(text.contains("respawn_joins_total{game=\"chat\"} 1"), "{text}");
    // No spans: the room's lines carry no `room{...}` prefix.
    let opened = host
        .log()
        .lines()
        .find(|l| l.contains("room opened"))
        .map(str::to_owned)
        .expect("the room's line");
    assert!(!opened.contains("room{"), "{opened}");
    // The heap profile says it is off.
    let (status, body) = fetch(&host, "/debug/pprof/heap");
    assert_eq!(status, 409);
    assert_eq!(json_of(&body)["error"], "heap_profiling_off");
}
