//! The core's error type: one enum, with variants grouped by what a caller can do about them.

use crate::ids::DocumentId;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller asked for something the domain does not allow (progress above 100, an empty
    /// title, a follow-up before the session). Nothing was changed.
    #[error("invalid input: {0}")]
    Invalid(String),

    /// A document, goal, milestone or other item that the caller named does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// A stored document could not be read back: a damaged or truncated chunk. The document is
    /// named so the app can report it; every other document is unaffected and nothing was deleted.
    #[error("document {document} is damaged: {reason}")]
    Corrupt {
        document: DocumentId,
        reason: String,
    },

    /// A document's bytes or structure are not what Tandem expects (bad Automerge bytes, the wrong
    /// kind of document, a field of the wrong type).
    #[error("malformed document: {0}")]
    Malformed(String),

    /// The local database failed: disk full, read-only file, locked, or an I/O error.
    #[error("storage error: {0}")]
    Storage(#[from] rusqlite::Error),

    /// The database file was written by a newer release of Tandem than this one.
    #[error("the database has schema version {found}, newer than this release's {supported}")]
    SchemaTooNew { found: i64, supported: i64 },

    /// The database file could not be read with the key given: the key is wrong, or the file is
    /// encrypted and no key was given (`keyed` says which). Nothing was changed.
    #[error("{}", if *keyed {
        "the encryption key does not open this database"
    } else {
        "this database is encrypted (or not a database): open it with its key"
    })]
    WrongKey { keyed: bool },

    /// Automerge refused an operation.
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),

    /// A peer sent something the sync protocol does not allow.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::Malformed(message.into())
    }

    pub fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(message.into())
    }
}
