//! Diagnostics in the spirit of Go's `net/http/pprof`, behind the admin
//! token: `/metrics` (Prometheus), `/debug/runtime` (Tokio),
//! `/debug/pprof/profile` (the host's CPU, pprof protobuf or a flame
//! graph), `/debug/pprof/heap` (jemalloc's sampled heap, pprof protobuf)
//! and `/debug/rooms/{game}/{room}/profile` (one room's guest code, in the
//! Firefox profiler's format). One profile of each kind at a time.

use super::{Admin, ApiError, ApiResult};
use crate::metrics::{METRICS, Snapshot};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The longest profile one request may ask for, in seconds.
pub const MAX_PROFILE_SECS: u64 = 60;

/// A CPU profile of the host is being taken.
static CPU_PROFILING: AtomicBool = AtomicBool::new(false);

/// A guest profile is being taken.
static GUEST_PROFILING: AtomicBool = AtomicBool::new(false);

/// Holds one of the "a profile is running" flags while alive.
struct Running(&'static AtomicBool);

impl Running {
    fn take(flag: &'static AtomicBool, what: &str) -> Result<Self, ApiError> {
        if flag.swap(true, Ordering::AcqRel) {
            return Err(ApiError {
                status: StatusCode::CONFLICT,
                code: "profile_running",
                message: format!("a {what} profile is already being taken; try again when it ends"),
            });
        }
        Ok(Self(flag))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// `/metrics`: every metric in Prometheus' text exposition format.
pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let mut snapshot = Snapshot::default();
    for (_, _, handle) in admin.gauges.rooms.handles(None) {
        snapshot.inbox_max = snapshot.inbox_max.max(handle.inbox_depth());
    }
    let (views, _) = admin.gauges.rooms.inspect_all(None).await;
    snapshot.outbound_max = views.iter().map(|v| v.outbound_max).max().unwrap_or(0);
    let status = admin.deployer.status();
    for g in &status.games {
        snapshot
            .games
            .push((g.name.clone(), g.probation.is_some(), g.canary.is_some()));
        for v in g.versions.iter().filter(|v| v.rooms > 0) {
            snapshot.rooms.push(((g.name.clone(), v.version.clone()), v.rooms));
        }
    }
    snapshot.counters = status.counters;
    snapshot.instances = admin.gauges.sandbox.live_instances();
    snapshot.instance_slots = admin.gauges.sandbox.slots();
    snapshot.parked_seats = admin.gauges.resumes.parked();
    // Rendering reads /proc and waits for any other scrape: not on a
    // worker the sessions and rooms share.
    let text = tokio::task::spawn_blocking(move || METRICS.render(&snapshot))
        .await
        .unwrap_or_default();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

/// `/debug/runtime`: the Tokio runtime's figures.
pub(super) async fn runtime() -> impl IntoResponse {
    let m = tokio::runtime::Handle::current().metrics();
    let workers: Vec<_> = (0..m.num_workers())
        .map(|w| {
            json!({
                "worker": w,
                "busy_seconds": m.worker_total_busy_duration(w).as_secs_f64(),
                "parks": m.worker_park_count(w),
            })
        })
        .collect();
    axum::Json(json!({
        "workers": m.num_workers(),
        "alive_tasks": m.num_alive_tasks(),
        "global_queue_depth": m.global_queue_depth(),
        "per_worker": workers,
    }))
}

/// `?seconds=&format=` of a profile.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ProfileQuery {
    seconds: Option<u64>,
    format: Option<String>,
}

fn seconds(asked: Option<u64>, default: u64) -> Result<Duration, ApiError> {
    let secs = asked.unwrap_or(default);
    if !(1..=MAX_PROFILE_SECS).contains(&secs) {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_seconds",
            message: format!("`seconds` must be 1 to {MAX_PROFILE_SECS}"),
        });
    }
    Ok(Duration::from_secs(secs))
}

fn failed(what: &str, e: impl std::fmt::Display) -> ApiError {
    ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "profile_failed",
        message: format!("{what}: {e}"),
    }
}

/// `/debug/pprof/profile?seconds=N[&format=svg]`: samples the host's
/// threads at 99 Hz for N seconds (default 10).
pub(super) async fn cpu_profile(Query(q): Query<ProfileQuery>) -> ApiResult {
    let svg = match q.format.as_deref() {
        None | Some("pprof") => false,
        Some("svg") => true,
        Some(other) => {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_format",
                message: format!("`format` is `pprof` (the default) or `svg`, not `{other}`"),
            });
        }
    };
    let duration = seconds(q.seconds, 10)?;
    let running = Running::take(&CPU_PROFILING, "CPU")?;
    // All on a blocking thread: the profiler's guard stays on one thread.
    let body = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let _running = running;
        let guard = pprof::ProfilerGuardBuilder::default()
            .frequency(99)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| failed("cannot start the profiler", e))?;
        std::thread::sleep(duration);
        let report = guard
            .report()
            .build()
            .map_err(|e| failed("cannot build the profile", e))?;
        drop(guard);
        let body = if svg {
            let mut out = Vec::new();
            report
                .flamegraph(&mut out)
                .map_err(|e| failed("cannot draw the flame graph", e))
                .map(|()| out)
        } else {
            use pprof::protos::Message;
            report
                .pprof()
                .map_err(|e| failed("cannot encode the profile", e))
                .map(|profile| profile.encode_to_vec())
        };
        forget_symbols();
        body
    })
    .await
    .map_err(|e| failed("the profiler failed", e))??;
    let kind = if svg {
        "image/svg+xml"
    } else {
        "application/octet-stream"
    };
    Ok(([(header::CONTENT_TYPE, kind)], body).into_response())
}

/// Drops the debug information a profile was symbolized with: the
/// `backtrace` crate keeps it parsed for the next lookup, about 290 MB
/// that a host would otherwise hold from its first profile on. The next
/// profile parses it again (a second or so).
fn forget_symbols() {
    backtrace::clear_symbol_cache();
}

/// `/debug/pprof/heap`: what the host's heap holds now, by allocation
/// site (sampled: one sample per 512 KiB allocated on average), as gzipped
/// pprof protobuf.
pub(super) async fn heap_profile() -> ApiResult {
    let off = || ApiError {
        status: StatusCode::CONFLICT,
        code: "heap_profiling_off",
        message: "heap profiling is off (observability.heap_profiling = false, or a build without jemalloc)".into(),
    };
    let ctl = jemalloc_pprof::PROF_CTL.as_ref().ok_or_else(off)?;
    let mut ctl = ctl.lock().await;
    if !ctl.activated() {
        return Err(off());
    }
    let body = crate::blocking::blocking(|| {
        let dump = ctl.dump_pprof();
        forget_symbols();
        dump
    })
    .map_err(|e| failed("cannot dump the heap", e))?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response())
}

/// Turns jemalloc's heap sampling on (start-up, `observability.heap_profiling`).
pub async fn start_heap_profiling() {
    if let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() {
        let mut ctl = ctl.lock().await;
        if let Err(e) = ctl.activate() {
            tracing::warn!("cannot turn heap profiling on: {e}");
        }
    }
}

/// `/debug/rooms/{game}/{room}/profile?seconds=N`: samples the room's guest
/// code at every epoch tick of its calls (1 ms) for N seconds (default 5),
/// and answers in the Firefox profiler's format (open it at
/// profiler.firefox.com).
pub(super) async fn guest_profile(
    State(admin): State<Arc<Admin>>,
    Path((game, room)): Path<(String, String)>,
    Query(q): Query<ProfileQuery>,
) -> ApiResult {
    super::rooms::known(&admin, &game)?;
    if q.format.as_deref().is_some_and(|f| f != "firefox") {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_format",
            message: "a guest profile is in the Firefox profiler's format (`format=firefox`)".into(),
        });
    }
    let duration = seconds(q.seconds, 5)?;
    let running = Running::take(&GUEST_PROFILING, "guest")?;
    let rooms = admin.gauges.rooms.clone();
    // If this request goes away (the client hung up, or the start timed
    // out but is still queued), the room is told to stop all the same,
    // and only then may another profile start.
    let mut stop = StopProfile(Some((rooms.clone(), game.clone(), room.clone(), running)));
    rooms.start_profile(&game, &room, duration).await?;
    tokio::time::sleep(duration).await;
    let running = stop.0.take().map(|(.., running)| running);
    let profile = rooms.finish_profile(&game, &room).await;
    drop(running);
    let profile = profile?;
    let json = tokio::task::spawn_blocking(move || {
        let mut json = Vec::new();
        profile.finish(&mut json).map(|()| json)
    })
    .await
    .map_err(|e| failed("the profile could not be written", e))?
    .map_err(|e| failed("the profile could not be written", e))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

/// Tells a room to stop profiling unless disarmed, holding the "a guest
/// profile runs" flag until the room was told.
struct StopProfile(Option<(Arc<crate::room::Rooms>, String, String, Running)>);

impl Drop for StopProfile {
    fn drop(&mut self) {
        if let Some((rooms, game, room, running)) = self.0.take() {
            tokio::spawn(async move {
                let _ = rooms.finish_profile(&game, &room).await;
                drop(running);
            });
        }
    }
}

/// `/debug/top`: what `respawn top` shows, as running totals (the CLI
/// turns two readings into rates and windowed percentiles): per game its
/// frames, per loaded version its rooms, players, calls, faults,
/// restarts, crashes and call-time histogram (log2 µs buckets).
pub(super) async fn top(State(admin): State<Arc<Admin>>) -> impl IntoResponse {
    let (views, unanswered) = admin.gauges.rooms.inspect_all(None).await;
    let mut players: std::collections::BTreeMap<(&str, &str), usize> = Default::default();
    for v in &views {
        *players.entry((&v.game, &v.version)).or_default() += v.players.len();
    }
    let status = admin.deployer.status();
    let games: Vec<_> = status
        .games
        .iter()
        .map(|g| {
            let versions: Vec<_> = g
                .versions
                .iter()
                .map(|v| {
                    let latency = v
                        .version
                        .parse()
                        .ok()
                        .and_then(|ver| admin.deployer.games().get(&g.name, &ver).ok())
                        .map(|m| m.health.latency_buckets())
                        .unwrap_or_default();
                    json!({
                        "version": v.version,
                        "active": g.active.as_deref() == Some(v.version.as_str()),
                        "rooms": v.rooms,
                        "players": players.get(&(g.name.as_str(), v.version.as_str())).copied().unwrap_or(0),
                        "calls": v.health.calls,
                        "faults": v.health.faults,
                        "restarts": v.health.restarts,
                        "crashes": v.health.crashes,
                        "latency_buckets": latency,
                    })
                })
                .collect();
            json!({
                "game": g.name,
                "frames": METRICS.game(&g.name).frames.get(),
                "versions": versions,
            })
        })
        .collect();
    let nodes = admin.gauges.rooms.cluster().map(|c| c.nodes());
    axum::Json(json!({
        "at_ms": crate::unix_ms(),
        "games": games,
        "unanswered_rooms": unanswered,
        "nodes": nodes,
    }))
}
