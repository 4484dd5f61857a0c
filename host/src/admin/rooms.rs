//! Room operations and views on the admin API: `GET /debug/rooms[?game=]`,
//! `GET /debug/rooms/{game}/{room}`, and `POST /rooms/{game}/{room}/kick`,
//! `/close`, `/say`. Each operation is audited.

use super::{Admin, ApiError, ApiResult};
use crate::modules::audit::AuditEntry;
use crate::room::operations::{MAX_TEXT, OperationError};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

impl From<OperationError> for ApiError {
    fn from(e: OperationError) -> Self {
        let status = match e {
            OperationError::NoRoom { .. } | OperationError::NoPlayer(_) => StatusCode::NOT_FOUND,
            OperationError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            OperationError::Profile(_) => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            code: e.code(),
            message: e.to_string(),
        }
    }
}

/// `?game=` on the room list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RoomFilter {
    game: Option<String>,
}

/// Every live room (of one game), as each describes itself.
pub(super) async fn list(State(admin): State<Arc<Admin>>, Query(filter): Query<RoomFilter>) -> ApiResult {
    if let Some(game) = &filter.game {
        known(&admin, game)?;
    }
    let (rooms, unanswered) = admin.gauges.rooms.inspect_all(filter.game.as_deref()).await;
    Ok(Json(json!({"rooms": rooms, "unanswered": unanswered})).into_response())
}

/// One room.
pub(super) async fn inspect(State(admin): State<Arc<Admin>>, Path((game, room)): Path<(String, String)>) -> ApiResult {
    known(&admin, &game)?;
    Ok(Json(admin.gauges.rooms.inspect(&game, &room).await?).into_response())
}

fn unknown_game(game: &str) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "unknown_game",
        message: format!("no game named `{game}` is loaded"),
    }
}

pub(super) fn known(admin: &Admin, game: &str) -> Result<(), ApiError> {
    match admin.deployer.games().swap_lock(game) {
        Some(_) => Ok(()),
        None => Err(unknown_game(game)),
    }
}

/// A reason or message: 1 to [`MAX_TEXT`] bytes, not blank.
fn text(field: &str, value: &str) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > MAX_TEXT {
        return Err(ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("`{field}` must be 1 to {MAX_TEXT} bytes"),
        });
    }
    Ok(())
}

/// Body of `kick`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KickBody {
    player: u64,
    reason: String,
}

/// Removes one player, telling them why.
pub(super) async fn kick(
    State(admin): State<Arc<Admin>>,
    Path((game, room)): Path<(String, String)>,
    Json(body): Json<KickBody>,
) -> ApiResult {
    known(&admin, &game)?;
    text("reason", &body.reason)?;
    let player = body.player;
    audited(
        &admin,
        "room_kick",
        &game,
        &room,
        Some(player),
        body.reason,
        |rooms, g, r, reason| async move { rooms.kick(&g, &r, player, &reason).await },
    )
    .await?;
    Ok(Json(json!({"kicked": player})).into_response())
}

/// Body of `close`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CloseBody {
    reason: String,
}

/// Closes the room, telling its players why.
pub(super) async fn close(
    State(admin): State<Arc<Admin>>,
    Path((game, room)): Path<(String, String)>,
    Json(body): Json<CloseBody>,
) -> ApiResult {
    known(&admin, &game)?;
    text("reason", &body.reason)?;
    let told = audited(
        &admin,
        "room_close",
        &game,
        &room,
        None,
        body.reason,
        |rooms, g, r, reason| async move { rooms.close(&g, &r, &reason).await },
    )
    .await?;
    Ok(Json(json!({"closed": true, "players": told})).into_response())
}

/// Body of `say`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SayBody {
    message: String,
}

/// A system message to everyone in the room.
pub(super) async fn say(
    State(admin): State<Arc<Admin>>,
    Path((game, room)): Path<(String, String)>,
    Json(body): Json<SayBody>,
) -> ApiResult {
    known(&admin, &game)?;
    text("message", &body.message)?;
    let told = audited(
        &admin,
        "room_say",
        &game,
        &room,
        None,
        body.message,
        |rooms, g, r, message| async move { rooms.say(&g, &r, &message).await },
    )
    .await?;
    Ok(Json(json!({"players": told})).into_response())
}

/// Runs a room operation and audits it if it was done, on a task of its
/// own: an operator who hangs up meanwhile does not keep an operation
/// that happened out of the audit.
async fn audited<T, F>(
    admin: &Arc<Admin>,
    event: &'static str,
    game: &str,
    room: &str,
    player: Option<u64>,
    text: String,
    operation: impl FnOnce(Arc<crate::room::Rooms>, String, String, String) -> F,
) -> Result<T, ApiError>
where
    F: std::future::Future<Output = Result<T, OperationError>> + Send + 'static,
    T: Send + 'static,
{
    let (admin, game, room) = (admin.clone(), game.to_owned(), room.to_owned());
    let done = operation(admin.gauges.rooms.clone(), game.clone(), room.clone(), text.clone());
    tokio::spawn(async move {
        let answer = done.await?;
        audit(&admin, event, &game, &room, player, &text);
        Ok(answer)
    })
    .await
    .map_err(|e| ApiError {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        code: "internal",
        message: format!("the operation failed: {e}"),
    })?
}

fn audit(admin: &Admin, event: &'static str, game: &str, room: &str, player: Option<u64>, text: &str) {
    crate::metrics::METRICS
        .room_operations
        .with_label_values(&[event])
        .inc();
    tracing::info!(game, room, player, "{event}: {text}");
    admin.deployer.audit(AuditEntry {
        event,
        game: Some(game.to_owned()),
        room: Some(room.to_owned()),
        player,
        detail: Some(text.to_owned()),
        ..AuditEntry::default()
    });
}
