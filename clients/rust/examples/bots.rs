//! A small load generator: chat bots on a running host, each saying a line
//! at a steady rate and timing the round trip to its own echo. Connection
//! drops are survived with the client's reconnect policy.
//!
//! `cargo run --release -p respawn-client --example bots -- [tcp|ws] ADDR BOTS SECS RATE`
//! (defaults: tcp 127.0.0.1:7701 50 10 5; `just load` runs it).

use respawn_client::{Client, Endpoint, Options};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.to_owned());
    let kind = arg(0, "tcp");
    let addr = arg(
        1,
        if kind == "ws" {
            "127.0.0.1:7700"
        } else {
            "127.0.0.1:7701"
        },
    );
    let number = |i: usize, default: &str| -> u64 {
        arg(i, default).parse().unwrap_or_else(|_| {
            eprintln!("argument {} must be a number", i + 1);
            std::process::exit(2)
        })
    };
    let (bots, secs, rate) = (number(2, "50"), number(3, "10"), number(4, "5").max(1));
    let endpoint = match kind.as_str() {
        "ws" => Endpoint::Ws(format!("ws://{addr}/")),
        _ => match addr.parse() {
            Ok(a) => Endpoint::Tcp(a),
            Err(e) => {
                eprintln!("`{addr}` is not an address: {e}");
                std::process::exit(2)
            }
        },
    };
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..bots)
        .map(|i| tokio::spawn(bot(endpoint.clone(), i, until, Duration::from_millis(1000 / rate))))
        .collect();
    let mut rtts = Vec::new();
    let (mut failed, mut reconnects) = (0, 0);
    for t in tasks {
        match t.await {
            Ok(Ok((r, n))) => {
                rtts.extend(r);
                reconnects += n;
            }
            Ok(Err(e)) => {
                failed += 1;
                eprintln!("a bot stopped: {e}");
            }
            Err(e) => eprintln!("a bot panicked: {e}"),
        }
    }
    rtts.sort();
    let pct = |p: f64| rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)));
    println!(
        "{bots} bots, {secs} s, {} lines ({:.0}/s), round trip p50 {:?} p99 {:?} max {:?}, {reconnects} reconnects, {failed} bots failed",
        rtts.len(),
        rtts.len() as f64 / secs.max(1) as f64,
        pct(0.5).copied().unwrap_or_default(),
        pct(0.99).copied().unwrap_or_default(),
        rtts.last().copied().unwrap_or_default(),
    );
}

async fn bot(
    endpoint: Endpoint,
    i: u64,
    until: Instant,
    every: Duration,
) -> Result<(Vec<Duration>, u64), respawn_client::ClientError> {
    let mut c = Client::connect(endpoint, Options::default()).await?;
    c.join("chat", &format!("load-{}", i / 10), &format!("bot{i}")).await?;
    let mut rtts = Vec::new();
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let line = format!("bot{i} line {n}");
        let sent = Instant::now();
        c.send(json!({"type": "message", "data": {"say": line}})).await?;
        loop {
            let f = c.recv().await?;
            if f["type"] == "event" && f["data"]["text"] == line.as_str() {
                rtts.push(sent.elapsed());
                break;
            }
        }
        tokio::time::sleep(every.saturating_sub(sent.elapsed())).await;
    }
    let (reconnects, _) = c.reconnects();
    c.close().await;
    Ok((rtts, reconnects))
}
