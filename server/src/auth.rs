//! Who is connecting. Every websocket upgrade passes through [`authenticate`], the one place where
//! the relay decides whether a connection may start and as whom.
//!
//! A device presents its bearer token as `Authorization: Bearer …` or, for browsers that cannot
//! set headers on a websocket, as the `token` query parameter. Neither is ever logged.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderMap, header};

use crate::accounts::{Grant, hex, now_millis};
use crate::store::RelayStore;

/// The identity a connection was admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were checked: only on relays started with `--allow-anonymous`.
    Anonymous,
    /// A valid token of this user and device.
    Device(Grant),
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
            Self::Device(grant) => write!(
                f,
                "{} (device {}, token {})",
                grant.user_name,
                hex(&grant.device_id),
                grant.token
            ),
        }
    }
}

/// Why an upgrade was refused. The message is safe to show to the client: it never says whether
/// a token exists.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

/// How the relay admits connections.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthConfig {
    /// Connections without a token are admitted as [`Identity::Anonymous`] (development only).
    pub allow_anonymous: bool,
}

/// Decides whether an upgrade request may connect, from its headers and `token` query parameter.
/// Missing, malformed, unknown, expired and revoked tokens are refused alike.
pub async fn authenticate(
    headers: &HeaderMap,
    query_token: Option<&str>,
    store: &Arc<dyn RelayStore>,
    config: AuthConfig,
) -> Result<Identity, Refused> {
    const INVALID: Refused = Refused("invalid or expired token\n");
    let token = match headers.get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value.to_str().map_err(|_| INVALID)?;
            let (scheme, token) = value.split_once(' ').ok_or(INVALID)?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(INVALID);
            }
            token.trim().to_owned()
        }
        None => match query_token {
            Some(token) => token.to_owned(),
            None if config.allow_anonymous => return Ok(Identity::Anonymous),
            None => return Err(Refused("a bearer token is required\n")),
        },
    };
    if token.is_empty() || token.len() > 256 {
        return Err(INVALID);
    }
    let store = store.clone();
    let found = tokio::task::spawn_blocking(move || store.authenticate(&token, now_millis()))
        .await
        .map_err(|_| Refused("authentication failed\n"))?;
    match found {
        Ok(Some(grant)) => Ok(Identity::Device(grant)),
        Ok(None) => Err(INVALID),
        Err(e) => {
            tracing::error!("looking a token up failed: {e}");
            Err(Refused("authentication failed\n"))
        }
    }
}
