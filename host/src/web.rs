//! The demo site: a page to play the example games in a browser, built
//! into the binary, served on its own port (`net.web`). The page talks to
//! the WebSocket listener like any client.

use crate::auth::Auth;
use crate::modules::Games;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

const INDEX: &str = include_str!("../web/index.html");
const APP: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");
/// The JavaScript client, the same file studios ship in their own pages.
const CLIENT: &str = include_str!("../../clients/js/respawn.js");

/// What the page needs to know about the host.
pub struct Site {
    /// The port of the WebSocket listener, if it is on.
    pub ws_port: Option<u16>,
    /// Loaded games, for the game picker.
    pub games: Arc<Games>,
    /// Whether tickets are required, and the development issuer.
    pub auth: Arc<Auth>,
    /// Whether the listeners speak TLS (the page then uses `wss://`).
    pub tls: bool,
}

/// Set to the repository's root to serve the site's files from disk
/// instead of the copies built in: edit and reload, no rebuild.
pub const DEV_ROOT_ENV: &str = "RESPAWN_DEV_ROOT";

/// One of the site's files: built in, or read from the repository under
/// [`DEV_ROOT_ENV`].
fn file(built_in: &'static str, path: &'static str, kind: &'static str) -> impl IntoResponse {
    let body = std::env::var_os(DEV_ROOT_ENV)
        .and_then(|root| std::fs::read_to_string(std::path::Path::new(&root).join(path)).ok())
        .map_or(std::borrow::Cow::Borrowed(built_in), std::borrow::Cow::Owned);
    (
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        body,
    )
}

/// The site's routes.
pub fn router(site: Arc<Site>) -> Router {
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route(
            "/",
            get(|| async { file(INDEX, "host/web/index.html", "text/html; charset=utf-8") }),
        )
        .route("/app.js", get(|| async { file(APP, "host/web/app.js", JS) }))
        .route(
            "/respawn.js",
            get(|| async { file(CLIENT, "clients/js/respawn.js", JS) }),
        )
        .route(
            "/style.css",
            get(|| async { file(STYLE, "host/web/style.css", "text/css; charset=utf-8") }),
        )
        .route("/config.json", get(config))
        .route("/dev/ticket", get(dev_ticket))
        .with_state(site)
}

async fn config(State(site): State<Arc<Site>>) -> impl IntoResponse {
    let games: Vec<_> = site
        .games
        .names()
        .into_iter()
        .filter_map(|name| {
            let version = site.games.active(&name)?.version.to_string();
            Some(json!({"name": name, "version": version}))
        })
        .collect();
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Json(json!({
            "ws_port": site.ws_port,
            "games": games,
            "server": crate::session::SERVER,
            "tls": site.tls,
            "auth": {
                "required": site.auth.config.required,
                "dev_tickets": site.auth.dev_issuer().is_some(),
            },
        })),
    )
}

/// `?name=`.
#[derive(serde::Deserialize)]
struct TicketQuery {
    #[serde(default)]
    name: String,
}

/// A short-lived development ticket for `name` (`auth.dev_issuer`); 404
/// when the issuer is off.
async fn dev_ticket(State(site): State<Arc<Site>>, Query(q): Query<TicketQuery>) -> Response {
    let Some(dev) = site.auth.dev_issuer() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "the development ticket issuer is off (auth.dev_issuer)"})),
        )
            .into_response();
    };
    match dev.issue(&q.name) {
        Ok(ticket) => ([(header::CACHE_CONTROL, "no-store")], Json(ticket)).into_response(),
        Err(why) => (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response(),
    }
}
