//! Which database a relay (or the admin command) uses: the SQLite file under `--data`, or the
//! PostgreSQL database of `--database postgres://…`.

use std::path::PathBuf;
use std::sync::Arc;

use super::sql::Sql;
use super::{PostgresStore, RelayStore, SqliteStore};
use crate::error::{Error, Result};

/// Where the relay's database is.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseLocation {
    /// A SQLite file (created if missing, with its folder).
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL.
    Postgres(String),
}

impl std::fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
    }
}

/// Shown in logs and errors: a PostgreSQL URL without its password.
impl std::fmt::Display for DatabaseLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(path) => write!(f, "{}", path.display()),
            Self::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl DatabaseLocation {
    /// `--database` if given (it must be a `postgres://` or `postgresql://` URL), else the SQLite
    /// file `relay.sqlite` in the data folder.
    pub fn new(database: Option<&str>, data: &std::path::Path) -> Result<Self> {
        match database {
            None => Ok(Self::Sqlite(data.join("relay.sqlite"))),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(Self::Postgres(url.to_owned()))
            }
            Some(other) => Err(Error::Config(format!(
                "--database {:?}: expected a postgres:// URL (without --database the relay uses \
                 the SQLite file in --data)",
                redacted(other)
            ))),
        }
    }
}

/// `url` with the password of its user-info part replaced by `***`.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(end) => rest.split_at(end),
        None => (rest, ""),
    };
    // The last `@` ends the user info (a password may itself hold `@`, percent-encoded or not).
    let Some((user_info, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let user = match user_info.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => user_info.to_owned(),
    };
    // A password in the query string (`?password=…`) is hidden too.
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{user}@{host}{tail}")
}

/// An open relay database of either kind.
#[derive(Debug)]
pub enum Database {
    Sqlite(SqliteStore),
    Postgres(Box<PostgresStore>),
}

impl Database {
    /// Opens (creating if needed) the database and brings its schema up to date. Blocking.
    pub fn open(location: &DatabaseLocation) -> Result<Self> {
        match location {
            DatabaseLocation::Sqlite(path) => {
                if let Some(folder) = path.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                Ok(Self::Sqlite(SqliteStore::open(path)?))
            }
            DatabaseLocation::Postgres(url) => {
                Ok(Self::Postgres(Box::new(PostgresStore::open(url)?)))
            }
        }
    }

    /// Runs `f` in one transaction, committed if it succeeds.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        match self {
            Self::Sqlite(store) => store.transaction(f),
            Self::Postgres(store) => store.transaction(f),
        }
    }

    pub fn into_relay_store(self) -> Arc<dyn RelayStore> {
        match self {
            Self::Sqlite(store) => Arc::new(store),
            Self::Postgres(store) => Arc::new(*store),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redacted("postgres://tandem:s3cr@t@db.example:5432/relay?sslmode=disable"),
            "postgres://tandem:***@db.example:5432/relay?sslmode=disable"
        );
        assert_eq!(
            redacted("postgresql://relay@localhost/relay?password=hunter2&application_name=x"),
            "postgresql://relay@localhost/relay?password=***&application_name=x"
        );
        assert_eq!(
            redacted("postgres://localhost/relay"),
            "postgres://localhost/relay"
        );
        let location =
            DatabaseLocation::new(Some("postgres://u:pw@h/d"), std::path::Path::new("data"))
                .unwrap();
        assert!(!format!("{location} {location:?}").contains("pw"));
        let error =
            DatabaseLocation::new(Some("mysql://u:pw@h/d"), std::path::Path::new("d")).unwrap_err();
        assert!(!error.to_string().contains("pw"), "{error}");
    }
}
