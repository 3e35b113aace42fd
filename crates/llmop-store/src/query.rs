//! Read-only SQL over the records, for `llmop query` and the admin API.
//!
//! Read-only is enforced by the database, not by inspecting the text: on SQLite the
//! query runs on its own connection with `PRAGMA query_only`; on PostgreSQL inside a
//! `READ ONLY` transaction with a `statement_timeout`. Either way a write fails with the
//! database's own error and changes nothing. Results are capped at a row limit and a time
//! limit.

use crate::store::{Backend, Store, StoreError};
use serde::Serialize;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Column, Connection, Executor, Row};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
    /// More rows existed than `max_rows`; the rest were not read.
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("query refused: {0}")]
    Refused(String),
    #[error("query failed: {0}")]
    Failed(String),
    #[error("query did not finish within {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cell as JSON: integers, reals, text, or null.
fn cell(row: &AnyRow, i: usize) -> Value {
    if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<String>, _>(i) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<bool>, _>(i) {
        return v.map_or(Value::Null, Value::from);
    }
    if let Ok(v) = row.try_get::<Option<Vec<u8>>, _>(i) {
        return v.map_or(Value::Null, |b| Value::from(format!("<{} bytes>", b.len())));
    }
    Value::Null
}

/// Statements refused before they reach the database. The database enforces read-only
/// (a write fails with its own error and changes nothing), but these act outside it:
/// `VACUUM INTO '<path>'` creates its file before failing, `ATTACH` opens or creates
/// one, and a `PRAGMA` could switch the read-only guard itself off.
const REFUSED_STATEMENTS: &[&str] = &["vacuum", "attach", "detach", "pragma"];

/// Refuses a statement whose first keyword (after comments) acts outside the database.
fn check_statement(sql: &str) -> Result<(), QueryError> {
    let mut rest = sql.trim_start();
    loop {
        if let Some(r) = rest.strip_prefix("--") {
            rest = r
                .split_once('\n')
                .map_or("", |(_, after)| after)
                .trim_start();
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r
                .split_once("*/")
                .map_or("", |(_, after)| after)
                .trim_start();
        } else {
            break;
        }
    }
    let first: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphabetic())
        .collect::<String>()
        .to_ascii_lowercase();
    if REFUSED_STATEMENTS.contains(&first.as_str()) {
        Err(QueryError::Refused(format!(
            "`{}` acts outside the records: only reads run here",
            first.to_ascii_uppercase()
        )))
    } else {
        Ok(())
    }
}

impl Store {
    /// Runs one read-only statement; returns at most `max_rows` rows.
    pub async fn query_readonly(
        &self,
        sql: &str,
        max_rows: usize,
        timeout: Duration,
    ) -> Result<QueryResult, QueryError> {
        let sql = sql.trim().trim_end_matches(';').trim();
        if sql.is_empty() {
            return Err(QueryError::Refused("empty query".into()));
        }
        if sql.contains(';') {
            return Err(QueryError::Refused("one statement at a time".into()));
        }
        check_statement(sql)?;
        let ms = timeout.as_millis() as u64;
        let work = async {
            let table = match self.backend() {
                Backend::Sqlite if !self.url().contains(":memory:") => {
                    // Its own connection, opened read-only: nothing it does can write, and
                    // abandoning it at the time limit leaves the write pool untouched.
                    let ro = self.url().replace("mode=rwc", "mode=ro");
                    let mut conn = AnyConnection::connect(&ro)
                        .await
                        .map_err(StoreError::from)?;
                    conn.execute("PRAGMA query_only = ON")
                        .await
                        .map_err(StoreError::from)?;
                    let r = fetch(&mut conn, sql, max_rows).await;
                    let _ = conn.close().await;
                    from_rows(r?)
                }
                Backend::Sqlite => {
                    // In-memory stores (tests) have one connection: guard it, then restore.
                    let mut conn = self.pool().acquire().await.map_err(StoreError::from)?;
                    conn.execute("PRAGMA query_only = ON")
                        .await
                        .map_err(StoreError::from)?;
                    let r = fetch(&mut *conn, sql, max_rows).await;
                    conn.execute("PRAGMA query_only = OFF")
                        .await
                        .map_err(StoreError::from)?;
                    from_rows(r?)
                }
                Backend::Postgres => {
                    // sqlx's Any driver cannot decode NUMERIC (what SUM and AVG return), so
                    // each row comes back as one JSON text, column order kept.
                    let wrapped = format!("SELECT row_to_json(q)::text AS row FROM ({sql}) AS q");
                    let mut conn = AnyConnection::connect(self.url())
                        .await
                        .map_err(StoreError::from)?;
                    let mut tx = conn.begin().await.map_err(StoreError::from)?;
                    tx.execute("SET TRANSACTION READ ONLY")
                        .await
                        .map_err(StoreError::from)?;
                    tx.execute(format!("SET LOCAL statement_timeout = {ms}").as_str())
                        .await
                        .map_err(StoreError::from)?;
                    let r = fetch(&mut *tx, &wrapped, max_rows).await;
                    let _ = tx.rollback().await;
                    let _ = conn.close().await;
                    from_json_rows(r?)?
                }
            };
            Ok::<_, QueryError>(table)
        };
        let (columns, mut rows) = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| QueryError::Timeout(ms))??;
        let truncated = rows.len() > max_rows;
        rows.truncate(max_rows);
        Ok(QueryResult {
            columns,
            rows,
            truncated,
        })
    }
}

type Table = (Vec<String>, Vec<Vec<Value>>);

fn from_rows(rows: Vec<AnyRow>) -> Table {
    let columns = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let rows = rows
        .iter()
        .map(|r| (0..r.columns().len()).map(|i| cell(r, i)).collect())
        .collect();
    (columns, rows)
}

fn from_json_rows(rows: Vec<AnyRow>) -> Result<Table, QueryError> {
    let mut columns = Vec::new();
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let text: String = r
            .try_get(0)
            .map_err(|e| QueryError::Failed(e.to_string()))?;
        let obj: serde_json::Map<String, Value> =
            serde_json::from_str(&text).map_err(|e| QueryError::Failed(e.to_string()))?;
        if columns.is_empty() {
            columns = obj.keys().cloned().collect();
        }
        out.push(obj.into_iter().map(|(_, v)| v).collect());
    }
    Ok((columns, out))
}

/// Reads up to `max_rows + 1` rows (the extra one tells whether there were more).
async fn fetch<'c, E>(exec: E, sql: &str, max_rows: usize) -> Result<Vec<AnyRow>, QueryError>
where
    E: Executor<'c, Database = sqlx::Any>,
{
    use futures_util::TryStreamExt;
    let mut out = Vec::new();
    let mut stream = exec.fetch(sql);
    while let Some(row) = stream
        .try_next()
        .await
        .map_err(|e| QueryError::Failed(e.to_string()))?
    {
        out.push(row);
        if out.len() > max_rows {
            break;
        }
    }
    Ok(out)
}
