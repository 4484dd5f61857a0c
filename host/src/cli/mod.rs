//! The operator commands of the `respawn` binary: keys, signing,
//! inspection, and the admin API client.

use crate::admin::TOKEN_FILE;
use crate::config::Config;
use anyhow::{Context, bail};
use respawn_signing::{Manifest, SecretKey};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub mod new;
pub mod top;

/// `respawn keygen`: writes `<out>.key` (secret, mode 0600, wasmsign2
/// format) and `<out>.pub` (OpenSSH line).
pub fn keygen(out: &Path, comment: &str) -> anyhow::Result<()> {
    let key = SecretKey::generate()?;
    let secret = out.with_extension("key");
    let public = out.with_extension("pub");
    if secret.exists() {
        bail!("{} exists; not overwriting a key", secret.display());
    }
    if let Some(dir) = secret.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::util::write_private(&secret, &key.to_bytes()).with_context(|| format!("writing {}", secret.display()))?;
    std::fs::write(&public, format!("{}\n", key.public().to_openssh(comment)))?;
    println!("secret key: {}", secret.display());
    println!("public key: {} ({})", public.display(), key.public().fingerprint());
    Ok(())
}

/// What `respawn sign` is asked to write.
pub struct SignRequest<'a> {
    /// Core module or component.
    pub input: &'a Path,
    /// Secret key file.
    pub key: &'a Path,
    /// Game name.
    pub name: &'a str,
    /// Semantic version.
    pub version: &'a str,
    /// Author; defaults to the key's fingerprint.
    pub author: Option<&'a str>,
    /// Free text.
    pub notes: Option<&'a str>,
    /// Output file; defaults to the input.
    pub output: Option<&'a Path>,
}

/// `respawn sign`: componentizes a core module, embeds the manifest, signs.
pub fn sign(req: &SignRequest<'_>) -> anyhow::Result<()> {
    let bytes = std::fs::read(req.input).with_context(|| format!("reading {}", req.input.display()))?;
    let key_bytes = std::fs::read(req.key).with_context(|| format!("reading {}", req.key.display()))?;
    let key =
        SecretKey::from_bytes(&key_bytes).with_context(|| format!("{} is not a secret key", req.key.display()))?;
    let was_core = respawn_signing::kind(&bytes)? == respawn_signing::Kind::Module;
    let component = crate::modules::componentize::componentize(&bytes)?;
    let manifest = Manifest {
        name: req.name.to_owned(),
        version: req
            .version
            .parse()
            .with_context(|| format!("`{}` is not a semantic version", req.version))?,
        author: req.author.map_or_else(|| key.public().fingerprint(), str::to_owned),
        built_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        notes: req.notes.map(str::to_owned),
    };
    let signed = respawn_signing::sign(&respawn_signing::embed_manifest(&component, &manifest)?, &key)?;
    let output = req.output.unwrap_or(req.input);
    crate::util::write_atomic(output, &signed).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{}: {} {} signed by {}{}, {} bytes",
        output.display(),
        manifest.name,
        manifest.version,
        key.public().fingerprint(),
        if was_core {
            ", componentized from a core module"
        } else {
            ""
        },
        signed.len()
    );
    Ok(())
}

/// `respawn replay`: prints the report; returns the exit code.
pub fn replay(capsule: &Path, trust: &[PathBuf], module: Option<&Path>, json: bool) -> u8 {
    use crate::capsule::offline::{self, AtFailing, EXIT_REFUSED, Refused};
    let refused = |e: &dyn std::fmt::Display, code: &str| {
        if json {
            println!(
                "{}",
                json!({"verdict": "refused", "code": code, "error": e.to_string()})
            );
        } else {
            eprintln!("error: {e}");
        }
        EXIT_REFUSED
    };
    let keys = match crate::modules::trust::read_key_files(trust) {
        Ok(keys) => keys,
        Err(e) => return refused(&e, "trust"),
    };
    let trust = crate::modules::TrustStore::from_keys(keys);
    let result = offline::load(capsule).and_then(|c| {
        let candidate = match module {
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read(path).map_err(|e| Refused::Read {
                    path: path.display().to_string(),
                    why: e.to_string(),
                })?,
            )),
            None => None,
        };
        offline::replay(&c, &trust, candidate.as_ref().map(|(n, b)| (n.as_str(), b.clone())))
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return refused(&e, e.code()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
        return report.verdict.exit_code();
    }
    let f = &report.fault;
    println!(
        "capsule: {}/{} on version {}, {} inputs; {} on the last: {}",
        report.game, report.room, report.faulted_version, report.inputs, f.kind, f.message
    );
    println!("  signature: {}", f.signature);
    let run = &report.run;
    println!(
        "replayed on {} {} (signed by {}), {:.0} inputs/s",
        report.game,
        run.version,
        run.signer.as_deref().unwrap_or("nobody"),
        run.inputs_per_sec
    );
    let verdict = match report.verdict {
        offline::Verdict::Reproduced => "REPRODUCED: the same fault on the same input",
        offline::Verdict::NotReproduced => "NOT REPRODUCED",
        offline::Verdict::Diverged => {
            "DIVERGED: the replay did not produce what the room sent; this is a host bug, please report it with the capsule"
        }
        offline::Verdict::Fixed => "FIXED: this version takes every input",
        offline::Verdict::StillFaults => "STILL FAULTS",
    };
    println!("{verdict}");
    match &run.at_failing_input {
        AtFailing::Output { output } => println!("  at the failing input: {}", json!(output)),
        AtFailing::Fault { at, fault } => {
            println!(
                "  faulted on input {at}: {} {}\n  signature: {}",
                fault.kind, fault.message, fault.signature
            );
            if let Some(said) = &fault.said {
                println!("  the guest said: {said}");
            }
        }
        AtFailing::Setup { why } => println!("  could not start at the checkpoint: {why}"),
    }
    if let Some(d) = &run.first_difference {
        println!("  first difference at input {}: {}", d.index, json!(d.input));
        println!(
            "    the room:  {}",
            d.recorded.as_ref().map_or("(faulted)".into(), |o| json!(o).to_string())
        );
        println!(
            "    this run:  {}",
            d.produced.as_ref().map_or("(faulted)".into(), |o| json!(o).to_string())
        );
    }
    report.verdict.exit_code()
}

/// `respawn verify`: exits non-zero unless the host would load the file:
/// a trusted key signed it, it carries a Respawn manifest, and it compiles
/// as a component of the game world (the host's own checks, in its order).
/// With `signature_only`, just the first (for files that are not games).
pub fn verify(file: &Path, trust: &[PathBuf], signature_only: bool) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let keys = crate::modules::trust::read_key_files(trust)?;
    let refused =
        |code: &str, why: &dyn std::fmt::Display| anyhow::anyhow!("{}: REJECTED ({code}): {why}", file.display());
    if signature_only {
        let key = respawn_signing::verify(&bytes, &keys).map_err(|e| refused(e.code(), &e))?;
        let what = match respawn_signing::read_manifest(&bytes) {
            Ok(Some(m)) => format!("{} {} ", m.name, m.version),
            _ => String::new(),
        };
        println!(
            "{}: signature OK, {what}signed by {}",
            file.display(),
            key.fingerprint()
        );
        return Ok(());
    }
    let module = crate::modules::TrustStore::from_keys(keys)
        .verify(bytes, file)
        .map_err(|e| refused(e.code(), &e))?;
    let sandbox = crate::sandbox::Sandbox::new(&crate::config::SandboxConfig {
        pooling: false,
        ..Default::default()
    })?;
    sandbox.compile(&module).map_err(|e| refused(e.code(), &e))?;
    let m = module.manifest();
    println!(
        "{}: OK, {} {} signed by {}; the host would load it",
        file.display(),
        m.name,
        m.version,
        module.signer().unwrap_or("nobody")
    );
    Ok(())
}

/// `respawn inspect`: what a file is, without trusting it.
pub fn inspect(file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let kind = respawn_signing::kind(&bytes)?;
    let digest = crate::util::hex(&<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    let mut out = json!({
        "file": file.display().to_string(),
        "kind": format!("{kind:?}").to_lowercase(),
        "bytes": bytes.len(),
        "sha256": digest,
    });
    out["manifest"] = match respawn_signing::read_manifest(&bytes) {
        Ok(m) => serde_json::to_value(m)?,
        Err(e) => json!({"error": e.to_string()}),
    };
    out["signature"] = match respawn_signing::signature_info(&bytes) {
        Ok(Some(info)) => json!({
            "hash_sets": info.hash_sets.iter().map(|(h, s)| json!({"hashes": h, "signatures": s})).collect::<Vec<_>>(),
            "key_ids": info.key_ids.iter().map(|k| String::from_utf8_lossy(k).into_owned()).collect::<Vec<_>>(),
        }),
        Ok(None) => Value::Null,
        Err(e) => json!({"error": e.to_string()}),
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// A client of a running host's admin API.
pub struct AdminClient {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl AdminClient {
    /// Finds the API and its token from the host's config, unless given.
    pub fn new(config: &Config, url: Option<String>, token_file: Option<PathBuf>) -> anyhow::Result<Self> {
        let base = match url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => match config.admin.listen {
                Some(addr) => format!("http://{addr}"),
                None => bail!("the admin API is off in this config (admin.listen = \"off\")"),
            },
        };
        let token_file = token_file.unwrap_or_else(|| config.state.dir.join(TOKEN_FILE));
        let token = std::fs::read_to_string(&token_file)
            .with_context(|| {
                format!(
                    "reading the admin token {} (is the host running with this config?)",
                    token_file.display()
                )
            })?
            .trim()
            .to_owned();
        let agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Ok(Self { base, token, agent })
    }

    fn finish(&self, response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> anyhow::Result<Value> {
        let mut response = response.with_context(|| format!("cannot reach the host at {}", self.base))?;
        let ok = response.status().is_success();
        let body: Value = response.body_mut().read_json().context("the host sent no JSON")?;
        if !ok {
            let code = body["error"].as_str().unwrap_or("error");
            let message = body["message"].as_str().unwrap_or("");
            bail!("{code}: {message}");
        }
        Ok(body)
    }

    /// GET a path.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let r = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        self.finish(r)
    }

    /// GET a path's raw body (a profile), or the API's error.
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .call();
        let mut response = response.with_context(|| format!("cannot reach the host at {}", self.base))?;
        if !response.status().is_success() {
            return self.finish(Ok(response)).map(|_| Vec::new());
        }
        let body = response
            .body_mut()
            .with_config()
            .limit(1 << 30)
            .read_to_vec()
            .context("reading the answer")?;
        Ok(body)
    }

    /// POST JSON to a path.
    pub fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .send_json(body);
        self.finish(r)
    }
}

/// Prints `status` as a table.
pub fn print_status(status: &Value) {
    let games: Vec<&Value> = status["games"].as_array().into_iter().flatten().collect();
    let width = games
        .iter()
        .flat_map(|g| g["versions"].as_array().into_iter().flatten())
        .filter_map(|v| v["version"].as_str().map(str::len))
        .max()
        .unwrap_or(0)
        .max(7);
    println!(
        "{:<14} {:<width$} {:<7} {:<6} {:<10} SIGNER",
        "GAME", "VERSION", "ACTIVE", "ROOMS", "DIGEST"
    );
    for game in games {
        let name = game["name"].as_str().unwrap_or("?");
        let active = game["active"].as_str().unwrap_or("");
        let pinned = game["pinned"].as_bool().unwrap_or(false);
        for v in game["versions"].as_array().into_iter().flatten() {
            let version = v["version"].as_str().unwrap_or("?");
            let mark = match (version == active, pinned) {
                (true, true) => "pinned",
                (true, false) => "*",
                _ => "",
            };
            println!(
                "{:<14} {:<width$} {:<7} {:<6} {:<10} {}",
                name,
                version,
                mark,
                v["rooms"].as_u64().unwrap_or(0),
                v["digest"].as_str().unwrap_or("").get(..10).unwrap_or(""),
                v["signer"].as_str().unwrap_or("UNSIGNED"),
            );
            let gate = &v["gate"];
            let list = |k: &str| {
                gate[k]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                    .unwrap_or_default()
            };
            if !list("fixes").is_empty() {
                println!("{:<14} fixes crashes: {}", "", list("fixes"));
            }
            if !list("fails").is_empty() {
                let forced = if gate["forced"].as_bool() == Some(true) {
                    " (promoted with --force)"
                } else {
                    ""
                };
                println!("{:<14} still fails on: {}{forced}", "", list("fails"));
            }
        }
    }
    for game in status["games"].as_array().into_iter().flatten() {
        if let Some(c) = game["canary"].as_object() {
            println!(
                "{}: canary of {} on {}% of new rooms",
                game["name"].as_str().unwrap_or("?"),
                c["version"].as_str().unwrap_or("?"),
                c["percent"]
            );
        }
    }
    println!("rooms: {}", status["rooms"]);
    println!("counters: {}", status["counters"]);
    if let Some(nodes) = status["cluster"]["nodes"].as_array() {
        println!();
        println!(
            "{:<16} {:<6} {:<6} {:<9} {:<28} TCP",
            "NODE", "STATE", "ROOMS", "SEEN", "WEBSOCKET"
        );
        for n in nodes {
            let state = match n["alive"].as_bool() {
                Some(true) => "up",
                _ => "DEAD",
            };
            let this = if n["this"].as_bool() == Some(true) {
                " (this)"
            } else {
                ""
            };
            println!(
                "{:<16} {:<6} {:<6} {:<9} {:<28} {}",
                format!("{}{this}", n["node"].as_str().unwrap_or("?")),
                state,
                n["rooms"].as_u64().unwrap_or(0),
                format!("{} ms", n["seen_ms_ago"].as_u64().unwrap_or(0)),
                n["ws"].as_str().unwrap_or("-"),
                n["tcp"].as_str().unwrap_or("-"),
            );
        }
    }
}

/// Prints a shadow run's report.
pub fn print_shadow(report: &Value) {
    println!(
        "{} {} shadowed by {} for {:.0} s:",
        report["game"].as_str().unwrap_or("?"),
        report["active"].as_str().unwrap_or("?"),
        report["candidate"].as_str().unwrap_or("?"),
        report["secs"].as_f64().unwrap_or(0.0)
    );
    let rooms = report["rooms"].as_array().cloned().unwrap_or_default();
    if rooms.is_empty() {
        println!("  no live room runs the active version");
    }
    for r in rooms {
        let name = r["room"].as_str().unwrap_or("?");
        let inputs = r["inputs"].as_u64().unwrap_or(0);
        let behind = if r["fell_behind"].as_bool() == Some(true) {
            " (fell behind; stopped)"
        } else {
            ""
        };
        if let Some(why) = r["setup"].as_str() {
            println!("  {name}: could not start at the room's checkpoint: {why}");
        } else if let Some(f) = r["fault"].as_array() {
            println!("  {name}: FAULT on input {}: {}{behind}", f[0], f[1]["signature"]);
        } else if r["first_divergence"].is_object() {
            let d = &r["first_divergence"];
            println!(
                "  {name}: DIVERGES at input {} of {inputs}: {}{behind}",
                d["index"], d["input"]
            );
            println!(
                "    active:    {}",
                if d["active"].is_null() {
                    "(taken before the shadow started; digest differs)".into()
                } else {
                    d["active"].to_string()
                }
            );
            println!("    candidate: {}", d["candidate"]);
        } else {
            println!("  {name}: identical over {inputs} inputs{behind}");
        }
    }
}

/// `respawn connect`: stdin lines to the host's TCP port, its lines to
/// stdout (its heartbeat pings answered, not shown), until the host
/// closes; once stdin ends (a pipe), until the host has been quiet for a
/// second, so the answers to the last lines arrive.
pub async fn connect(addr: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    const QUIET: std::time::Duration = std::time::Duration::from_secs(1);
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr} (is the host running? `just run`)"))?;
    let (read, mut write) = stream.into_split();
    let mut from_host = BufReader::new(read).lines();
    let mut typed = BufReader::new(tokio::io::stdin()).lines();
    let mut out = tokio::io::stdout();
    let mut stdin_open = true;
    loop {
        let next = tokio::select! {
            line = from_host.next_line() => line?,
            line = typed.next_line(), if stdin_open => {
                match line? {
                    Some(line) => {
                        write.write_all(line.as_bytes()).await?;
                        write.write_all(b"\n").await?;
                    }
                    None => stdin_open = false,
                }
                continue;
            }
            () = tokio::time::sleep(QUIET), if !stdin_open => return Ok(()),
        };
        let Some(line) = next else { return Ok(()) };
        // The host's heartbeat is answered here, so a terminal left alone
        // is not closed as idle.
        if line == r#"{"type":"ping"}"# {
            write.write_all(b"{\"type\":\"pong\"}\n").await?;
            continue;
        }
        out.write_all(line.as_bytes()).await?;
        out.write_all(b"\n").await?;
        out.flush().await?;
    }
}

/// [`parse_duration`] in milliseconds, also taking `500ms`.
pub fn parse_duration_ms(text: &str) -> anyhow::Result<u64> {
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .parse::<u64>()
            .ok()
            .filter(|ms| *ms > 0)
            .with_context(|| format!("`{text}` is not a positive number of milliseconds")),
        None => parse_duration(text)?
            .checked_mul(1000)
            .with_context(|| format!("`{text}` is too long")),
    }
}

/// A length of time in seconds: `90` (seconds), `30s`, `30m`, `12h`, `7d`.
pub fn parse_duration(text: &str) -> anyhow::Result<u64> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("`{text}` is not a duration such as 30m, 12h or 7d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("`{text}`: the unit is s, m, h or d"),
    };
    n.checked_mul(scale)
        .filter(|s| *s > 0)
        .with_context(|| format!("`{text}` is not a positive duration within range"))
}

/// A time in ms since the Unix epoch, as UTC `YYYY-MM-DD HH:MM:SS`.
pub fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Prints `GET /bans` as a table.
pub fn print_bans(r: &Value) {
    let bans: Vec<&Value> = r["bans"].as_array().into_iter().flatten().collect();
    if bans.is_empty() {
        println!("no bans");
        return;
    }
    println!("{:<24} {:<24} REASON", "USER", "UNTIL");
    for b in bans {
        let until = b["until_ms"].as_u64().map_or_else(|| "-".to_owned(), format_time);
        println!(
            "{:<24} {:<24} {}",
            b["user"].as_str().unwrap_or("?"),
            until,
            b["reason"].as_str().unwrap_or("")
        );
    }
}

/// Lays `rows` out under `headers`, each column as wide as its widest
/// cell; the first `left` columns are aligned left, the rest right.
pub fn table(headers: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if i < left {
                out.push_str(&format!("{cell:<w$}"));
            } else {
                out.push_str(&format!("{cell:>w$}"));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// Prints `/debug/rooms` as a table.
pub fn print_rooms(r: &Value) {
    let rows: Vec<Vec<String>> = r["rooms"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|room| {
            vec![
                room["game"].as_str().unwrap_or("?").to_owned(),
                room["room"].as_str().unwrap_or("?").to_owned(),
                room["version"].as_str().unwrap_or("?").to_owned(),
                room["players"].as_array().map_or(0, Vec::len).to_string(),
                room["inbox"].to_string(),
                room["outbound_max"].to_string(),
                room["calls"].to_string(),
                room["faults"].to_string(),
                room["restarts"].to_string(),
                memory_of(room),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("(no live rooms)");
    } else {
        print!(
            "{}",
            table(
                &[
                    "GAME",
                    "ROOM",
                    "VERSION",
                    "PLAYERS",
                    "INBOX",
                    "QUEUE MAX",
                    "CALLS",
                    "FAULTS",
                    "RESTARTS",
                    "MEMORY"
                ],
                &rows,
                3
            )
        );
    }
    if r["unanswered"].as_u64().unwrap_or(0) > 0 {
        println!("({} rooms did not answer in time)", r["unanswered"]);
    }
}

/// Prints one room of `/debug/rooms/{game}/{room}`.
pub fn print_room(r: &Value) {
    println!(
        "{}/{} on {}",
        r["game"].as_str().unwrap_or("?"),
        r["room"].as_str().unwrap_or("?"),
        r["version"].as_str().unwrap_or("?")
    );
    println!(
        "  opened {}, last input {}",
        format_time(r["opened_ms"].as_u64().unwrap_or(0)),
        match r["last_input_ms"].as_u64() {
            Some(ms) if ms > 0 => format_time(ms),
            _ => "never".into(),
        }
    );
    println!(
        "  calls {}, faults {}, restarts {}, memory {}",
        r["calls"],
        r["faults"],
        r["restarts"],
        memory_of(r)
    );
    println!(
        "  inbox {}, journal {} inputs ({} bytes) since its checkpoint{}{}",
        r["inbox"],
        r["journal_entries"],
        r["journal_bytes"],
        r["tick_ms"]
            .as_u64()
            .map(|t| format!(", ticks every {t} ms"))
            .unwrap_or_default(),
        if r["shadowed"] == true { ", shadowed" } else { "" }
    );
    let rows: Vec<Vec<String>> = r["players"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            vec![
                p["id"].to_string(),
                p["name"].as_str().unwrap_or("?").to_owned(),
                p["user"].as_str().unwrap_or("-").to_owned(),
                p["queued"].to_string(),
            ]
        })
        .collect();
    for line in table(&["PLAYER", "NAME", "USER", "QUEUED"], &rows, 3).lines() {
        println!("  {line}");
    }
}

/// A room's instance memory as `respawn rooms` shows it: `asleep` while the
/// room sleeps (its instance freed), else KiB.
fn memory_of(room: &Value) -> String {
    if room["asleep"] == true {
        "asleep".into()
    } else {
        format!("{}K", room["memory_bytes"].as_u64().unwrap_or(0) / 1024)
    }
}

#[cfg(test)]
mod ban_tests {
    use super::*;

    #[test]
    fn durations_and_times_read_and_print_as_people_write_them() {
        assert_eq!(parse_duration("90").unwrap(), 90);
        assert_eq!(parse_duration("30m").unwrap(), 1800);
        assert_eq!(parse_duration("12h").unwrap(), 43_200);
        assert_eq!(parse_duration("7d").unwrap(), 604_800);
        for bad in ["", "m", "5w", "0", "-3h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_796_000_000_000), "2026-11-30 00:53:20 UTC");
    }
}
