//! Crash events to Sentry (`[observability.sentry]`): each crash report
//! is also sent as an event, with release `game@version`, the room's tags,
//! the wasm backtrace as the stack trace and the room's last inputs as
//! breadcrumbs; the host's own panics go too. Without a DSN nothing is
//! set up and a crash costs nothing more.

use crate::config::SentryConfig;
use crate::room::journal::{Entry, Input};
use anyhow::Context;
use sentry::protocol::{Breadcrumb, Event, Exception, Frame, Level, Map, Mechanism, Stacktrace};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a client is configured.
static ON: AtomicBool = AtomicBool::new(false);

/// Breadcrumbs per event: the room's last inputs.
const BREADCRUMBS: usize = 32;

/// Longest message payload shown in a breadcrumb, in bytes.
const PAYLOAD_SHOWN: usize = 256;

/// Starts the Sentry client (its own sending thread) and its panic hook.
/// Keep the guard until the host exits: dropping it flushes the queue.
pub fn init(cfg: &SentryConfig) -> anyhow::Result<sentry::ClientInitGuard> {
    let dsn: sentry::types::Dsn = cfg
        .dsn
        .parse()
        .with_context(|| format!("observability.sentry.dsn `{}` is not a Sentry DSN", cfg.dsn))?;
    let mut options = sentry::ClientOptions::new()
        .release(format!("respawn@{}", env!("CARGO_PKG_VERSION")))
        .environment(cfg.environment.clone());
    options.dsn = Some(dsn);
    let guard = sentry::init(options);
    ON.store(true, Ordering::Release);
    tracing::info!(environment = %cfg.environment, "crash events go to Sentry");
    Ok(guard)
}

/// What a crash event says.
pub struct Crash<'a> {
    /// The game.
    pub game: &'a str,
    /// The room.
    pub room: &'a str,
    /// The version it ran.
    pub version: &'a str,
    /// Why the room closed (`restart_intensity`, `restart_failed`, ...).
    pub reason: &'a str,
    /// The fault's kind (`trap`, `timeout`, ...).
    pub kind: &'a str,
    /// wasmtime's description.
    pub message: &'a str,
    /// The wasm backtrace's frames, innermost first (`module!function`).
    pub frames: Vec<&'a str>,
    /// The room's inputs since its checkpoint, oldest first, the failing
    /// one last.
    pub inputs: Vec<&'a Entry>,
    /// Leave players' payloads out (`capsules.redact`).
    pub redact: bool,
}

/// Sends a crash event, if Sentry is configured.
pub fn report(crash: &Crash<'_>) {
    if !ON.load(Ordering::Acquire) {
        return;
    }
    sentry::Hub::main().capture_event(event(crash));
}

fn event(crash: &Crash<'_>) -> Event<'static> {
    let mut tags = Map::new();
    for (k, v) in [
        ("game", crash.game),
        ("room", crash.room),
        ("version", crash.version),
        ("kind", crash.kind),
        ("reason", crash.reason),
    ] {
        tags.insert(k.to_owned(), v.to_owned());
    }
    // Sentry lists frames oldest first.
    let frames: Vec<Frame> = crash
        .frames
        .iter()
        .rev()
        .map(|f| {
            let (module, function) = f.split_once('!').unwrap_or(("", f));
            Frame {
                function: Some(function.to_owned()),
                module: (!module.is_empty()).then(|| module.to_owned()),
                in_app: Some(true),
                ..Frame::default()
            }
        })
        .collect();
    let skip = crash.inputs.len().saturating_sub(BREADCRUMBS);
    let breadcrumbs: Vec<Breadcrumb> = crash.inputs[skip..]
        .iter()
        .map(|e| breadcrumb(e, crash.redact))
        .collect();
    Event {
        level: Level::Fatal,
        message: Some(format!("room {}/{} closed ({})", crash.game, crash.room, crash.reason)),
        release: Some(format!("{}@{}", crash.game, crash.version).into()),
        tags,
        exception: vec![Exception {
            ty: crash.kind.to_owned(),
            value: Some(crash.message.lines().next().unwrap_or(crash.message).to_owned()),
            stacktrace: Some(Stacktrace {
                frames,
                ..Stacktrace::default()
            }),
            mechanism: Some(Mechanism {
                ty: "wasmtime".into(),
                handled: Some(false),
                ..Mechanism::default()
            }),
            ..Exception::default()
        }]
        .into(),
        breadcrumbs: breadcrumbs.into(),
        ..Event::default()
    }
}

fn breadcrumb(entry: &Entry, redact: bool) -> Breadcrumb {
    let (kind, player, payload) = match &entry.input {
        Input::Join { player, .. } => ("join", Some(*player), None),
        Input::Leave { player } => ("leave", Some(*player), None),
        Input::Message { player, payload, .. } => ("message", Some(*player), Some(payload)),
        Input::Tick => ("tick", None, None),
    };
    let mut data = Map::new();
    if let Some(p) = player {
        data.insert("player".into(), p.into());
    }
    data.insert("room_ms".into(), entry.now.into());
    let message = match payload {
        Some(_) if redact => Some("(redacted)".to_owned()),
        Some(p) => {
            let text = String::from_utf8_lossy(&p[..p.len().min(PAYLOAD_SHOWN)]).into_owned();
            Some(text)
        }
        None => None,
    };
    Breadcrumb {
        ty: "default".into(),
        category: Some(format!("input.{kind}")),
        message,
        data,
        timestamp: std::time::UNIX_EPOCH + std::time::Duration::from_millis(entry.now),
        ..Breadcrumb::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn message(player: u64, text: &str, now: u64) -> Entry {
        Entry {
            now,
            input: Input::Message {
                player,
                payload: Bytes::copy_from_slice(text.as_bytes()),
                reference: None,
            },
            reads: Vec::new(),
        }
    }

    /// The event Sentry gets: frames oldest first (wasmtime lists the
    /// innermost first), the last inputs as breadcrumbs with the failing
    /// one last, payloads cut or redacted.
    #[test]
    fn the_event_reads_like_a_crash_in_sentry() {
        let inputs: Vec<Entry> = (0..40).map(|i| message(1, &"x".repeat(300), 1000 + i)).collect();
        let crash = Crash {
            game: "pad",
            room: "r",
            version: "1.2.0",
            reason: "restart_intensity",
            kind: "trap",
            message: "wasm trap: unreachable\nmore",
            frames: vec!["pad!pad::step", "pad!pad::on_message", "pad!_export"],
            inputs: inputs.iter().collect(),
            redact: false,
        };
        let event = event(&crash);
        assert_eq!(event.release.as_deref(), Some("pad@1.2.0"));
        assert_eq!(event.tags.get("kind").map(String::as_str), Some("trap"));
        let exception = &event.exception.values[0];
        assert_eq!(exception.value.as_deref(), Some("wasm trap: unreachable"));
        let frames = &exception.stacktrace.as_ref().expect("stack").frames;
        let names: Vec<&str> = frames.iter().filter_map(|f| f.function.as_deref()).collect();
        assert_eq!(names, ["_export", "pad::on_message", "pad::step"]);
        assert_eq!(frames[0].module.as_deref(), Some("pad"));
        let crumbs = &event.breadcrumbs.values;
        assert_eq!(crumbs.len(), BREADCRUMBS);
        assert_eq!(crumbs.last().and_then(|b| b.data.get("room_ms")), Some(&1039.into()));
        assert_eq!(crumbs[0].message.as_deref().map(str::len), Some(PAYLOAD_SHOWN));

        let redacted = event_redacted(&crash);
        assert!(
            redacted
                .breadcrumbs
                .values
                .iter()
                .all(|b| b.message.as_deref() == Some("(redacted)"))
        );
    }

    fn event_redacted(crash: &Crash<'_>) -> Event<'static> {
        event(&Crash {
            redact: true,
            frames: crash.frames.clone(),
            inputs: crash.inputs.clone(),
            ..*crash
        })
    }

    /// With a DSN, a panic of the host's own code is an event too (the
    /// client's panic hook), with the host's release.
    #[test]
    fn the_hosts_own_panics_are_sent() {
        let (port, sent) = respawn_e2e::http_sink();
        let guard = init(&SentryConfig {
            dsn: format!("http://key@127.0.0.1:{port}/3"),
            environment: "unit".into(),
        })
        .expect("a DSN");
        let panicked = std::thread::spawn(|| panic!("a host bug")).join();
        assert!(panicked.is_err());
        guard.flush(Some(std::time::Duration::from_secs(5)));
        // Other tests of this binary may send events too: the panic's is
        // the one that names it.
        let sent = loop {
            let (_, body) = sent
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("an event was sent");
            let body = String::from_utf8_lossy(&body).into_owned();
            if body.contains("a host bug") {
                break body;
            }
        };
        assert!(sent.contains("a host bug"), "{sent}");
        assert!(
            sent.contains(&format!("respawn@{}", env!("CARGO_PKG_VERSION"))),
            "{sent}"
        );
        assert!(sent.contains("\"environment\":\"unit\""), "{sent}");
        assert!(
            init(&SentryConfig {
                dsn: "not a dsn".into(),
                environment: "unit".into(),
            })
            .is_err()
        );
    }
}
