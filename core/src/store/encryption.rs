//! Encryption at rest: the whole database file (pages, WAL and indexes) encrypted by SQLCipher
//! with a key the app keeps in the platform's Keychain or Keystore.
//!
//! Built only with the `encryption` feature, which switches the bundled SQLite to SQLCipher
//! (rusqlite's `bundled-sqlcipher`, linked against the system's libcrypto). Without the feature a
//! key is refused rather than ignored: a store the app believes encrypted is never written in
//! plain text.

use std::fmt;

use rusqlite::Connection;

use crate::error::{Error, Result};

/// A 256-bit key for the device database. Its `Debug` never prints the key.
#[derive(Clone, PartialEq, Eq)]
pub struct EncryptionKey([u8; 32]);

impl EncryptionKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A key from the 32 raw bytes the app stored (for example in the Keychain).
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::invalid(format!(
                "an encryption key has 32 bytes, not {}",
                bytes.len()
            ))
        })?;
        Ok(Self(bytes))
    }

    /// A fresh random key, for an app creating its store for the first time.
    pub fn random() -> Self {
        use rand::RngExt;
        Self(rand::rng().random())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

/// Gives SQLCipher the key. Must run before anything else touches the file; the first read
/// afterwards (in [`verify`]) tells whether the key was right.
#[cfg(feature = "encryption")]
pub(crate) fn apply(conn: &Connection, key: &EncryptionKey) -> Result<()> {
    use std::fmt::Write as _;
    // A raw key (`x'…'`) skips SQLCipher's passphrase derivation: the app's key is already
    // random, so stretching it would only slow every open.
    let mut pragma = String::with_capacity(2 * 32 + 3);
    pragma.push_str("x'");
    for byte in key.as_bytes() {
        let _ = write!(pragma, "{byte:02X}");
    }
    pragma.push('\'');
    conn.pragma_update(None, "key", &pragma)?;
    Ok(())
}

#[cfg(not(feature = "encryption"))]
pub(crate) fn apply(_conn: &Connection, _key: &EncryptionKey) -> Result<()> {
    Err(Error::invalid(
        "this build has no encryption at rest: build tandem-core with the `encryption` feature",
    ))
}

/// Reads the schema once, so a wrong key (or a missing one for an encrypted file) fails here with
/// a clear error, before any write could touch the file.
pub(crate) fn verify(conn: &Connection, keyed: bool) -> Result<()> {
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    }) {
        Ok(_) => Ok(()),
        Err(rusqlite::Error::SqliteFailure(error, _))
            if error.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(Error::WrongKey { keyed })
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::UserId;
    use crate::repo::{Repo, RepoConfig};

    fn config(key: Option<EncryptionKey>) -> RepoConfig {
        let mut config = RepoConfig::new(UserId::from("carla"), "Carla's phone");
        config.key = key;
        config
    }

    #[test]
    fn a_key_that_is_not_32_bytes_is_refused() {
        assert!(matches!(
            EncryptionKey::from_slice(&[0; 16]),
            Err(Error::Invalid(_))
        ));
        assert_eq!(
            format!("{:?}", EncryptionKey::random()),
            "EncryptionKey(..)",
            "Debug never shows the key"
        );
    }

    #[cfg(not(feature = "encryption"))]
    #[test]
    fn without_the_feature_a_key_is_refused_rather_than_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("device.db");
        let error = Repo::open(&path, config(Some(EncryptionKey::random()))).unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error}");
    }

    #[cfg(feature = "encryption")]
    mod sqlcipher {
        use std::path::{Path, PathBuf};

        use super::*;
        use crate::model::NewNotes;
        use crate::{DocumentId, NotesId, PlanId};

        const SECRET: &str = "MARKER-7f3a: worried about losing the scholarship";

        /// Writes a private note holding [`SECRET`] and closes the store.
        fn write_secret(path: &Path, key: Option<EncryptionKey>) -> NotesId {
            let mut repo = Repo::open(path, config(key)).unwrap();
            repo.create_private_notes(NewNotes {
                coach: UserId::from("carla"),
                mentee: UserId::from("ana"),
                plan: PlanId(DocumentId::random()),
                text: SECRET.into(),
            })
            .unwrap()
        }

        /// Every byte SQLite keeps for the store: the database, its WAL and shared-memory files.
        fn files_of(path: &Path) -> Vec<(PathBuf, Vec<u8>)> {
            ["", "-wal", "-shm"]
                .iter()
                .map(|suffix| PathBuf::from(format!("{}{suffix}", path.display())))
                .filter(|file| file.exists())
                .map(|file| {
                    let bytes = std::fs::read(&file).unwrap();
                    (file, bytes)
                })
                .collect()
        }

        fn contains(haystack: &[u8], needle: &str) -> bool {
            haystack
                .windows(needle.len())
                .any(|window| window == needle.as_bytes())
        }

        #[test]
        fn the_database_files_do_not_contain_a_note_in_plain_text() {
            let dir = tempfile::tempdir().unwrap();

            // The control: without a key the note is on disk as written, so the search can find it.
            let plain = dir.path().join("plain.db");
            write_secret(&plain, None);
            assert!(
                files_of(&plain)
                    .iter()
                    .any(|(_, bytes)| contains(bytes, SECRET)),
                "an unencrypted store holds the note in plain text"
            );

            let encrypted = dir.path().join("encrypted.db");
            let key = EncryptionKey::random();
            let notes = write_secret(&encrypted, Some(key.clone()));
            for (file, bytes) in files_of(&encrypted) {
                assert!(
                    !contains(&bytes, SECRET),
                    "{} holds the note",
                    file.display()
                );
                assert!(
                    !contains(&bytes, "SQLite format 3"),
                    "{} has a plain header",
                    file.display()
                );
            }

            let mut reopened = Repo::open(&encrypted, config(Some(key))).unwrap();
            assert_eq!(reopened.private_notes(notes).unwrap().text, SECRET);
        }

        #[test]
        fn a_wrong_or_missing_key_is_a_clear_error_and_changes_nothing() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("device.db");
            let key = EncryptionKey::random();
            let notes = write_secret(&path, Some(key.clone()));
            let before = files_of(&path);

            let wrong = Repo::open(&path, config(Some(EncryptionKey::random()))).unwrap_err();
            assert!(matches!(wrong, Error::WrongKey { keyed: true }), "{wrong}");
            let missing = Repo::open(&path, config(None)).unwrap_err();
            assert!(
                matches!(missing, Error::WrongKey { keyed: false }),
                "{missing}"
            );
            assert_eq!(
                files_of(&path),
                before,
                "failed opens leave the files as they were"
            );

            let mut repo = Repo::open(&path, config(Some(key))).unwrap();
            assert_eq!(repo.private_notes(notes).unwrap().text, SECRET);
        }
    }
}
