//! The relay's HTTP surface: websocket sync at `/` and `/sync`, `/healthz` and `/metrics`.

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::sync::watch;

use crate::auth::{self, AuthConfig, Identity};
use crate::connection::{self, ConnectionLimits, UserConnections};
use crate::relay::RelayHandle;

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    pub relay: RelayHandle,
    pub(crate) limits: ConnectionLimits,
    pub(crate) per_user: UserConnections,
    pub max_frame_bytes: usize,
    pub auth: AuthConfig,
    pub shutdown: watch::Receiver<bool>,
}

/// The relay's routes.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/", get(sync))
        .route("/sync", get(sync))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// The `token` query parameter, for browser clients that cannot set an Authorization header.
/// It is never logged.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(_) => {
            return (
                StatusCode::UPGRADE_REQUIRED,
                "Tandem relay: connect with a websocket (automerge-repo protocol).\n",
            )
                .into_response();
        }
    };
    let identity = match auth::authenticate(
        &headers,
        query.token.as_deref(),
        &state.relay.store,
        state.auth,
    )
    .await
    {
        Ok(identity) => identity,
        Err(refused) => return (StatusCode::UNAUTHORIZED, refused.to_string()).into_response(),
    };
    // Counted from here until the connection ends; over the limit, refused without detail.
    let slot = match &identity {
        Identity::Device(grant) => match state.per_user.acquire(grant.user) {
            Some(slot) => Some(slot),
            None => return StatusCode::TOO_MANY_REQUESTS.into_response(),
        },
        Identity::Anonymous => None,
    };
    let AppState {
        relay,
        limits,
        max_frame_bytes,
        shutdown,
        ..
    } = state;
    upgrade
        .max_message_size(max_frame_bytes)
        .max_frame_size(max_frame_bytes)
        // Small buffers keep an idle connection cheap; frames are written one at a time.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            connection::run(socket, relay, identity, limits, shutdown).await;
            drop(slot);
        })
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<AppState>) -> Response {
    let store = state.relay.store.clone();
    if let Ok(Ok(count)) = tokio::task::spawn_blocking(move || store.document_count()).await {
        state.relay.metrics.documents.set(count as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.relay.metrics.render(),
    )
        .into_response()
}
