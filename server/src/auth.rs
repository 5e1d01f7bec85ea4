//! Who is connecting. Every websocket upgrade passes through [`authenticate`], the one place where
//! the relay decides whether a connection may start and as whom.

use std::fmt;

use axum::http::HeaderMap;

/// The identity a connection was admitted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials were checked. Only for relays that accept anonymous peers.
    Anonymous,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("anonymous"),
        }
    }
}

/// Why an upgrade was refused. The message is safe to show to the client.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub &'static str);

/// Decides whether an upgrade request may connect, from its headers and `token` query parameter.
///
/// The relay does not yet have user accounts, so every connection is anonymous.
pub fn authenticate(_headers: &HeaderMap, _token: Option<&str>) -> Result<Identity, Refused> {
    Ok(Identity::Anonymous)
}
