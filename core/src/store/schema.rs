//! The store's schema: numbered migrations under `core/migrations/`, tracked by `PRAGMA
//! user_version`.
//!
//! Version `n` is the database after migrations `1..=n` ran. Each migration runs in its own
//! transaction together with the `user_version` bump, so a crash mid-upgrade leaves the file at
//! the previous version, and the next open resumes from there. Migrations are never edited once
//! released: a change to the schema is a new file.

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The migrations, in order; the file name's number is the version it produces.
const MIGRATIONS: &[&str] = &[
    include_str!("../../migrations/001_initial.sql"),
    include_str!("../../migrations/002_projection.sql"),
    include_str!("../../migrations/003_outbox.sql"),
];

/// The schema version this release creates and understands.
pub const VERSION: i64 = MIGRATIONS.len() as i64;

/// The schema version of an open database (0 for a new, empty file).
pub fn user_version(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "user_version", |row| row.get(0))?)
}

/// Brings the database to [`VERSION`]. A database from a newer release is refused, untouched.
pub(crate) fn migrate(conn: &mut Connection) -> Result<()> {
    upgrade_to(conn, VERSION)
}

/// Applies the migrations after the database's version up to `target`.
fn upgrade_to(conn: &mut Connection, target: i64) -> Result<()> {
    let found = user_version(conn)?;
    if found > VERSION {
        return Err(Error::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for version in found + 1..=target {
        upgrade_from(conn, version - 1)?;
    }
    Ok(())
}

/// Runs the one migration that takes the database from `version` to `version + 1`.
fn upgrade_from(conn: &mut Connection, version: i64) -> Result<()> {
    let sql = usize::try_from(version)
        .ok()
        .and_then(|index| MIGRATIONS.get(index))
        .ok_or_else(|| Error::invalid(format!("no migration from schema version {version}")))?;
    let tx = conn.transaction()?;
    tx.execute_batch(sql)?;
    tx.pragma_update(None, "user_version", version + 1)?;
    tx.commit()?;
    tracing::info!(to = version + 1, "store schema upgraded");
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreConfig};

    /// Every schema object, with whitespace collapsed so formatting does not matter.
    fn normalized_schema(conn: &Connection) -> Vec<(String, String, String, String)> {
        let mut statement = conn
            .prepare(
                "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
                 WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name",
            )
            .unwrap();
        statement
            .query_map([], |row| {
                let sql: String = row.get(3)?;
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    sql.split_whitespace().collect::<Vec<_>>().join(" "),
                ))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn a_database_upgraded_from_every_earlier_version_equals_a_fresh_one() {
        let dir = tempfile::tempdir().unwrap();
        let fresh_path = dir.path().join("fresh.db");
        drop(Store::open(&fresh_path, StoreConfig::default()).unwrap());
        let fresh = Connection::open(&fresh_path).unwrap();
        assert_eq!(user_version(&fresh).unwrap(), VERSION);
        let expected = normalized_schema(&fresh);
        assert!(expected.iter().any(|(_, name, _, _)| name == "milestones"));

        for old in 0..VERSION {
            let path = dir.path().join(format!("from-{old}.db"));
            let mut conn = Connection::open(&path).unwrap();
            upgrade_to(&mut conn, old).unwrap();
            assert_eq!(user_version(&conn).unwrap(), old);
            drop(conn);

            drop(Store::open(&path, StoreConfig::default()).unwrap());
            let upgraded = Connection::open(&path).unwrap();
            assert_eq!(user_version(&upgraded).unwrap(), VERSION, "from {old}");
            assert_eq!(
                normalized_schema(&upgraded),
                expected,
                "upgraded from {old}"
            );
        }
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(Store::open(&path, StoreConfig::default()).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        let before = normalized_schema(&conn);
        drop(conn);

        let error = Store::open(&path, StoreConfig::default()).unwrap_err();
        assert!(
            matches!(error, Error::SchemaTooNew { found, supported }
                if found == VERSION + 1 && supported == VERSION),
            "{error:?}"
        );
        let conn = Connection::open(&path).unwrap();
        assert_eq!(user_version(&conn).unwrap(), VERSION + 1);
        assert_eq!(normalized_schema(&conn), before);
    }

    #[test]
    fn a_failed_migration_leaves_the_previous_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        upgrade_to(&mut conn, 1).unwrap();
        // Make migration 2 fail halfway: its first table already exists.
        conn.execute_batch("CREATE TABLE plans (x)").unwrap();
        assert!(matches!(migrate(&mut conn), Err(Error::Storage(_))));
        assert_eq!(user_version(&conn).unwrap(), 1);
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'plan_coaches'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0, "nothing of migration 2 is left behind");
    }
}
