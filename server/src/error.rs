//! The relay's error type. Handlers turn it into responses that never leak internals.

use tandem_core::DocumentId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("relay database: {0}")]
    Sqlite(#[from] rusqlite::Error),

    #[error("relay database (PostgreSQL): {0}")]
    Postgres(#[from] postgres::Error),

    /// A stored value of an unexpected type or shape.
    #[error("relay database: {0}")]
    Column(String),

    #[error("the relay database has schema version {found}, newer than this release's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },

    #[error("stored document {document} is damaged: {reason}")]
    Corrupt {
        document: DocumentId,
        reason: String,
    },

    #[error("invalid configuration: {0}")]
    Config(String),

    #[error(transparent)]
    Core(#[from] tandem_core::Error),

    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// A uniqueness (or other constraint) violation, on either database: what an administrator
    /// adding something that exists gets.
    pub fn is_constraint_violation(&self) -> bool {
        match self {
            Self::Sqlite(rusqlite::Error::SqliteFailure(code, _)) => {
                code.code == rusqlite::ErrorCode::ConstraintViolation
            }
            Self::Postgres(e) => e.code().is_some_and(|code| {
                *code == postgres::error::SqlState::UNIQUE_VIOLATION
                    || *code == postgres::error::SqlState::FOREIGN_KEY_VIOLATION
            }),
            _ => false,
        }
    }
}
