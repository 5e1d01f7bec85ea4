//! One narrow SQL seam over both relay databases, for the code that is the same on each (the
//! account functions of [`crate::accounts`]): statements with `?1`-style placeholders (rewritten to
//! `$1` for PostgreSQL), a few parameter kinds, and rows read by column as plain values.
//!
//! The hot paths (appending chunks, loading documents) do not go through it: each backend keeps
//! its own prepared statements there.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// A statement parameter. Flags are `INTEGER` 0/1 in SQLite and `BOOLEAN` in PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(i64),
    MaybeInt(Option<i64>),
    Text(&'a str),
    Bytes(&'a [u8]),
    MaybeBytes(Option<&'a [u8]>),
    Flag(bool),
}

/// One column's value as read.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Flag(bool),
}

/// One result row.
#[derive(Debug, Clone)]
pub struct SqlRow(Vec<Cell>);

impl SqlRow {
    fn cell(&self, column: usize) -> Result<&Cell> {
        self.0
            .get(column)
            .ok_or_else(|| Error::Column(format!("no column {column}")))
    }

    fn mismatch(column: usize, wanted: &str, found: &Cell) -> Error {
        Error::Column(format!(
            "column {column}: expected {wanted}, found {found:?}"
        ))
    }

    pub fn int(&self, column: usize) -> Result<i64> {
        match self.cell(column)? {
            Cell::Int(value) => Ok(*value),
            other => Err(Self::mismatch(column, "an integer", other)),
        }
    }

    pub fn maybe_int(&self, column: usize) -> Result<Option<i64>> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            _ => self.int(column).map(Some),
        }
    }

    pub fn text(&self, column: usize) -> Result<String> {
        match self.cell(column)? {
            Cell::Text(value) => Ok(value.clone()),
            other => Err(Self::mismatch(column, "text", other)),
        }
    }

    pub fn maybe_text(&self, column: usize) -> Result<Option<String>> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            _ => self.text(column).map(Some),
        }
    }

    pub fn bytes(&self, column: usize) -> Result<Vec<u8>> {
        match self.cell(column)? {
            Cell::Bytes(value) => Ok(value.clone()),
            other => Err(Self::mismatch(column, "bytes", other)),
        }
    }

    pub fn maybe_bytes(&self, column: usize) -> Result<Option<Vec<u8>>> {
        match self.cell(column)? {
            Cell::Null => Ok(None),
            _ => self.bytes(column).map(Some),
        }
    }

    pub fn flag(&self, column: usize) -> Result<bool> {
        match self.cell(column)? {
            Cell::Flag(value) => Ok(*value),
            Cell::Int(value) => Ok(*value != 0),
            other => Err(Self::mismatch(column, "a flag", other)),
        }
    }
}

/// A transaction on either database. Statements are written once, with `?1`, `?2`, …
/// placeholders; each backend binds them its own way.
pub trait Sql {
    /// Runs a statement; the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64>;

    /// Every row a query returns.
    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<SqlRow>>;

    /// The first row a query returns, if any.
    fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<SqlRow>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// The one row a query must return.
    fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<SqlRow> {
        self.query_opt(sql, params)?
            .ok_or_else(|| Error::Column("a query returned no row".into()))
    }
}

/// A SQLite transaction (or connection) as [`Sql`].
#[derive(Debug)]
pub struct SqliteSql<'a>(pub &'a rusqlite::Connection);

impl rusqlite::ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Int(value) => value.to_sql(),
            Self::MaybeInt(value) => value.to_sql(),
            Self::Text(value) => value.to_sql(),
            Self::Bytes(value) => value.to_sql(),
            Self::MaybeBytes(value) => value.to_sql(),
            Self::Flag(value) => value.to_sql(),
        }
    }
}

impl Sql for SqliteSql<'_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let changed = self
            .0
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params))?;
        Ok(changed as u64)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<SqlRow>> {
        let mut statement = self.0.prepare_cached(sql)?;
        let columns = statement.column_count();
        let rows = statement.query_map(rusqlite::params_from_iter(params), |row| {
            let mut cells = Vec::with_capacity(columns);
            for column in 0..columns {
                use rusqlite::types::ValueRef;
                cells.push(match row.get_ref(column)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(value) => Cell::Int(value),
                    ValueRef::Real(value) => Cell::Text(value.to_string()),
                    ValueRef::Text(text) => Cell::Text(String::from_utf8_lossy(text).into_owned()),
                    ValueRef::Blob(bytes) => Cell::Bytes(bytes.to_vec()),
                });
            }
            Ok(SqlRow(cells))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// A PostgreSQL transaction as [`Sql`].
pub struct PostgresSql<'a, 'b>(pub &'a mut postgres::Transaction<'b>);

impl std::fmt::Debug for PostgresSql<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PostgresSql")
    }
}

/// `?1` → `$1`: the one placeholder difference between the two dialects as this crate writes them
/// (no statement holds a `?` anywhere else).
pub fn postgres_placeholders(sql: &str) -> Cow<'_, str> {
    if sql.contains('?') {
        Cow::Owned(sql.replace('?', "$"))
    } else {
        Cow::Borrowed(sql)
    }
}

fn postgres_params<'p>(params: &'p [Param<'_>]) -> Vec<&'p (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|param| -> &(dyn postgres::types::ToSql + Sync) {
            match param {
                Param::Int(value) => value,
                Param::MaybeInt(value) => value,
                Param::Text(value) => value,
                Param::Bytes(value) => value,
                Param::MaybeBytes(value) => value,
                Param::Flag(value) => value,
            }
        })
        .collect()
}

fn postgres_row(row: &postgres::Row) -> Result<SqlRow> {
    use postgres::types::Type;
    let mut cells = Vec::with_capacity(row.len());
    for (index, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(index)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(index)?
                .map(|value| Cell::Int(value.into()))
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(index)?
                .map(|value| Cell::Int(value.into()))
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(index)?.map(Cell::Flag)
        } else if *ty == Type::BYTEA {
            row.try_get::<_, Option<Vec<u8>>>(index)?.map(Cell::Bytes)
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME {
            row.try_get::<_, Option<String>>(index)?.map(Cell::Text)
        } else {
            return Err(Error::Column(format!(
                "column {index} ({}) has type {ty}, which the relay does not read",
                column.name()
            )));
        };
        cells.push(cell.unwrap_or(Cell::Null));
    }
    Ok(SqlRow(cells))
}

impl Sql for PostgresSql<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64> {
        let sql = postgres_placeholders(sql);
        Ok(self.0.execute(sql.as_ref(), &postgres_params(params))?)
    }

    fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<SqlRow>> {
        let sql = postgres_placeholders(sql);
        self.0
            .query(sql.as_ref(), &postgres_params(params))?
            .iter()
            .map(postgres_row)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_dollars_for_postgres() {
        assert_eq!(
            postgres_placeholders("UPDATE t SET a = ?2 WHERE id = ?1 AND ?10 IS NULL"),
            "UPDATE t SET a = $2 WHERE id = $1 AND $10 IS NULL"
        );
        assert!(matches!(
            postgres_placeholders("SELECT 1"),
            Cow::Borrowed(_)
        ));
    }
}
