//! `respawn top`: a live table of games, versions, rooms, players,
//! frames/s, call p50/p99, faults and restarts, redrawn like `top`; `--once`
//! prints one table (two readings `interval` apart) for scripts.

use super::AdminClient;
use crate::modules::version_health::{p50_of, p99_of};
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

/// Polls `/debug/top` every `interval` and redraws; with `once`, prints
/// one table and returns.
pub fn top(client: &AdminClient, interval: Duration, once: bool) -> anyhow::Result<()> {
    let mut before = client.get("/debug/top")?;
    loop {
        std::thread::sleep(interval);
        let now = client.get("/debug/top")?;
        let table = render(&before, &now);
        if once {
            print!("{table}");
            return Ok(());
        }
        // Clear the screen and go home, as `top` does.
        print!("\x1b[2J\x1b[H{table}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        before = now;
    }
}

/// One table from two readings of `/debug/top`.
pub fn render(before: &Value, now: &Value) -> String {
    let secs = (now["at_ms"].as_u64().unwrap_or(0))
        .saturating_sub(before["at_ms"].as_u64().unwrap_or(0))
        .max(1) as f64
        / 1000.0;
    let earlier: HashMap<(String, String), &Value> = versions(before).map(|(g, v)| ((g, version(v)), v)).collect();
    let frames_before: HashMap<String, u64> = games(before)
        .map(|g| (name(g), g["frames"].as_u64().unwrap_or(0)))
        .collect();
    let mut rows = Vec::new();
    for g in games(now) {
        let game = name(g);
        let frames = g["frames"].as_u64().unwrap_or(0);
        let rate = frames.saturating_sub(frames_before.get(&game).copied().unwrap_or(0)) as f64 / secs;
        for (i, v) in g["versions"].as_array().into_iter().flatten().enumerate() {
            let ver = version(v);
            let old = earlier.get(&(game.clone(), ver.clone()));
            let delta = |field: &str| {
                v[field]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(old.and_then(|o| o[field].as_u64()).unwrap_or(0))
            };
            let old_buckets = old.map(|o| buckets(o)).unwrap_or_default();
            let window: Vec<u64> = buckets(v)
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(old_buckets.get(i).copied().unwrap_or(0)))
                .collect();
            let marker = if v["active"] == true { "*" } else { "" };
            rows.push(vec![
                if i == 0 { game.clone() } else { String::new() },
                format!("{ver}{marker}"),
                v["rooms"].as_u64().unwrap_or(0).to_string(),
                v["players"].as_u64().unwrap_or(0).to_string(),
                if i == 0 { format!("{rate:.0}") } else { String::new() },
                latency(p50_of(&window)),
                latency(p99_of(&window, 1)),
                delta("faults").to_string(),
                delta("restarts").to_string(),
            ]);
        }
    }
    let mut out = super::table(
        &[
            "GAME", "VERSION", "ROOMS", "PLAYERS", "FRAMES/S", "CALL p50", "CALL p99", "FAULTS", "RESTARTS",
        ],
        &rows,
        2,
    );
    let _ = writeln!(
        out,
        "(* active; frames/s per game, call times and faults over the last {secs:.1} s)"
    );
    if let Some(nodes) = now["nodes"].as_array() {
        let fleet: Vec<String> = nodes
            .iter()
            .map(|n| {
                let state = if n["alive"] == true { "up" } else { "DEAD" };
                let this = if n["this"] == true { "*" } else { "" };
                let rooms = n["rooms"].as_u64().unwrap_or(0);
                format!("{}{this} {state} {rooms} rooms", n["node"].as_str().unwrap_or("?"))
            })
            .collect();
        let _ = writeln!(out, "fleet: {}", fleet.join(" · "));
    }
    out
}

fn games(v: &Value) -> impl Iterator<Item = &Value> {
    v["games"].as_array().into_iter().flatten()
}

fn versions(v: &Value) -> impl Iterator<Item = (String, &Value)> {
    games(v).flat_map(|g| {
        g["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |ver| (name(g), ver))
    })
}

fn name(g: &Value) -> String {
    g["game"].as_str().unwrap_or("?").to_owned()
}

fn version(v: &Value) -> String {
    v["version"].as_str().unwrap_or("?").to_owned()
}

fn buckets(v: &Value) -> Vec<u64> {
    v["latency_buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n.as_u64().unwrap_or(0))
        .collect()
}

/// "≤ 128 µs", or "-" when nothing was timed.
fn latency(d: Option<Duration>) -> String {
    match d {
        None => "-".into(),
        Some(d) if d < Duration::from_millis(1) => format!("<{}us", d.as_micros()),
        Some(d) => format!("<{}ms", d.as_millis()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Two readings a second apart: rates and windowed percentiles come
    /// from their difference, not from the totals.
    #[test]
    fn rates_and_percentiles_come_from_the_window() {
        let reading = |at: u64, frames: u64, faults: u64, buckets: Vec<u64>| {
            json!({"at_ms": at, "games": [{"game": "chat", "frames": frames, "versions": [
                {"version": "1.0.0", "active": true, "rooms": 3, "players": 30,
                 "calls": 0, "faults": faults, "restarts": faults, "crashes": 0,
                 "latency_buckets": buckets}]}]})
        };
        // Before: 1000 slow calls (bucket 10: < 2 ms). In the window: 100
        // fast ones (bucket 4: < 32 us).
        let mut slow = vec![0; 20];
        slow[10] = 1000;
        let mut then = slow.clone();
        then[4] = 100;
        let table = render(&reading(1_000, 5_000, 2, slow), &reading(2_000, 7_000, 3, then));
        let row = table.lines().nth(1).unwrap();
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols,
            ["chat", "1.0.0*", "3", "30", "2000", "<32us", "<32us", "1", "1"],
            "{table}"
        );
    }
}
