//! [`Store`]: the record store over SQLite or PostgreSQL.

use crate::migrate;
use crate::record::{
    decode_cursor, encode_cursor, Feedback, KeptState, ListFilter, Page, Record, StatusFilter,
    DEFAULT_LIMIT, MAX_LIMIT,
};
use crate::sqlite_writer::{Outcome, SqliteWriter};
use sqlx::any::{AnyArguments, AnyPoolOptions, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, AnyPool, Executor, Row};
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid store url `{0}`: expected sqlite://<path> or postgres://…")]
    BadUrl(String),
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migration {version} failed: {message}")]
    Migration { version: i64, message: String },
    #[error("invalid cursor: pass back the `next_cursor` of a previous page")]
    BadCursor,
    #[error("stored record {0} is corrupt: {1}")]
    Corrupt(String, String),
    #[error("spill file: {0}")]
    Spill(String),
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the record writer's SQLite connection is closed")]
    WriterClosed,
    /// Concurrent writers kept taking what this one tried to take.
    #[error("store: {0}")]
    Contended(String),
}

/// Whether the index `name` exists.
async fn index_exists(pool: &AnyPool, backend: Backend, name: &str) -> Result<bool, StoreError> {
    let sql = match backend {
        Backend::Sqlite => "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'index' AND name = $1",
        Backend::Postgres => {
            "SELECT COUNT(*) AS n FROM pg_indexes WHERE schemaname = current_schema() AND indexname = $1"
        }
    };
    let n: i64 = sqlx::query(sql)
        .bind(name.to_string())
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    Ok(n > 0)
}

/// Whether `e` is a unique-key conflict: another writer took the row first.
pub(crate) fn is_conflict(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// How many times a writer that keeps losing a race for the next number looks again.
/// Each round of a race has a winner, so this covers dozens of writers of one feature,
/// dataset or deployment at the same instant: operators' actions, not traffic.
pub(crate) const RACE_ATTEMPTS: u32 = 64;

/// A short random pause (1 ms up to about 25 ms, growing with `attempt`) before a
/// writer that lost a race looks again, so the losers do not collide again in step.
pub(crate) async fn race_pause(attempt: u32) {
    let ms = rand::Rng::gen_range(&mut rand::thread_rng(), 1..=5 + 2 * attempt.min(10));
    tokio::time::sleep(std::time::Duration::from_millis(u64::from(ms))).await;
}

/// Runs `round` until it returns a value: a round that lost a race for the next number
/// returns `None` and the next one starts after [`race_pause`], up to [`RACE_ATTEMPTS`]
/// rounds; an error ends it at once. `what` names what was numbered, for the error.
pub(crate) async fn until_won<T, F, Fut>(what: &str, mut round: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, StoreError>>,
{
    for attempt in 0..RACE_ATTEMPTS {
        if let Some(won) = round().await? {
            return Ok(won);
        }
        race_pause(attempt).await;
    }
    Err(StoreError::Contended(format!(
        "{what}: no version number after {RACE_ATTEMPTS} attempts"
    )))
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Columns in insert order; `SELECT` reads them back by name.
const COLUMNS: &[&str] = &[
    "request_id",
    "created_at_ms",
    "endpoint",
    "env",
    "key_id",
    "user_id",
    "session_id",
    "feature",
    "feature_version",
    "content_hash",
    "arm",
    "shadow",
    "replay_of",
    "route",
    "stream",
    "provider",
    "model",
    "upstream_id",
    "status",
    "error_code",
    "client_disconnected",
    "parse_status",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cost_usd",
    "latency_ms",
    "ttft_ms",
    "tags",
    "attempts",
    "request_params",
    "input_messages",
    "rendered_prompt",
    "output_text",
    "output_tool_calls",
    "parsed_output",
    "feedback_score",
    "feedback_label",
    "feedback_comment",
    "feedback_at_ms",
    "degraded",
    "variables",
    "shadow_of",
    "call_uid",
    "client_request_id",
    "truncated",
    "reasoning_tokens",
    "system_fingerprint",
    "service_tier",
    "upstream_model",
    "stages",
    "online_scores",
    "guardrails",
    "agent",
    "cache",
    "saved_usd",
    "cache_source",
    "cache_write_tokens",
    "baseline_usd",
];

/// Most rows per INSERT statement: 64 rows x 58 columns = 3,712 parameters, under the
/// limits of both SQLite (32,766) and PostgreSQL (65,535).
const ROWS_PER_INSERT: usize = 64;

/// Rows per statement for a batch of `n`: full statements of [`ROWS_PER_INSERT`], then
/// the rest in powers of two (37 = 32 + 4 + 1). A driver caches one prepared statement
/// per distinct text, per connection: with every size from 1 to 99 that cache held up
/// to 99 statements of up to 4,700 parameters on each connection (megabytes of SQLite
/// memory that stayed). Powers of two bound it to 7 shapes for a cost of at most 6
/// extra executions per batch.
pub(crate) fn statement_sizes(mut n: usize) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if n == 0 {
            return None;
        }
        let size = if n >= ROWS_PER_INSERT {
            ROWS_PER_INSERT
        } else {
            1 << (usize::BITS - 1 - n.leading_zeros())
        };
        n -= size;
        Some(size)
    })
}

/// `INSERT ... VALUES (...), (...), ...` for `rows` rows, idempotent on `request_id`.
///
/// SQLite gets positional `?` placeholders: `$N` is a *named* parameter there, and
/// resolving thousands of names per statement made batch inserts slower than single ones.
/// With `returning`, the statement names the rows it stored (`RETURNING request_id`).
fn insert_sql(rows: usize, backend: Backend, returning: bool) -> String {
    let mut sql = format!("INSERT INTO records ({}) VALUES ", COLUMNS.join(", "));
    push_rows(&mut sql, rows, COLUMNS.len(), backend);
    sql.push_str(" ON CONFLICT (request_id) DO NOTHING");
    if returning {
        sql.push_str(" RETURNING request_id");
    }
    sql
}

/// `(?, ?), (?, ?)` (SQLite) or `($1, $2), ($3, $4)` (PostgreSQL): `rows` rows of
/// `cols` placeholders.
fn push_rows(sql: &mut String, rows: usize, cols: usize, backend: Backend) {
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            if c > 0 {
                sql.push_str(", ");
            }
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => {
                    sql.push('$');
                    sql.push_str(&(r * cols + c + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
}

/// The statement text for `rows` rows (one of [`statement_sizes`]), built once per
/// size and backend.
pub(crate) fn batch_insert_sql(rows: usize, backend: Backend, returning: bool) -> &'static str {
    type Shapes = [OnceLock<String>; SHAPES];
    static SQLITE: [Shapes; 2] = [const { [const { OnceLock::new() }; SHAPES] }; 2];
    static POSTGRES: [Shapes; 2] = [const { [const { OnceLock::new() }; SHAPES] }; 2];
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_INSERT);
    let slot = (rows.trailing_zeros() as usize).min(SHAPES - 1);
    let cell = match backend {
        Backend::Sqlite => &SQLITE[usize::from(returning)][slot],
        Backend::Postgres => &POSTGRES[usize::from(returning)][slot],
    };
    cell.get_or_init(|| insert_sql(1 << slot, backend, returning))
}

/// The SQLite writer thread's shape of [`batch_insert_sql`]: `INSERT OR ROLLBACK`, no
/// `ON CONFLICT`. A taken id (or any other failed constraint) ends the whole
/// transaction at once, which is what that thread does with one anyway (it answers
/// [`crate::sqlite_writer`]'s `Outcome::Conflict` and the batch goes the careful way).
/// What it saves: a statement that may fail part-way with `ABORT` (every constraint of
/// the plain `INSERT`, `ON CONFLICT DO NOTHING` included, for `NOT NULL`) inside a
/// transaction makes SQLite keep a statement journal, a copy of every page the
/// statement changes, in case it must undo only itself; with `ROLLBACK` there is
/// nothing to undo but the transaction, and no copy is made.
pub(crate) fn batch_insert_or_rollback_sql(rows: usize) -> &'static str {
    static SHAPED: [OnceLock<String>; SHAPES] = [const { OnceLock::new() }; SHAPES];
    debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_INSERT);
    let slot = (rows.trailing_zeros() as usize).min(SHAPES - 1);
    SHAPED[slot].get_or_init(|| {
        let mut sql = format!(
            "INSERT OR ROLLBACK INTO records ({}) VALUES ",
            COLUMNS.join(", ")
        );
        push_rows(&mut sql, 1 << slot, COLUMNS.len(), Backend::Sqlite);
        sql
    })
}

/// A multi-row `INSERT` of one table, its statement text built once per row count
/// (one of [`statement_sizes`]) and backend, like the records' own.
pub(crate) struct RowsInsert {
    /// `INSERT INTO t (a, b) VALUES`
    head: &'static str,
    cols: usize,
    /// `ON CONFLICT ...`
    tail: &'static str,
    sqlite: [OnceLock<String>; SHAPES],
    postgres: [OnceLock<String>; SHAPES],
}

const SHAPES: usize = ROWS_PER_INSERT.trailing_zeros() as usize + 1;

impl RowsInsert {
    pub(crate) const fn new(head: &'static str, cols: usize, tail: &'static str) -> RowsInsert {
        RowsInsert {
            head,
            cols,
            tail,
            sqlite: [const { OnceLock::new() }; SHAPES],
            postgres: [const { OnceLock::new() }; SHAPES],
        }
    }

    pub(crate) fn sql(&self, rows: usize, backend: Backend) -> &str {
        debug_assert!(rows.is_power_of_two() && rows <= ROWS_PER_INSERT);
        let slot = (rows.trailing_zeros() as usize).min(SHAPES - 1);
        let cell = match backend {
            Backend::Sqlite => &self.sqlite[slot],
            Backend::Postgres => &self.postgres[slot],
        };
        cell.get_or_init(|| {
            let mut sql = format!("{} ", self.head);
            push_rows(&mut sql, 1 << slot, self.cols, backend);
            sql.push(' ');
            sql.push_str(self.tail);
            sql
        })
    }
}

/// Online evaluation work, with its records.
pub(crate) static QUEUE_ROWS: RowsInsert = RowsInsert::new(
    "INSERT INTO online_queue (request_id, feature, evaluators, enqueued_at_ms, attempts, next_at_ms) VALUES",
    6,
    "ON CONFLICT (request_id) DO NOTHING",
);

fn select_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| format!("SELECT {} FROM records", COLUMNS.join(", ")))
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    llmop_core::json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Binding an optional `f64` through sqlx's `Any` driver.
///
/// sqlx 0.8 maps a typed NULL from `Any` to PostgreSQL with `Real` and `Double` crossed:
/// a `None::<f64>` is sent as a NULL `float4`. PostgreSQL fixes a prepared statement's
/// parameter types at its first execution, so once a cached INSERT had first seen a call
/// without a cost, every later row with a cost in that position failed ("incorrect
/// binary data format in bind parameter") and the writer retried forever. A `None` is
/// therefore bound as a `None::<f32>`, which the same crossing turns into the `float8`
/// NULL the column is. (SQLite stores a NULL as a NULL either way.)
pub(crate) trait BindF64<'q> {
    fn bind_f64(self, v: Option<f64>) -> Self;
}

impl<'q> BindF64<'q> for Query<'q, Any, AnyArguments<'q>> {
    fn bind_f64(self, v: Option<f64>) -> Self {
        match v {
            Some(x) => self.bind(x),
            None => self.bind(None::<f32>),
        }
    }
}

/// One value of a row, borrowed from the record where it can be: the same list binds a
/// record through sqlx (PostgreSQL, and SQLite's asking pass) and through the SQLite
/// writer thread's prepared statement, so the column order is written once.
pub(crate) enum Val<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<Cow<'a, str>>),
}

fn text(s: &str) -> Val<'_> {
    Val::Text(Some(Cow::Borrowed(s)))
}

fn opt_text(s: &Option<String>) -> Val<'_> {
    Val::Text(s.as_deref().map(Cow::Borrowed))
}

fn json_val<'a, T: serde::Serialize>(v: &T) -> Val<'a> {
    Val::Text(Some(Cow::Owned(json_text(v))))
}

fn int(v: i64) -> Val<'static> {
    Val::Int(Some(v))
}

/// The values of [`COLUMNS`], in their order.
pub(crate) fn record_values(r: &Record) -> [Val<'_>; COLUMNS.len()] {
    let fb = r.feedback.as_ref();
    [
        text(&r.request_id),
        int(r.created_at_ms),
        text(&r.endpoint),
        opt_text(&r.env),
        opt_text(&r.key_id),
        opt_text(&r.user),
        opt_text(&r.session),
        opt_text(&r.feature),
        Val::Int(r.feature_version),
        opt_text(&r.content_hash),
        opt_text(&r.arm),
        int(r.shadow as i64),
        opt_text(&r.replay_of),
        opt_text(&r.route),
        int(r.stream as i64),
        opt_text(&r.provider),
        opt_text(&r.model),
        opt_text(&r.upstream_id),
        int(r.status as i64),
        opt_text(&r.error_code),
        int(r.client_disconnected as i64),
        opt_text(&r.parse_status),
        Val::Int(r.input_tokens),
        Val::Int(r.output_tokens),
        Val::Int(r.cached_tokens),
        Val::Real(r.cost_usd),
        int(r.latency_ms),
        Val::Int(r.ttft_ms),
        json_val(&r.tags),
        json_val(&r.attempts),
        json_val(&r.request_params),
        json_val(&r.input_messages),
        opt_text(&r.rendered_prompt),
        opt_text(&r.output_text),
        json_val(&r.output_tool_calls),
        Val::Text(r.parsed_output.as_ref().map(|v| Cow::Owned(json_text(v)))),
        Val::Real(fb.and_then(|f| f.score)),
        Val::Text(fb.and_then(|f| f.label.as_deref()).map(Cow::Borrowed)),
        Val::Text(fb.and_then(|f| f.comment.as_deref()).map(Cow::Borrowed)),
        Val::Int(fb.map(|f| f.at_ms)),
        int(r.degraded as i64),
        Val::Text(r.variables.as_ref().map(|v| Cow::Owned(json_text(v)))),
        opt_text(&r.shadow_of),
        Val::Text((!r.call_uid.is_empty()).then_some(Cow::Borrowed(r.call_uid.as_str()))),
        opt_text(&r.client_request_id),
        int(r.truncated as i64),
        Val::Int(r.reasoning_tokens),
        opt_text(&r.system_fingerprint),
        opt_text(&r.service_tier),
        opt_text(&r.upstream_model),
        Val::Text((!r.stages.is_empty()).then(|| Cow::Owned(r.stages.join(",")))),
        Val::Text((!r.online_scores.is_empty()).then(|| Cow::Owned(json_text(&r.online_scores)))),
        Val::Text(
            (!r.guardrails.is_empty())
                .then(|| Cow::Owned(llmop_core::guard::verdicts_json(&r.guardrails))),
        ),
        Val::Text(r.agent.as_ref().map(|a| Cow::Owned(json_text(a)))),
        opt_text(&r.cache),
        Val::Real(r.saved_usd),
        opt_text(&r.cache_source),
        Val::Int(r.cache_write_tokens),
        Val::Real(r.baseline_usd),
    ]
}

/// Binds `vals` in order to an sqlx query (PostgreSQL, and SQLite's asking pass).
pub(crate) fn bind_values<'q, 'v>(
    mut q: Query<'q, Any, AnyArguments<'q>>,
    vals: impl IntoIterator<Item = Val<'v>>,
) -> Query<'q, Any, AnyArguments<'q>> {
    for v in vals {
        q = match v {
            Val::Int(v) => q.bind(v),
            Val::Real(v) => q.bind_f64(v),
            Val::Text(v) => q.bind(v.map(Cow::into_owned)),
        };
    }
    q
}

fn bind_record<'q>(
    q: Query<'q, Any, AnyArguments<'q>>,
    r: &Record,
) -> Query<'q, Any, AnyArguments<'q>> {
    bind_values(q, record_values(r))
}

/// A tool call's kept reasoning state, committed with its record (both drivers).
pub(crate) const KEPT_STATE_INSERT: &str =
    "INSERT INTO reasoning_state (call_id, request_id, created_at_ms, state) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (call_id) DO NOTHING";

fn json_col<T: serde::de::DeserializeOwned>(
    row: &AnyRow,
    id: &str,
    col: &str,
) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text)
        .map_err(|e| StoreError::Corrupt(id.to_string(), format!("{col}: {e}")))
}

fn read_record(row: &AnyRow) -> Result<Record, StoreError> {
    let id: String = row.try_get("request_id")?;
    let parsed: Option<String> = row.try_get("parsed_output")?;
    let variables: Option<String> = row.try_get("variables")?;
    let feedback_at: Option<i64> = row.try_get("feedback_at_ms")?;
    Ok(Record {
        created_at_ms: row.try_get("created_at_ms")?,
        endpoint: row.try_get("endpoint")?,
        env: row.try_get("env")?,
        key_id: row.try_get("key_id")?,
        user: row.try_get("user_id")?,
        session: row.try_get("session_id")?,
        feature: row.try_get("feature")?,
        feature_version: row.try_get("feature_version")?,
        content_hash: row.try_get("content_hash")?,
        arm: row.try_get("arm")?,
        shadow: row.try_get::<i64, _>("shadow")? != 0,
        replay_of: row.try_get("replay_of")?,
        route: row.try_get("route")?,
        stream: row.try_get::<i64, _>("stream")? != 0,
        provider: row.try_get("provider")?,
        model: row.try_get("model")?,
        upstream_id: row.try_get("upstream_id")?,
        status: row.try_get::<i64, _>("status")?.clamp(0, u16::MAX as i64) as u16,
        error_code: row.try_get("error_code")?,
        client_disconnected: row.try_get::<i64, _>("client_disconnected")? != 0,
        parse_status: row.try_get("parse_status")?,
        input_tokens: row.try_get("input_tokens")?,
        output_tokens: row.try_get("output_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        cost_usd: row.try_get("cost_usd")?,
        latency_ms: row.try_get("latency_ms")?,
        ttft_ms: row.try_get("ttft_ms")?,
        tags: json_col(row, &id, "tags")?,
        attempts: json_col(row, &id, "attempts")?,
        request_params: json_col(row, &id, "request_params")?,
        input_messages: json_col(row, &id, "input_messages")?,
        rendered_prompt: row.try_get("rendered_prompt")?,
        output_text: row.try_get("output_text")?,
        output_tool_calls: json_col(row, &id, "output_tool_calls")?,
        parsed_output: match parsed {
            Some(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(id.clone(), format!("parsed_output: {e}")))?,
            ),
            None => None,
        },
        feedback: feedback_at
            .map(|at_ms| -> Result<Feedback, StoreError> {
                Ok(Feedback {
                    score: row.try_get("feedback_score")?,
                    label: row.try_get("feedback_label")?,
                    comment: row.try_get("feedback_comment")?,
                    at_ms,
                })
            })
            .transpose()?,
        degraded: row.try_get::<i64, _>("degraded")? != 0,
        variables: match variables {
            Some(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(id.clone(), format!("variables: {e}")))?,
            ),
            None => None,
        },
        shadow_of: row.try_get("shadow_of")?,
        call_uid: row
            .try_get::<Option<String>, _>("call_uid")?
            .unwrap_or_default(),
        client_request_id: row.try_get("client_request_id")?,
        truncated: row.try_get::<i64, _>("truncated")? != 0,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        system_fingerprint: row.try_get("system_fingerprint")?,
        service_tier: row.try_get("service_tier")?,
        upstream_model: row.try_get("upstream_model")?,
        stages: row
            .try_get::<Option<String>, _>("stages")?
            .map(|s| s.split(',').map(str::to_string).collect())
            .unwrap_or_default(),
        reasoning_state: Vec::new(),
        traceparent: None,
        online_evals: Vec::new(),
        online_scores: match row.try_get::<Option<String>, _>("online_scores")? {
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(id.clone(), format!("online_scores: {e}")))?,
            None => Vec::new(),
        },
        guardrails: match row.try_get::<Option<String>, _>("guardrails")? {
            Some(t) => serde_json::from_str(&t)
                .map_err(|e| StoreError::Corrupt(id.clone(), format!("guardrails: {e}")))?,
            None => Vec::new(),
        },
        cache: row.try_get("cache")?,
        saved_usd: row.try_get("saved_usd")?,
        cache_source: row.try_get("cache_source")?,
        cache_write_tokens: row.try_get("cache_write_tokens")?,
        baseline_usd: row.try_get("baseline_usd")?,
        agent: match row.try_get::<Option<String>, _>("agent")? {
            Some(t) => Some(
                serde_json::from_str(&t)
                    .map_err(|e| StoreError::Corrupt(id.clone(), format!("agent: {e}")))?,
            ),
            None => None,
        },
        request_id: id,
    })
}

/// A value bound to a dynamically built query.
enum Arg {
    I64(i64),
    F64(f64),
    Str(String),
}

/// Batches written asking which rows are new after one that needed to (see
/// [`Store::insert_batch`]).
const CAREFUL_AFTER_CONFLICT: u32 = 32;

/// The record store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Where sqlx writes records. PostgreSQL: the shared pool. SQLite in a file: one
    /// connection of its own for the pass that asks which rows are new (a batch holding
    /// a stored id; the writer thread writes every other batch), opened only when a batch
    /// first needs it and closed after a minute idle, so a gateway whose clients never
    /// reuse an id does not keep it (nor its page cache).
    writer: AnyPool,
    /// Batches still to be written asking which rows are new from the start: set after
    /// a batch needed it, so that a client reusing one request id on every call costs
    /// the writer one wasted pass now and then, not one per batch.
    careful_batches: Arc<std::sync::atomic::AtomicU32>,
    /// SQLite in a file: the writer thread that commits batches whose records are all
    /// new (see [`crate::sqlite_writer`]). `None` for PostgreSQL and in-memory SQLite.
    fast: Option<Arc<SqliteWriter>>,
    backend: Backend,
    /// The URL the pool connects with (for dedicated connections such as queries).
    url: String,
    /// Whether the records' provider-id index exists, so that a search by any id looks
    /// the provider's answer id up in it (see [`Store::index_provider_ids`]).
    provider_ids: Arc<std::sync::atomic::AtomicBool>,
}

/// How [`Store::list`] matches `q`.
#[derive(Clone, Copy)]
enum Search {
    /// Every id, the provider's included, through their indexes.
    AnyId,
    /// The ids other than the provider's (its index is gone).
    IndexedIds,
    /// The provider's id alone, by a scan of the time index.
    ProviderIdScan,
}

/// The index behind a search by the provider's answer id. Provider ids are random, so
/// every record lands on a random leaf of it: a commit writes about one page of it per
/// record once it outgrows the batch, where the time-ordered indexes write one page per
/// many records (docs/records.md, "Searching by the provider's id").
const PROVIDER_ID_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS records_upstream_id ON records (upstream_id) WHERE upstream_id IS NOT NULL";

impl Store {
    /// Opens (creating if needed) the store at `url` and brings its schema up to date.
    /// `sqlite://<path>` (WAL journal) or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        static DRIVERS: std::sync::Once = std::sync::Once::new();
        DRIVERS.call_once(sqlx::any::install_default_drivers);
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(StoreError::BadUrl(url.to_string()));
            }
            // Create the file if it does not exist.
            let url = if url.contains('?') {
                url.to_string()
            } else {
                format!("{url}?mode=rwc")
            };
            (Backend::Sqlite, url)
        } else if url == "sqlite::memory:" {
            (Backend::Sqlite, url.to_string())
        } else {
            return Err(StoreError::BadUrl(url.to_string()));
        };
        let memory = url.contains(":memory:");
        let sqlite_options = |connections: u32| {
            // One writer at a time is SQLite's model; WAL lets readers run beside it, and
            // synchronous=NORMAL keeps committed transactions across a process crash.
            AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                .max_connections(connections)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode=WAL").await?;
                        conn.execute("PRAGMA synchronous=NORMAL").await?;
                        conn.execute("PRAGMA busy_timeout=5000").await?;
                        Ok(())
                    })
                })
        };
        let pool = match backend {
            Backend::Sqlite => sqlite_options(if memory { 1 } else { 8 }),
            Backend::Postgres => AnyPoolOptions::new()
                .acquire_timeout(Duration::from_secs(10))
                .max_connections(16),
        }
        .connect(&url)
        .await?;
        let mut conn = pool.acquire().await?;
        migrate::run(&mut conn, backend).await?;
        drop(conn);
        let writer = if backend == Backend::Sqlite && !memory {
            // A local file's connection is not pinged before each batch: a failed batch
            // closes its connection (see `insert_asking`), and the next one opens anew.
            sqlite_options(1)
                .test_before_acquire(false)
                .min_connections(0)
                .idle_timeout(Duration::from_secs(60))
                .connect_lazy(&url)?
        } else {
            pool.clone()
        };
        let fast = if backend == Backend::Sqlite && !memory {
            let opts: sqlx::sqlite::SqliteConnectOptions = url.parse()?;
            let path = opts.get_filename().to_path_buf();
            Some(Arc::new(
                SqliteWriter::start(path).map_err(sqlx::Error::Io)?,
            ))
        } else {
            None
        };
        let provider_ids = index_exists(&pool, backend, "records_upstream_id").await?;
        Ok(Store {
            pool,
            writer,
            fast,
            careful_batches: Arc::default(),
            backend,
            url,
            provider_ids: Arc::new(std::sync::atomic::AtomicBool::new(provider_ids)),
        })
    }

    /// Keeps (`true`; a new store has it) or drops the index on the provider's answer
    /// id. Provider ids are random keys, so the index costs the writer about a page per
    /// record once it is large; without it a search by a provider id still finds its
    /// call, by a scan of the time index ([`Store::list`]). Turning it back on builds
    /// the index over every stored record, which takes a while on a large store.
    pub async fn index_provider_ids(&self, on: bool) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering;
        if on == self.provider_ids.load(Ordering::Relaxed) {
            return Ok(());
        }
        let sql = if on {
            PROVIDER_ID_INDEX
        } else {
            "DROP INDEX IF EXISTS records_upstream_id"
        };
        sqlx::query(sql).execute(&self.pool).await?;
        self.provider_ids.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Whether a search by the provider's answer id goes through its own index (else
    /// by a scan).
    pub fn searches_provider_ids(&self) -> bool {
        self.provider_ids.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Schema version the store is at.
    pub async fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM llmop_schema")
                .fetch_one(&self.pool)
                .await?
                .try_get("v")?,
        )
    }

    /// Writes records in one transaction. A record whose id is already stored is left
    /// as it was.
    pub async fn insert_batch(&self, records: &[Record]) -> Result<(), StoreError> {
        if self.fast.is_some() {
            return self.insert_shared(&Arc::new(records.to_vec())).await;
        }
        self.insert_via(records, None).await
    }

    /// [`Store::insert_batch`] for a batch the caller shares: the record writer hands
    /// its batch over without a copy (SQLite's writer thread borrows from it) and keeps
    /// it, to acknowledge, tap or spill.
    pub async fn insert_shared(&self, records: &Arc<Vec<Record>>) -> Result<(), StoreError> {
        self.insert_via(records, Some(records)).await
    }

    async fn insert_via(
        &self,
        records: &[Record],
        shared: Option<&Arc<Vec<Record>>>,
    ) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        // Almost always every record is new: the batch is inserted without asking which
        // rows were stored. When one was already stored, nothing is written and the
        // batch is written again, asking; the next batches ask from the start (see
        // `careful_batches`).
        let careful = self
            .careful_batches
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if careful {
            return self.insert_asking(records, true).await;
        }
        if let (Some(fast), Some(shared)) = (&self.fast, shared) {
            return match fast.insert(shared.clone()).await {
                Ok(Outcome::Stored) => Ok(()),
                Ok(Outcome::Conflict) => {
                    self.careful_batches.store(CAREFUL_AFTER_CONFLICT, Relaxed);
                    self.insert_asking(records, true).await
                }
                // The thread is gone (it cannot end but by a bug, or after `close`):
                // records still go in, through sqlx, rather than wait for a restart.
                Err(StoreError::WriterClosed) => {
                    tracing::error!(
                        "the SQLite writer thread is gone: records are written through the pool"
                    );
                    self.insert_asking(records, false).await
                }
                Err(e) => Err(e),
            };
        }
        self.insert_asking(records, false).await
    }

    /// Writes the batch through sqlx: without asking first unless `careful`.
    ///
    /// A connection that saw any error during the batch is closed, never returned to the
    /// pool: after a failed statement (a full disk, a killed server) SQLite may already
    /// have rolled the transaction back while the driver still believes one is open, and
    /// a connection reused in that state turns the next `BEGIN` into a savepoint whose
    /// "commit" commits nothing while holding the write lock.
    async fn insert_asking(&self, records: &[Record], careful: bool) -> Result<(), StoreError> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut conn = self.writer.acquire().await?;
        let mut result = Self::insert_on(&mut conn, records, self.backend, careful).await;
        if matches!(result, Ok(false)) {
            self.careful_batches.store(CAREFUL_AFTER_CONFLICT, Relaxed);
            result = Self::insert_on(&mut conn, records, self.backend, true).await;
        }
        if result.is_err() {
            conn.close_on_drop();
        }
        result.map(|_| ())
    }

    /// Writes `records` in one transaction; `Ok(false)` (nothing written) when, not
    /// `careful`, an id was already stored: then only a `careful` pass can tell which.
    async fn insert_on(
        conn: &mut sqlx::pool::PoolConnection<Any>,
        records: &[Record],
        backend: Backend,
        careful: bool,
    ) -> Result<bool, StoreError> {
        use sqlx::Connection;
        let mut tx = conn.begin().await?;
        let mut rest = records;
        // Records stored under another key (a reused request id): index → key.
        let mut moved: HashMap<usize, String> = HashMap::new();
        let mut rollup = crate::overview::Rollup::default();
        let mut at = 0;
        for size in statement_sizes(records.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let mut q = sqlx::query(batch_insert_sql(size, backend, careful));
            for r in chunk {
                q = bind_record(q, r);
            }
            if !careful {
                let stored = q.execute(&mut *tx).await?.rows_affected();
                if stored != size as u64 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                chunk.iter().for_each(|r| rollup.add(r));
                at += size;
                continue;
            }
            // The ids stored by this statement (not those already held): only they are
            // new calls for the rollups, so a record written twice is counted once.
            let inserted: Vec<String> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| row.try_get::<String, _>(0))
                .collect::<Result<_, _>>()?;
            if inserted.len() == chunk.len() {
                chunk.iter().for_each(|r| rollup.add(r));
            } else {
                let mut fresh: std::collections::HashSet<&str> =
                    inserted.iter().map(String::as_str).collect();
                for r in chunk {
                    if fresh.remove(r.request_id.as_str()) {
                        rollup.add(r);
                    }
                }
                for (i, key, stored) in Self::rekey_reused(&mut tx, chunk, backend).await? {
                    if stored {
                        rollup.add(&chunk[i]);
                    }
                    moved.insert(at + i, key);
                }
            }
            at += size;
        }
        rollup.write(&mut tx, backend).await?;
        let key = |i: usize, r: &Record| -> String {
            moved
                .get(&i)
                .cloned()
                .unwrap_or_else(|| r.request_id.clone())
        };
        // Kept reasoning state commits with its record: restorable exactly when the
        // record is durable.
        for (i, r) in records.iter().enumerate() {
            for k in &r.reasoning_state {
                sqlx::query(KEPT_STATE_INSERT)
                    .bind(k.call_id.clone())
                    .bind(key(i, r))
                    .bind(r.created_at_ms)
                    .bind(json_text(&k.state))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Online evaluation work commits with its record too (the scores given in
        // place are in the record's row): durable exactly when the record is, and never
        // for a record that was not.
        let enqueued = now_ms();
        let queued: Vec<(String, &str, String)> = records
            .iter()
            .enumerate()
            .filter(|(_, r)| !r.online_evals.is_empty())
            .filter_map(|(i, r)| {
                Some((key(i, r), r.feature.as_deref()?, json_text(&r.online_evals)))
            })
            .collect();
        let mut rest = &queued[..];
        for size in statement_sizes(queued.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let mut q = sqlx::query(QUEUE_ROWS.sql(size, backend));
            for (id, feature, evaluators) in chunk {
                q = q
                    .bind(id.clone())
                    .bind(feature.to_string())
                    .bind(evaluators.clone())
                    .bind(enqueued)
                    .bind(0i64)
                    .bind(enqueued);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Kept reasoning state of the tool calls `ids` (those found), one query per 500.
    pub async fn reasoning_state(&self, ids: &[String]) -> Result<Vec<KeptState>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT call_id, state FROM reasoning_state WHERE call_id IN ({})",
                marks.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for id in chunk {
                q = q.bind(id.clone());
            }
            for row in q.fetch_all(&self.pool).await? {
                let call_id: String = row.try_get("call_id")?;
                let text: String = row.try_get("state")?;
                let state = serde_json::from_str(&text).map_err(|e| {
                    StoreError::Corrupt(call_id.clone(), format!("reasoning_state: {e}"))
                })?;
                out.push(KeptState { call_id, state });
            }
        }
        Ok(out)
    }

    /// Some rows of a chunk were not inserted because their request id is taken. A row
    /// taken by the same call (`call_uid`: a batch retried after a commit whose outcome
    /// was unknown, a spill file replayed) is already stored. A row taken by another
    /// call means a client reused its `x-request-id`: this call is stored under
    /// `<id>~<call_uid>` instead, never dropped.
    /// Stores each record of `chunk` that a stored record of another call already
    /// holds the key of under its own key; returns (index in `chunk`, key, whether this
    /// statement stored it: `false` when that key too was already stored) of those.
    async fn rekey_reused(
        tx: &mut sqlx::Transaction<'_, Any>,
        chunk: &[Record],
        backend: Backend,
    ) -> Result<Vec<(usize, String, bool)>, StoreError> {
        let mut moved_keys = Vec::new();
        for (i, r) in chunk.iter().enumerate() {
            let held: Option<AnyRow> = sqlx::query(
                "SELECT COALESCE(call_uid, request_id) AS uid FROM records WHERE request_id = $1",
            )
            .bind(r.request_id.clone())
            .fetch_optional(&mut **tx)
            .await?;
            let Some(row) = held else { continue };
            let uid: String = row.try_get("uid")?;
            let mine = if r.call_uid.is_empty() {
                &r.request_id
            } else {
                &r.call_uid
            };
            if uid == *mine {
                continue;
            }
            let mut moved = r.clone();
            moved.request_id = format!("{}~{}", r.request_id, mine);
            moved.client_request_id = Some(r.request_id.clone());
            tracing::warn!(
                request_id = %r.request_id,
                stored_as = %moved.request_id,
                "a client reused a request id: this call is recorded under its own key"
            );
            metrics::counter!("llmop_records_reused_id_total").increment(1);
            let stored = bind_record(sqlx::query(batch_insert_sql(1, backend, true)), &moved)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            moved_keys.push((i, moved.request_id, stored));
        }
        Ok(moved_keys)
    }

    pub async fn get(&self, request_id: &str) -> Result<Option<Record>, StoreError> {
        let sql = format!("{} WHERE request_id = $1", select_sql());
        match sqlx::query(&sql)
            .bind(request_id.to_string())
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => read_record(&row).map(Some),
            None => Ok(None),
        }
    }

    /// Records matching `filter`, newest first, one page at a time.
    ///
    /// `q` (any id) is looked up by the indexed ids first: llmop's request id, the
    /// client's request id, a session, and the provider's answer id while its index
    /// exists ([`Store::index_provider_ids`]). Without that index, a search that matched
    /// none of the others looks for the provider's id by a scan of the time index, which
    /// carries it (newest first, reading only the rows that match): a lookup costs time
    /// in proportion to the records stored, which the index would save, and the writer
    /// no page per record.
    pub async fn list(&self, filter: &ListFilter) -> Result<Page, StoreError> {
        if self.searches_provider_ids() || filter.q.is_none() {
            return self.list_by(filter, Search::AnyId).await;
        }
        let page = self.list_by(filter, Search::IndexedIds).await?;
        if !page.records.is_empty() {
            return Ok(page);
        }
        // Also the way a scan's later pages are reached: their cursor finds no other id
        // past it, so the scan goes on from the cursor.
        self.list_by(filter, Search::ProviderIdScan).await
    }

    async fn list_by(&self, filter: &ListFilter, search: Search) -> Result<Page, StoreError> {
        let limit = filter.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Arg> = Vec::new();
        let next = |a: Arg, args: &mut Vec<Arg>| {
            args.push(a);
            format!("${}", args.len())
        };
        if let Some(id) = &filter.request_id {
            let p = next(Arg::Str(id.clone()), &mut args);
            conds.push(format!("(request_id = {p} OR client_request_id = {p})"));
        }
        if let Some(q) = &filter.q {
            let p = next(Arg::Str(q.clone()), &mut args);
            conds.push(match search {
                // Every term of the OR has an index: a few lookups, not a scan.
                Search::AnyId => format!(
                    "(request_id = {p} OR client_request_id = {p} OR upstream_id = {p} OR session_id = {p})"
                ),
                Search::IndexedIds => {
                    format!("(request_id = {p} OR client_request_id = {p} OR session_id = {p})")
                }
                // Alone, with the list's order: the time index walked backwards, its
                // `upstream_id` compared before a row is read (migration 20).
                Search::ProviderIdScan => format!("upstream_id = {p}"),
            });
        }
        for (col, v) in [
            ("feature", &filter.feature),
            ("user_id", &filter.user),
            ("session_id", &filter.session),
            ("model", &filter.model),
            ("provider", &filter.provider),
            ("key_id", &filter.key),
        ] {
            if let Some(v) = v {
                let p = next(Arg::Str(v.clone()), &mut args);
                conds.push(format!("{col} = {p}"));
            }
        }
        match filter.status {
            // A stream that failed after its first event was sent with status 200 and
            // ended with an error event: an error all the same.
            Some(StatusFilter::Ok) => conds.push("(status < 400 AND error_code IS NULL)".into()),
            Some(StatusFilter::Error) => {
                conds.push("(status >= 400 OR error_code IS NOT NULL)".into())
            }
            Some(StatusFilter::Exactly(s)) => {
                let p = next(Arg::I64(s as i64), &mut args);
                conds.push(format!("status = {p}"));
            }
            None => {}
        }
        if let Some(v) = filter.version {
            let p = next(Arg::I64(v), &mut args);
            conds.push(format!("feature_version = {p}"));
        }
        if let Some(d) = filter.degraded {
            conds.push(format!("degraded = {}", i64::from(d)));
        }
        for (cmp, v) in [(">=", filter.min_latency_ms), ("<=", filter.max_latency_ms)] {
            if let Some(v) = v {
                let p = next(Arg::I64(v), &mut args);
                conds.push(format!("latency_ms {cmp} {p}"));
            }
        }
        for (cmp, v) in [(">=", filter.min_cost_usd), ("<=", filter.max_cost_usd)] {
            if let Some(v) = v {
                let p = next(Arg::F64(v), &mut args);
                conds.push(format!("cost_usd {cmp} {p}"));
            }
        }
        if let Some(s) = filter.since_ms {
            let p = next(Arg::I64(s), &mut args);
            conds.push(format!("created_at_ms >= {p}"));
        }
        if let Some(u) = filter.until_ms {
            let p = next(Arg::I64(u), &mut args);
            conds.push(format!("created_at_ms < {p}"));
        }
        if let Some(c) = &filter.cursor {
            let (ms, id) = decode_cursor(c).ok_or(StoreError::BadCursor)?;
            let pm = next(Arg::I64(ms), &mut args);
            let pi = next(Arg::Str(id), &mut args);
            conds.push(format!(
                "(created_at_ms < {pm} OR (created_at_ms = {pm} AND request_id < {pi}))"
            ));
        }
        let mut sql = select_sql().to_string();
        if !conds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conds.join(" AND "));
        }
        // One more than asked, to know whether another page exists.
        sql.push_str(&format!(
            " ORDER BY created_at_ms DESC, request_id DESC LIMIT {}",
            limit + 1
        ));
        let mut q = sqlx::query(&sql);
        for a in args {
            q = match a {
                Arg::I64(v) => q.bind(v),
                Arg::F64(v) => q.bind(v),
                Arg::Str(v) => q.bind(v),
            };
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut records = rows
            .iter()
            .map(read_record)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if records.len() > limit as usize {
            records.truncate(limit as usize);
            records.last().map(encode_cursor)
        } else {
            None
        };
        Ok(Page {
            records,
            next_cursor,
        })
    }

    /// Sets (replaces) a record's feedback. `false` when no such record exists.
    pub async fn set_feedback(&self, request_id: &str, fb: &Feedback) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE records SET feedback_score = $1, feedback_label = $2, feedback_comment = $3, feedback_at_ms = $4 WHERE request_id = $5",
        )
        .bind_f64(fb.score)
        .bind(fb.label.clone())
        .bind(fb.comment.clone())
        .bind(fb.at_ms)
        .bind(request_id.to_string())
        .execute(&self.pool)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // Feedback is also a score (source `human`), beside the online evaluators'.
        self.put_feedback_score(request_id, fb).await?;
        Ok(true)
    }

    /// Deletes records created before `cutoff_ms`; returns how many. Deletes in chunks,
    /// each its own transaction, so the record writer is never locked out for long.
    pub async fn purge_before(&self, cutoff_ms: i64) -> Result<u64, StoreError> {
        // Kept reasoning state goes with its records.
        self.purge_table("reasoning_state", "call_id", cutoff_ms)
            .await?;
        // Rollups of the minutes wholly before the cutoff go with their records (the
        // cutoff's own minute keeps its counts until a later purge passes it).
        for table in ["rollup_calls", "rollup_users"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE minute_ms + 60000 <= $1"
            ))
            .bind(cutoff_ms)
            .execute(&self.pool)
            .await?;
        }
        self.purge_table("records", "request_id", cutoff_ms).await
    }

    /// Deletes the rows of `table` older than `cutoff_ms`, 5,000 per statement, so no
    /// one statement holds the write lock for long.
    async fn purge_table(&self, table: &str, key: &str, cutoff_ms: i64) -> Result<u64, StoreError> {
        const CHUNK: i64 = 5_000;
        let sql = format!(
            "DELETE FROM {table} WHERE {key} IN \
             (SELECT {key} FROM {table} WHERE created_at_ms < $1 LIMIT $2)"
        );
        let mut total = 0;
        loop {
            let done = sqlx::query(&sql)
                .bind(cutoff_ms)
                .bind(CHUNK)
                .execute(&self.pool)
                .await?;
            total += done.rows_affected();
            if done.rows_affected() < CHUNK as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    pub async fn count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM records")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    pub async fn close(&self) {
        if let Some(fast) = &self.fast {
            fast.close().await;
        }
        self.writer.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without its writer thread a file store still takes records (through the pool),
    /// and a batch holding a stored id keeps it once.
    #[tokio::test]
    async fn records_go_in_without_the_writer_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}/s.db", dir.path().display()))
            .await
            .unwrap();
        store
            .fast
            .as_ref()
            .expect("a file store has one")
            .close()
            .await;
        let rec = |id: &str| Record::new(id, 1_000, "/v1/chat/completions");
        store.insert_batch(&[rec("a"), rec("b")]).await.unwrap();
        store.insert_batch(&[rec("b"), rec("c")]).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 3);
        store.close().await;
    }

    #[test]
    fn batches_use_few_statement_shapes() {
        for n in 0..300 {
            let sizes: Vec<usize> = statement_sizes(n).collect();
            assert_eq!(sizes.iter().sum::<usize>(), n);
            assert!(sizes
                .iter()
                .all(|s| s.is_power_of_two() && *s <= ROWS_PER_INSERT));
            // Full statements, then each smaller power at most once.
            let tail: Vec<_> = sizes.iter().filter(|s| **s < ROWS_PER_INSERT).collect();
            assert!(tail.windows(2).all(|w| w[0] > w[1]), "{n}: {sizes:?}");
        }
        assert_eq!(statement_sizes(37).collect::<Vec<_>>(), [32, 4, 1]);
        assert_eq!(
            batch_insert_sql(4, Backend::Sqlite, true)
                .matches("), (")
                .count(),
            3
        );
        assert_eq!(
            batch_insert_sql(64, Backend::Postgres, false)
                .matches('$')
                .count(),
            64 * COLUMNS.len()
        );
    }
}
