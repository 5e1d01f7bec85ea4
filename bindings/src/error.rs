//! The one error the apps see: a few variants, each one something an app can act on.
//!
//! The core's rich [`tandem_core::Error`] is converted here, in one place. Kotlin sees
//! `ApiException.InvalidInput(reason)` and so on, Swift `ApiError.InvalidInput(reason:)`, Python
//! `ApiError.InvalidInput`.

use std::any::Any;

/// What went wrong, grouped by what the app can do about it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ApiError {
    /// The call's arguments were refused (an empty title, progress above 100, a malformed id or
    /// date, bytes that are not a Tandem document). Nothing was changed: fix the input.
    #[error("invalid input: {reason}")]
    InvalidInput { reason: String },

    /// The plan, session, goal or other item named does not exist on this device (yet: it may
    /// arrive with the next sync).
    #[error("not found: {reason}")]
    NotFound { reason: String },

    /// The local database failed or holds damaged data: disk full, read-only file, a database
    /// written by a newer release. Tell the user; retrying may help once space is freed.
    #[error("storage error: {reason}")]
    Storage { reason: String },

    /// The relay refused this user or device (bad, expired or revoked token, no access to the
    /// document). Ask the user to sign in again.
    #[error("access denied: {reason}")]
    AccessDenied { reason: String },

    /// The relay could not be reached. Local edits are kept and sync resumes when it can.
    #[error("offline: {reason}")]
    Offline { reason: String },

    /// Anything else, including a bug inside the engine (a caught panic). The message is for
    /// logs, not for users.
    #[error("{reason}")]
    Other { reason: String },
}

pub type ApiResult<T> = Result<T, ApiError>;

impl From<tandem_core::Error> for ApiError {
    fn from(error: tandem_core::Error) -> Self {
        use tandem_core::Error as E;
        let reason = error.to_string();
        match error {
            E::Invalid(_) | E::Malformed(_) => Self::InvalidInput { reason },
            E::NotFound(_) => Self::NotFound { reason },
            E::Storage(_) | E::Corrupt { .. } | E::SchemaTooNew { .. } | E::WrongKey { .. } => {
                Self::Storage { reason }
            }
            E::Automerge(_) | E::Protocol(_) => Self::Other { reason },
        }
    }
}

impl From<tandem_core::client::ClientError> for ApiError {
    fn from(error: tandem_core::client::ClientError) -> Self {
        use tandem_core::client::ClientError as E;
        let reason = error.to_string();
        match error {
            E::Refused(_) => Self::AccessDenied { reason },
            // Timed out or stopped: either way the relay has not got everything yet.
            E::TimedOut { .. } | E::Stopped => Self::offline(reason),
        }
    }
}

impl ApiError {
    pub(crate) fn offline(reason: impl Into<String>) -> Self {
        Self::Offline {
            reason: reason.into(),
        }
    }

    /// The sync task panicked or was cancelled.
    pub(crate) fn from_join(error: tokio::task::JoinError) -> Self {
        match error.try_into_panic() {
            Ok(payload) => Self::from_panic(payload),
            Err(error) => Self::Other {
                reason: format!("the sync task was cancelled: {error}"),
            },
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: reason.into(),
        }
    }

    /// A panic caught inside the engine, as the error the app receives instead of a crash.
    pub(crate) fn from_panic(payload: Box<dyn Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Self::Other {
            reason: format!("internal error in the Tandem engine: {message}"),
        }
    }
}
