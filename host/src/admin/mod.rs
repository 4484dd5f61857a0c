//! The operator API behind `respawn status`, `rollback`, `promote`, `pin`,
//! `unpin`, the room operations and `respawn top`, with Prometheus'
//! `/metrics` and the `/debug/` views: HTTP+JSON on loopback, every request
//! carrying the bearer token from `<state>/admin.token` (created at first
//! start, mode 0600).

mod debug;
mod rooms;

pub use debug::start_heap_profiling;

use crate::deploy::{DeployError, Deployer, Trigger};
use crate::readiness::{Gauges, Health};
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::path::Path as FsPath;
use std::sync::Arc;

/// What the handlers share.
pub struct Admin {
    /// The deployment path.
    pub deployer: Arc<Deployer>,
    /// The bearer token every request must carry.
    pub token: String,
    /// Liveness and readiness.
    pub health: Arc<Health>,
    /// Runtime figures for `/status`.
    pub gauges: Gauges,
    /// Tickets and bans.
    pub auth: Arc<crate::auth::Auth>,
    /// Where bans are kept.
    pub store: Arc<crate::storage::Store>,
    /// Held while a ban change takes effect and is queued for the disk.
    pub moderation: std::sync::Mutex<()>,
}

/// Name of the token file inside the state folder.
pub const TOKEN_FILE: &str = "admin.token";

/// Reads the admin token, creating it (readable by its owner only) on
/// first start.
pub fn ensure_token(state_dir: &FsPath) -> std::io::Result<String> {
    let path = state_dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            if let Ok(meta) = std::fs::metadata(&path)
                && meta.permissions().mode() & 0o077 != 0
            {
                tracing::warn!(file = %path.display(), "the admin token is readable by others; chmod 600 it");
            }
        }
        return Ok(token.trim().to_owned());
    }
    let token = crate::util::hex(&crate::util::random_secret()?);
    crate::util::write_private(&path, token.as_bytes())?;
    Ok(token)
}

/// The API's routes. `/healthz` and `/readyz` need no token: they tell
/// nothing but up or down, and probes should not hold secrets.
pub fn router(admin: Arc<Admin>) -> Router {
    let operator = Router::new()
        .route("/status", get(status))
        .route("/games/{game}/rollback", post(rollback))
        .route("/games/{game}/promote", post(promote))
        .route("/games/{game}/shadow", post(shadow))
        .route("/games/{game}/pin", post(pin))
        .route("/games/{game}/unpin", post(unpin))
        .route("/bans", get(bans).post(ban))
        .route("/unban", post(unban))
        .route("/metrics", get(debug::metrics))
        .route("/debug/runtime", get(debug::runtime))
        .route("/debug/top", get(debug::top))
        .route("/debug/pprof/profile", get(debug::cpu_profile))
        .route("/debug/pprof/heap", get(debug::heap_profile))
        .route("/debug/rooms", get(rooms::list))
        .route("/debug/rooms/{game}/{room}", get(rooms::inspect))
        .route("/debug/rooms/{game}/{room}/profile", get(debug::guest_profile))
        .route("/rooms/{game}/{room}/kick", post(rooms::kick))
        .route("/rooms/{game}/{room}/close", post(rooms::close))
        .route("/rooms/{game}/{room}/say", post(rooms::say))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), authorize));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(operator)
        .with_state(admin)
}

/// Alive: the runtime answers.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready for players: listeners up, games loaded, not draining.
async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    match admin.health.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reasons": why})),
        )
            .into_response(),
    }
}

/// Constant-time comparison, so the token cannot be guessed byte by byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(admin): State<Arc<Admin>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(t) if same(t.as_bytes(), admin.token.as_bytes()) => next.run(req).await,
        _ => ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "missing or wrong admin token".into(),
        }
        .into_response(),
    }
}

/// An API error: an HTTP status and a stable code the CLI prints.
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"error": self.code, "message": self.message}))).into_response()
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let status = match e {
            DeployError::Lookup(_) => StatusCode::NOT_FOUND,
            DeployError::Aborted { .. }
            | DeployError::Moved(_)
            | DeployError::Untrusted { .. }
            | DeployError::GateFailed { .. }
            | DeployError::ShadowRunning
            | DeployError::NoCanary(_)
            | DeployError::CanaryNotStarted(_)
            | DeployError::CanaryOff => StatusCode::CONFLICT,
            DeployError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn version(text: Option<String>) -> Result<Option<semver::Version>, ApiError> {
    text.map(|t| {
        t.parse().map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_version",
            message: format!("`{t}`: {e}"),
        })
    })
    .transpose()
}

type ApiResult = Result<Response, ApiError>;

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let mut body = serde_json::to_value(admin.deployer.status()).unwrap_or_default();
    if let Some(map) = body.as_object_mut() {
        map.insert("runtime".into(), json!(admin.gauges.read()));
        if let Some(cluster) = admin.gauges.rooms.cluster() {
            map.insert(
                "cluster".into(),
                json!({"node": cluster.node(), "nodes": cluster.nodes()}),
            );
        }
    }
    Json(body).into_response()
}

/// Body of `rollback`, `promote` and `pin`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MaybeVersion {
    #[serde(default, alias = "to")]
    version: Option<String>,
    /// Past the hot-fix gate (`promote --force`, `rollback --force`).
    #[serde(default)]
    force: bool,
    /// `promote`: start a canary on this percent of new rooms.
    #[serde(default)]
    canary: Option<u8>,
    /// `promote`: end the game's canary by promoting it to every room.
    #[serde(default)]
    full: bool,
}

async fn rollback(
    State(admin): State<Arc<Admin>>,
    Path(game): Path<String>,
    body: Option<Json<MaybeVersion>>,
) -> ApiResult {
    let body = body.map(|b| b.0).unwrap_or_default();
    let to = version(body.version)?;
    // A running canary is what a plain rollback undoes.
    if to.is_none() && admin.deployer.games().canary(&game).is_some() {
        match admin
            .deployer
            .end_canary(&game, None, false, false, "an operator rolled the canary back")
            .await
        {
            Ok(outcome) => return Ok(Json(outcome).into_response()),
            // It is ending already (the host judged it a moment ago): not a
            // plain rollback of the active version, which nobody asked for.
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Json(admin.deployer.rollback_forced(&game, to, body.force).await?).into_response())
}

async fn promote(
    State(admin): State<Arc<Admin>>,
    Path(game): Path<String>,
    Json(body): Json<MaybeVersion>,
) -> ApiResult {
    if body.full {
        // The version named must be the canary's: a typo promotes nothing.
        let named = version(body.version)?;
        let running = admin.deployer.games().canary(&game).map(|(v, _)| v);
        if named.is_some() && named != running {
            return Err(
                DeployError::NoCanary(format!("{game} {}", named.map(|v| v.to_string()).unwrap_or_default())).into(),
            );
        }
        let outcome = admin
            .deployer
            .end_canary(&game, running.as_ref(), true, false, "an operator promoted it in full")
            .await?;
        return Ok(Json(outcome).into_response());
    }
    let v = version(body.version)?.ok_or(ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_version",
        message: "`version` is required".into(),
    })?;
    if let Some(percent) = body.canary {
        if !(1..=99).contains(&percent) {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_canary",
                message: format!("`canary` is {percent}; a share of new rooms from 1 to 99 percent"),
            });
        }
        let outcome = admin.deployer.canary(&game, &v, percent, body.force).await?;
        return Ok(Json(outcome).into_response());
    }
    Ok(Json(
        admin
            .deployer
            .promote_forced(&game, &v, Trigger::Promote, body.force)
            .await?,
    )
    .into_response())
}

/// Body of `shadow`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowRequest {
    version: String,
    #[serde(default = "ten")]
    rooms: usize,
    #[serde(default = "sixty")]
    secs: f64,
}

fn ten() -> usize {
    10
}

fn sixty() -> f64 {
    60.0
}

/// The longest shadow run one request may ask for.
const MAX_SHADOW_SECS: f64 = 3600.0;

async fn shadow(
    State(admin): State<Arc<Admin>>,
    Path(game): Path<String>,
    Json(body): Json<ShadowRequest>,
) -> ApiResult {
    let v = version(Some(body.version))?.ok_or(ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_version",
        message: "`version` is required".into(),
    })?;
    if !(body.secs > 0.0 && body.secs <= MAX_SHADOW_SECS) || body.rooms == 0 || body.rooms > 1_000 {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_shadow",
            message: format!("`secs` must be in (0, {MAX_SHADOW_SECS}] and `rooms` in 1..=1000"),
        });
    }
    let report = admin.deployer.shadow(&game, &v, body.rooms, body.secs).await?;
    Ok(Json(report).into_response())
}

async fn pin(State(admin): State<Arc<Admin>>, Path(game): Path<String>, body: Option<Json<MaybeVersion>>) -> ApiResult {
    let body = body.map(|b| b.0).unwrap_or_default();
    let v = version(body.version)?;
    let promotion = admin.deployer.pin(&game, v, body.force).await?;
    Ok(Json(json!({"pinned": true, "promotion": promotion})).into_response())
}

async fn unpin(State(admin): State<Arc<Admin>>, Path(game): Path<String>) -> ApiResult {
    admin.deployer.unpin(&game)?;
    Ok(Json(json!({"pinned": false})).into_response())
}

/// How long a ban waits for the database before the API says it is not
/// saved.
const BAN_SAVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Body of `POST /bans`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    user: String,
    reason: String,
    #[serde(default)]
    duration_secs: Option<u64>,
}

/// Body of `POST /unban`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnbanBody {
    user: String,
}

fn bad_ban(message: String) -> ApiError {
    ApiError {
        status: StatusCode::BAD_REQUEST,
        code: "bad_ban",
        message,
    }
}

/// Waits until a submitted ban change is on disk.
async fn saved_within(admin: &Admin, submitted: Result<u64, crate::storage::Unavailable>) -> Result<(), ApiError> {
    let unsaved = || ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        code: "storage_unavailable",
        message: "the change is in force but the database did not take it; it will not survive a restart".into(),
    };
    let ticket = submitted.map_err(|_| unsaved())?;
    if admin.store.wait(ticket, BAN_SAVE_WAIT).await {
        Ok(())
    } else {
        Err(unsaved())
    }
}

/// Bans a user: refused from now on, removed from every room, saved, and
/// audited.
async fn ban(State(admin): State<Arc<Admin>>, Json(body): Json<BanBody>) -> ApiResult {
    if body.user.is_empty() || body.user.len() > crate::auth::ticket::MAX_USER_ID {
        return Err(bad_ban(format!(
            "`user` must be 1 to {} bytes",
            crate::auth::ticket::MAX_USER_ID
        )));
    }
    if body.reason.trim().is_empty() || body.reason.len() > 512 {
        return Err(bad_ban("`reason` must be 1 to 512 bytes".into()));
    }
    let now = crate::unix_ms();
    let until_ms = match body.duration_secs {
        Some(s) => Some(
            s.checked_mul(1000)
                .and_then(|ms| ms.checked_add(now))
                .filter(|_| s > 0)
                .ok_or_else(|| bad_ban("`duration_secs` must be positive and within range".into()))?,
        ),
        None => None,
    };
    let ban = crate::auth::Ban {
        user: body.user,
        reason: body.reason,
        since_ms: now,
        until_ms,
    };
    // In memory and queued for the database under one lock, so a ban and
    // an unban of the same user reach the disk in the order they took
    // effect.
    let saved = {
        let _order = crate::lock(&admin.moderation);
        admin.auth.bans.insert(ban.clone());
        admin.store.submit(crate::storage::Op::Ban(ban.clone()))
    };
    let rooms = admin
        .gauges
        .rooms
        .kick_user(&ban.user, &crate::auth::banned_message(&ban));
    admin.deployer.audit(crate::modules::audit::AuditEntry {
        event: "ban",
        user: Some(ban.user.clone()),
        reason: Some(ban.reason.clone()),
        until_ms,
        ..Default::default()
    });
    tracing::info!(user = %ban.user, until_ms = ?until_ms, rooms, "user banned");
    saved_within(&admin, saved).await?;
    Ok(Json(json!({"ban": ban, "rooms": rooms})).into_response())
}

/// Lifts a ban.
async fn unban(State(admin): State<Arc<Admin>>, Json(body): Json<UnbanBody>) -> ApiResult {
    let (lifted, saved) = {
        let _order = crate::lock(&admin.moderation);
        let lifted = admin.auth.bans.remove(&body.user).is_some();
        let op = crate::storage::Op::Unban {
            user: body.user.clone(),
        };
        (lifted, admin.store.submit(op))
    };
    if lifted {
        admin.deployer.audit(crate::modules::audit::AuditEntry {
            event: "unban",
            user: Some(body.user.clone()),
            ..Default::default()
        });
        tracing::info!(user = %body.user, "ban lifted");
    }
    saved_within(&admin, saved).await?;
    Ok(Json(json!({"lifted": lifted})).into_response())
}

async fn bans(State(admin): State<Arc<Admin>>) -> Response {
    Json(json!({"bans": admin.auth.bans.list()})).into_response()
}
