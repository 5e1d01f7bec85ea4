//! The relay's error type. Handlers turn it into responses that never leak internals.

use tandem_core::DocumentId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("relay database: {0}")]
    Sqlite(#[from] rusqlite::Error),

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
