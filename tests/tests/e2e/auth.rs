//! Player authentication: signed join tickets, the identity the game
//! sees, one seat per user, bans, per-user and per-address limits, and TLS
//! on the player listeners.

use base64::Engine;
use jsonwebtoken::Algorithm;
use respawn_e2e::{Client, Host, HostOptions, auth_config, claims, fixtures, sign_ticket, ticket, unix_secs};
use serde_json::{Value, json};
use std::time::Duration;

fn host(extra_auth: &str, config: &str) -> Host {
    Host::start_with(HostOptions {
        games: &["echo", "chat"],
        config: &format!("{config}\n{}", auth_config(extra_auth)),
        ..Default::default()
    })
}

fn with(mut c: Value, patch: Value) -> Value {
    for (k, v) in patch.as_object().expect("object") {
        if v.is_null() {
            c.as_object_mut().expect("object").remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    c
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn every_bad_ticket_is_refused_with_its_own_code_and_the_connection_stays_usable() {
    let h = host("", "");
    let good = claims("user-7", "Ann");
    let valid = ticket(&good);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(with(good.clone(), json!({"sub": "admin"})).to_string().as_bytes()),
        parts[2]
    );
    let none = format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]);
    let huge_header = format!(
        "{}.{}.{}",
        b64(format!(r#"{{"alg":"EdDSA","x":"{}"}}"#, "a".repeat(6000)).as_bytes()),
        parts[1],
        parts[2]
    );
    let cases: Vec<(String, &str)> = vec![
        (
            ticket(&with(good.clone(), json!({"exp": unix_secs() - 600}))),
            "ticket_expired",
        ),
        (
            ticket(&with(good.clone(), json!({"nbf": unix_secs() + 600}))),
            "ticket_not_yet_valid",
        ),
        (
            ticket(&with(good.clone(), json!({"iss": "elsewhere"}))),
            "ticket_wrong_issuer",
        ),
        (
            ticket(&with(good.clone(), json!({"aud": "another-app"}))),
            "ticket_wrong_audience",
        ),
        (
            sign_ticket(&good, Algorithm::EdDSA, "ed-1", "other-ed25519.key"),
            "ticket_bad_signature",
        ),
        (tampered, "ticket_bad_signature"),
        (none, "ticket_algorithm"),
        (
            sign_ticket(&good, Algorithm::EdDSA, "who", "ed25519.key"),
            "ticket_unknown_key",
        ),
        (
            ticket(&with(good.clone(), json!({"games": ["tictactoe"]}))),
            "ticket_not_allowed",
        ),
        (
            ticket(&with(good.clone(), json!({"rooms": ["vip"]}))),
            "ticket_not_allowed",
        ),
        ("not-a-ticket".into(), "ticket_invalid"),
        ("a.b".into(), "ticket_invalid"),
        ("!!!.@@@.###".into(), "ticket_invalid"),
        (huge_header, "ticket_invalid"),
        ("x".repeat(20_000), "ticket_invalid"),
    ];
    for transport in [respawn_e2e::Transport::Ws, respawn_e2e::Transport::Tcp] {
        let mut c = h.client(transport).await;
        // No ticket on a host that requires one.
        c.send(json!({"type": "join", "game": "chat", "room": "r", "name": "ann", "ref": 1}))
            .await;
        assert_eq!(c.expect_error("ticket_required").await["ref"], 1);
        for (t, code) in &cases {
            c.send(json!({"type": "join", "game": "chat", "room": "r", "ticket": t, "ref": code}))
                .await;
            let e = c.expect_error(code).await;
            assert_eq!(e["ref"], *code, "{e}");
        }
        // Still usable: a ping, then a join with a good ticket.
        c.ping().await;
        let joined = c.join_with("chat", "r", &valid).await;
        assert_eq!(joined["type"], "joined", "{joined}");
        assert_eq!(
            (joined["user"].as_str(), joined["name"].as_str()),
            (Some("user-7"), Some("Ann"))
        );
        // The game sees the verified user and the claim the config passes.
        let welcome = c.event_of("welcome").await;
        assert_eq!(welcome["you"], json!({"user": "user-7", "claims": {"tier": "gold"}}));
        c.send(json!({"type": "leave"})).await;
        c.expect("left").await;
    }
    // Tickets from the JWKS (RS256, ES256) pass too.
    for (alg, kid, file) in [
        (Algorithm::RS256, "rsa-1", "rsa.key"),
        (Algorithm::ES256, "ec-1", "es256.key"),
    ] {
        let mut c = h.client(respawn_e2e::Transport::Ws).await;
        let joined = c
            .join_with("echo", "jwks", &sign_ticket(&claims(kid, "Bo"), alg, kid, file))
            .await;
        assert_eq!(joined["user"], kid, "{joined}");
    }
}

#[tokio::test]
async fn without_required_tickets_a_join_may_still_carry_one_and_it_is_checked() {
    let h = Host::start_with(HostOptions {
        games: &["chat"],
        config: &auth_config("").replace("required = true", "required = false"),
        ..Default::default()
    });
    let mut c = h.client(respawn_e2e::Transport::Ws).await;
    let open = c.join("chat", "a", "guest").await;
    assert!(open.get("user").is_none(), "{open}");
    assert_eq!(c.event_of("welcome").await["you"], Value::Null);
    c.send(json!({"type": "leave"})).await;
    c.expect("left").await;
    c.send(json!({"type": "join", "game": "chat", "room": "a", "ticket": ticket(&with(claims("u", "U"), json!({"exp": 1})))}))
        .await;
    c.expect_error("ticket_expired").await;
    assert!(
        h.log().contains("auth.required is off"),
        "the open door is said out loud"
    );
}

#[tokio::test]
async fn one_seat_per_user_a_second_connection_takes_the_seat_over() {
    let h = host("", "");
    let t = ticket(&claims("user-1", "Ann"));
    let mut first = h.client(respawn_e2e::Transport::Ws).await;
    let joined = first.join_with("chat", "room", &t).await;
    let player = joined["player"].as_u64().expect("player");
    first.event_of("welcome").await;
    first.message(json!({"say": "before"})).await;
    first.event_of("said").await;
    // The same user from another connection (another transport, even).
    let mut second = h.client(respawn_e2e::Transport::Tcp).await;
    second
        .send(json!({"type": "join", "game": "chat", "room": "room", "ticket": t, "ref": "j"}))
        .await;
    let answer = second.recv().await;
    assert_eq!(answer["type"], "resumed", "{answer}");
    assert_eq!((answer["player"].as_u64(), &answer["ref"]), (Some(player), &json!("j")));
    assert_eq!(answer["user"], "user-1", "{answer}");
    // The new connection has seen nothing of the room: it gets what the
    // seat kept, the game's welcome and the line said before.
    let replayed: Vec<Value> = {
        let mut frames = Vec::new();
        for _ in 0..answer["replayed"].as_u64().expect("replayed") {
            frames.push(second.event().await);
        }
        frames
    };
    assert_eq!(
        replayed.first().map(|f| &f["type"]),
        Some(&json!("welcome")),
        "{replayed:?}"
    );
    assert_eq!(
        replayed.last().map(|f| &f["text"]),
        Some(&json!("before")),
        "{replayed:?}"
    );
    first.expect_error("superseded").await;
    // Still one member: a line goes to the one seat, and the room's roster
    // has one Ann.
    second.message(json!({"say": "after"})).await;
    assert_eq!(second.event_of("said").await["text"], "after");
    let mut other = h.client(respawn_e2e::Transport::Ws).await;
    other.join_with("chat", "room", &ticket(&claims("user-2", "Bob"))).await;
    let roster = other.event_of("welcome").await["members"].clone();
    assert_eq!(roster, json!([{"id": player, "name": "Ann"}]), "one seat for user-1");
    // The same user may sit in another room.
    let mut third = h.client(respawn_e2e::Transport::Ws).await;
    assert_eq!(third.join_with("chat", "elsewhere", &t).await["type"], "joined");
}

#[tokio::test]
async fn a_ban_kicks_refuses_is_audited_and_survives_a_restart() {
    let h = host("", "");
    let t = ticket(&claims("troll", "Troll"));
    // Joined, dropped, resumed on a new connection: the seat keeps its
    // user, so the ban finds it.
    let mut first = Client::ws(h.ws).await;
    let token = first.expect("welcome").await["resume"]
        .as_str()
        .expect("token")
        .to_owned();
    first.join_with("chat", "r2", &t).await;
    first.event_of("welcome").await;
    drop(first);
    let mut c = h.client(respawn_e2e::Transport::Ws).await;
    c.send(json!({"type": "resume", "token": token})).await;
    assert_eq!(c.recv().await["type"], "resumed");
    let (ok, out, err) = h.cli(&["ban", "troll", "--reason", "spamming the lobby", "--for", "1h"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("troll: banned until"), "{out}");
    let kicked = c.expect("kicked").await;
    assert!(
        kicked["reason"].as_str().unwrap_or("").contains("spamming the lobby"),
        "{kicked}"
    );
    c.send(json!({"type": "join", "game": "chat", "room": "r2", "ticket": t}))
        .await;
    let e = c.expect_error("banned").await;
    assert!(e["message"].as_str().unwrap_or("").contains("spamming"), "{e}");
    let audit = h.wait_for_audit("ban", Some("spamming the lobby")).await;
    assert_eq!(audit["user"], "troll");
    assert!(
        audit["until_ms"].as_u64().is_some_and(|u| u > unix_secs() * 1000),
        "{audit}"
    );
    let (_, list, _) = h.cli(&["bans"]);
    assert!(list.contains("troll") && list.contains("spamming the lobby"), "{list}");
    // Another user is not affected.
    let mut other = h.client(respawn_e2e::Transport::Ws).await;
    assert_eq!(
        other.join_with("chat", "r2", &ticket(&claims("nice", "Nice"))).await["type"],
        "joined"
    );
    drop((c, other));
    // The ban is in the database: a restarted host still refuses.
    let h = h.restart();
    let mut c = h.client(respawn_e2e::Transport::Ws).await;
    c.send(json!({"type": "join", "game": "chat", "room": "r3", "ticket": t}))
        .await;
    c.expect_error("banned").await;
    let (ok, out, err) = h.cli(&["unban", "troll"]);
    assert!(ok && out.contains("ban lifted"), "{out}{err}");
    assert_eq!(c.join_with("chat", "r3", &t).await["type"], "joined");
    h.wait_for_audit("unban", None).await;
    // Bad input to the ban command: a clear error, nothing banned.
    let (ok, _, err) = h.cli(&["ban", "x", "--reason", "r", "--for", "5 weeks"]);
    assert!(!ok && err.contains("5 weeks"), "{err}");
}

#[tokio::test]
async fn a_parked_seat_of_a_banned_user_is_removed_too() {
    let h = host("", "[net]\nresume_grace_ms = 30000");
    let t = ticket(&claims("gone", "Gone"));
    let mut c = Client::ws(h.ws).await;
    let token = c.expect("welcome").await["resume"].as_str().expect("token").to_owned();
    c.join_with("chat", "r", &t).await;
    c.event_of("welcome").await;
    let mut watcher = h.client(respawn_e2e::Transport::Ws).await;
    watcher.join_with("chat", "r", &ticket(&claims("watcher", "W"))).await;
    watcher.event_of("welcome").await;
    drop(c);
    let (ok, out, err) = h.cli(&["ban", "gone", "--reason", "cheating"]);
    assert!(ok && out.contains("with no end"), "{out}{err}");
    // The room removes the parked seat's player at once, not after the
    // grace period.
    let left = watcher.event_of("left").await;
    assert_eq!(left["name"], "Gone");
    // Resuming the seat is refused as a join would be.
    let mut back = h.client(respawn_e2e::Transport::Ws).await;
    back.send(json!({"type": "resume", "token": token})).await;
    back.expect_error("banned").await;
    back.ping().await;
}

#[tokio::test]
async fn a_takeover_finds_the_seat_in_the_room_asked_for_and_clients_do_not_fight_over_it() {
    let h = host("", "");
    let t = ticket(&claims("roamer", "Roamer"));
    // One connection: lobby, then a match; its player id stays the same.
    let mut a = h.client(respawn_e2e::Transport::Ws).await;
    a.join_with("chat", "lobby", &t).await;
    a.send(json!({"type": "leave"})).await;
    while a.recv().await["type"] != "left" {}
    let in_match = a.join_with("chat", "match-1", &t).await;
    assert_eq!(in_match["type"], "joined");
    // Another connection of the user joining the lobby gets a new seat
    // there; joining the match takes the match seat.
    let mut b = h.client(respawn_e2e::Transport::Ws).await;
    assert_eq!(b.join_with("chat", "lobby", &t).await["type"], "joined");
    let mut c = h.client(respawn_e2e::Transport::Ws).await;
    let took = c.join_with("chat", "match-1", &t).await;
    assert_eq!(
        (took["type"].as_str(), took["room"].as_str()),
        (Some("resumed"), Some("match-1")),
        "{took}"
    );
    assert_eq!(took["player"], in_match["player"]);
    // Two Rust clients of one user: the one that lost the seat does not
    // take it back.
    let options = || respawn_client::Options {
        backoff: respawn_client::Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        ticket: Some(respawn_client::Ticket::Fixed(ticket(&claims("twin", "Twin")))),
        ..Default::default()
    };
    let endpoint = || respawn_client::Endpoint::Ws(format!("ws://{}/", h.ws));
    let mut first = respawn_client::Client::connect(endpoint(), options())
        .await
        .expect("connect");
    first.join("echo", "twins", "x").await.expect("join");
    let mut second = respawn_client::Client::connect(endpoint(), options())
        .await
        .expect("connect");
    assert_eq!(
        second.join("echo", "twins", "x").await.expect("join")["type"],
        "resumed"
    );
    assert_eq!(first.recv().await.expect("superseded")["code"], "superseded");
    let again = first.recv().await.expect("reconnected");
    assert_eq!(again["resumed"], false, "{again}");
    for n in 0..3 {
        second
            .send(json!({"type": "message", "data": {"n": n}}))
            .await
            .expect("send");
        assert_eq!(
            second.recv().await.expect("echo")["data"]["n"],
            n,
            "the seat stayed with the second client"
        );
    }
}

#[tokio::test]
async fn join_and_message_limits_hold_per_user_across_connections_and_addresses_and_per_address() {
    let h = host(
        "user_joins_per_minute = 1\nuser_join_burst = 2\nuser_rate_per_sec = 1\nuser_rate_burst = 3",
        "[net]\naddress_join_burst = 4\naddress_joins_per_minute = 1\naddress_rate_burst = 6\naddress_rate_per_sec = 1",
    );
    let t = ticket(&claims("flood", "Flood"));
    // One account from three addresses: the third join is over its limit.
    let mut clients = Vec::new();
    for (i, source) in [[127, 0, 0, 2], [127, 0, 0, 3], [127, 0, 0, 4]].into_iter().enumerate() {
        let mut c = Client::tcp_from(h.tcp, source).await;
        c.expect("welcome").await;
        c.send(json!({"type": "join", "game": "echo", "room": format!("room{i}"), "ticket": t}))
            .await;
        let answer = c.recv().await;
        if i < 2 {
            assert_eq!(answer["type"], "joined", "{answer}");
        } else {
            assert_eq!(answer["code"], "too_many_joins", "{answer}");
        }
        clients.push(c);
    }
    // Messages: three in a burst over both seated connections, then the
    // account is over its rate whichever connection sends.
    let mut echoed = 0;
    let mut limited = 0;
    for n in 0..6 {
        let c = &mut clients[n % 2];
        c.message(json!({"n": n})).await;
        let answer = c.recv().await;
        match answer["type"].as_str() {
            Some("event") => echoed += 1,
            Some("error") if answer["code"] == "rate_limited" => {
                assert!(answer["message"].as_str().unwrap_or("").contains("account"), "{answer}");
                limited += 1
            }
            _ => panic!("{answer}"),
        }
    }
    assert_eq!(
        (echoed, limited),
        (3, 3),
        "the account's burst is shared by its connections"
    );
    // Per address: without tickets, joins from one address meet its limit
    // whichever connection makes them (4 in a burst; 127.0.0.5 is fresh).
    let mut answers = Vec::new();
    for i in 0..5 {
        let mut c = Client::tcp_from(h.tcp, [127, 0, 0, 5]).await;
        c.expect("welcome").await;
        c.send(json!({"type": "join", "game": "echo", "room": format!("a{i}"), "ticket": ticket(&claims(&format!("u{i}"), "U"))})).await;
        answers.push(c.recv().await["type"].as_str().unwrap_or("").to_owned());
        if answers.last().map(String::as_str) == Some("error") {
            break;
        }
    }
    assert_eq!(answers, ["joined", "joined", "joined", "joined", "error"]);
    // Frames per address: two connections from a fresh address share its
    // burst of 6, whoever sends.
    let mut pair = [
        Client::tcp_from(h.tcp, [127, 0, 0, 6]).await,
        Client::tcp_from(h.tcp, [127, 0, 0, 6]).await,
    ];
    for c in &mut pair {
        c.expect("welcome").await;
    }
    for n in 0..6 {
        pair[n % 2].ping().await;
    }
    pair[0].send(json!({"type": "ping"})).await;
    let e = pair[0].expect_error("rate_limited").await;
    assert!(e["message"].as_str().unwrap_or("").contains("address"), "{e}");
}

#[tokio::test]
async fn the_rust_client_fetches_a_fresh_ticket_for_every_join() {
    let h = host("", "[net]\nresume_grace_ms = 0");
    let fetched = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = fetched.clone();
    let options = respawn_client::Options {
        backoff: respawn_client::Backoff {
            base: Duration::from_millis(20),
            max: Duration::from_millis(100),
        },
        ticket: Some(respawn_client::Ticket::Fetch(std::sync::Arc::new(move || {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(ticket(&claims("rusty", &format!("Rusty{n}")))) })
        }))),
        ..Default::default()
    };
    let mut c = respawn_client::Client::connect(respawn_client::Endpoint::Ws(format!("ws://{}/", h.ws)), options)
        .await
        .expect("connect");
    let joined = c.join("chat", "r", "ignored").await.expect("join");
    assert_eq!(
        (joined["user"].as_str(), joined["name"].as_str()),
        (Some("rusty"), Some("Rusty0"))
    );
    // With no grace period the seat is gone after a drop: the client joins
    // again, with a ticket fetched again.
    c.drop_connection().await;
    let reconnected = c.recv().await.expect("reconnect");
    assert_eq!(reconnected["resumed"], false, "{reconnected}");
    let rejoined = c.recv().await.expect("joined");
    assert_eq!(
        (rejoined["user"].as_str(), rejoined["name"].as_str()),
        (Some("rusty"), Some("Rusty1"))
    );
    assert_eq!(fetched.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn bad_auth_and_tls_files_stop_the_start_naming_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let bad_jwks = dir.path().join("broken-jwks.json");
    std::fs::write(&bad_jwks, "{\"keys\": [{\"kty\": \"RSA\"").expect("write");
    let tls = fixtures().join("tls");
    let cases = [
        (
            format!("[auth]\nrequired = true\njwks_file = {bad_jwks:?}"),
            "broken-jwks.json",
        ),
        ("[auth]\nrequired = true".to_owned(), "no key can sign"),
        (
            format!(
                "[tls]\ncert = {:?}\nkey = {:?}",
                tls.join("cert.pem"),
                tls.join("key2.pem")
            ),
            "does not match",
        ),
        (
            format!(
                "[tls]\ncert = {:?}\nkey = {:?}",
                tls.join("README.md"),
                tls.join("key.pem")
            ),
            "README.md",
        ),
    ];
    for (config, expect) in cases {
        let failed = Host::try_start(HostOptions {
            games: &["echo"],
            config: &config,
            ..Default::default()
        });
        match failed {
            Ok(_) => panic!("started with {config}"),
            Err((msg, log)) => assert!(log.contains(expect) || msg.contains(expect), "{expect}: {msg}\n{log}"),
        }
    }
}

/// The certificate a TLS server presents now.
async fn presented(addr: std::net::SocketAddr, roots: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut store = tokio_rustls::rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(roots) {
        store.add(cert.expect("cert")).expect("root");
    }
    let provider = std::sync::Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(store)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("handshake");
    tls.get_ref().1.peer_certificates().expect("certificate")[0].to_vec()
}

fn der(pem_file: &std::path::Path) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_file(pem_file)
        .expect("cert")
        .to_vec()
}

#[tokio::test]
async fn tls_on_websocket_and_tcp_with_tickets_and_a_certificate_rotated_while_connected() {
    let certs = tempfile::tempdir().expect("dir");
    let src = fixtures().join("tls");
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(src.join(f), certs.path().join(f)).expect("copy");
    }
    let h = host(
        "",
        &format!(
            "[tls]\ncert = {:?}\nkey = {:?}",
            certs.path().join("cert.pem"),
            certs.path().join("key.pem")
        ),
    );
    let roots = std::fs::read(src.join("ca.pem")).expect("test CA");
    let tls = respawn_client::Tls::with_roots_pem(&roots, "localhost").expect("roots");
    let connect = |endpoint: respawn_client::Endpoint, user: &'static str| {
        let tls = tls.clone();
        async move {
            let options = respawn_client::Options {
                tls: Some(tls),
                ticket: Some(respawn_client::Ticket::Fixed(ticket(&claims(user, user)))),
                ..Default::default()
            };
            respawn_client::Client::connect(endpoint, options)
                .await
                .expect("TLS connect")
        }
    };
    let mut ws = connect(
        respawn_client::Endpoint::Ws(format!("wss://localhost:{}/", h.ws.port())),
        "ws-user",
    )
    .await;
    let mut tcp = connect(respawn_client::Endpoint::Tcp(h.tcp), "tcp-user").await;
    for (c, user) in [(&mut ws, "ws-user"), (&mut tcp, "tcp-user")] {
        assert_eq!(c.join("echo", "secure", "x").await.expect("join")["user"], user);
        c.send(json!({"type": "message", "data": {"over": "tls"}}))
            .await
            .expect("send");
        assert_eq!(c.recv().await.expect("echo")["data"], json!({"over": "tls"}));
    }
    // A plain client on a TLS port gets nowhere.
    let plain = tokio_tungstenite::connect_async(format!("ws://{}/", h.ws));
    assert!(
        tokio::time::timeout(Duration::from_secs(5), plain)
            .await
            .map_or(true, |r| r.is_err()),
        "a plain WebSocket handshake on the TLS port must fail"
    );
    assert_eq!(presented(h.ws, &roots).await, der(&src.join("cert.pem")));
    // Rotate: the renewal replaces both files.
    for (from, to) in [("key2.pem", "key.pem"), ("cert2.pem", "cert.pem")] {
        let tmp = certs.path().join(format!(".{to}.new"));
        std::fs::copy(src.join(from), &tmp).expect("copy");
        std::fs::rename(&tmp, certs.path().join(to)).expect("rename");
    }
    let want = der(&src.join("cert2.pem"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (on_ws, on_tcp) = (presented(h.ws, &roots).await, presented(h.tcp, &roots).await);
        if on_ws == want && on_tcp == want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.log().contains("TLS certificate reloaded"));
    // The connections made before the rotation carry on.
    for c in [&mut ws, &mut tcp] {
        c.send(json!({"type": "message", "data": {"after": "rotation"}}))
            .await
            .expect("send");
        assert_eq!(c.recv().await.expect("echo")["data"], json!({"after": "rotation"}));
        assert_eq!(c.reconnects(), (0, 0), "no reconnect was needed");
    }
    // A rotation to a key that does not match keeps the certificate in use.
    std::fs::copy(src.join("key.pem"), certs.path().join("key.pem")).expect("copy");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(presented(h.ws, &roots).await, want);
    assert!(h.log().contains("cannot be used; the one before stays"), "{}", h.log());
}

#[tokio::test]
async fn ticket_keys_are_reloaded_when_their_files_change() {
    let keys = tempfile::tempdir().expect("dir");
    let full: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("auth/jwks.json")).expect("jwks")).expect("jwks JSON");
    let jwks = keys.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [full["keys"][0].clone()]}).to_string()).expect("write");
    let h = Host::start_with(HostOptions {
        games: &["echo"],
        config: &format!(
            "[auth]\nrequired = true\nissuer = \"accounts\"\naudience = \"respawn\"\njwks_file = {jwks:?}"
        ),
        ..Default::default()
    });
    let ec = sign_ticket(&claims("ec-user", "Ec"), Algorithm::ES256, "ec-1", "es256.key");
    let mut c = h.client(respawn_e2e::Transport::Ws).await;
    c.send(json!({"type": "join", "game": "echo", "room": "k", "ticket": ec}))
        .await;
    c.expect_error("ticket_unknown_key").await;
    // The account service adds a key: the file is replaced, the host
    // takes it without a restart.
    let tmp = keys.path().join(".jwks.json.new");
    std::fs::write(&tmp, full.to_string()).expect("write");
    std::fs::rename(&tmp, &jwks).expect("rename");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        c.send(json!({"type": "join", "game": "echo", "room": "k", "ticket": ec}))
            .await;
        let answer = c.recv().await;
        if answer["type"] == "joined" {
            break;
        }
        assert_eq!(answer["code"], "ticket_unknown_key", "{answer}");
        assert!(tokio::time::Instant::now() < deadline, "the new key was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(h.log().contains("join ticket keys reloaded"));
    // A file that no longer parses keeps the keys in use.
    std::fs::write(&jwks, "{\"keys\": [").expect("write");
    let mut waited = 0;
    while !h.log().contains("the keys before stay") {
        assert!(waited < 100, "a broken key file was not reported");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let mut d = h.client(respawn_e2e::Transport::Ws).await;
    let rsa = sign_ticket(&claims("rsa-user", "Rsa"), Algorithm::RS256, "rsa-1", "rsa.key");
    assert_eq!(d.join_with("echo", "k2", &rsa).await["type"], "joined");
}
