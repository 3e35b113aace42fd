//! Calls over time, for the console's overview: per-minute rollups kept by the record
//! writer, read back in buckets of any width, filtered and grouped by a dimension.
//!
//! A full scan of a million records takes over a second on SQLite; the overview reads
//! rollups instead (a few rows per minute, not one per call). Each record is added to
//! `rollup_calls` (per minute, feature, provider, model and key) and `rollup_users`
//! (per minute and user) in the same transaction that stores it, so the rollups hold
//! exactly the stored records, and a record written twice (a spill replayed) is counted
//! once. Migration 0018 rolled up the records that existed before.
//!
//! Latency percentiles come from a 24-bin histogram per row ([`LATENCY_EDGES_MS`]), so a
//! percentile is an estimate within its bin (linear inside it): at most one bin's width
//! off, which the page says. A filter on a user (the rollups by feature/model/key do not
//! carry users) reads the user's records themselves through their index.

use crate::record::Record;
use crate::store::{bind_values, statement_sizes, Backend, RowsInsert, Store, StoreError, Val};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::{Any, Row};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// Upper edges (exclusive) of the latency bins, in ms; the last bin holds everything
/// from the last edge up. Migration 0018's backfill writes the same edges in SQL (a
/// test checks the two agree).
pub const LATENCY_EDGES_MS: [i64; 23] = [
    5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500,
    10_000, 15_000, 20_000, 30_000, 60_000,
];
pub const BINS: usize = LATENCY_EDGES_MS.len() + 1;

const MINUTE_MS: i64 = 60_000;

/// Error codes counted as budget refusals.
const REFUSALS: [&str; 2] = [
    llmop_core::codes::BUDGET_EXCEEDED,
    llmop_core::codes::SESSION_BUDGET_EXCEEDED,
];

pub fn latency_bin(ms: i64) -> usize {
    LATENCY_EDGES_MS.partition_point(|&edge| edge <= ms)
}

/// Counters of a set of calls: one rollup row, one bucket, one group, the totals.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    pub calls: i64,
    pub errors: i64,
    /// Answered by the route's fallback response.
    pub degraded: i64,
    /// Answered by another target than the first one tried.
    pub fallbacks: i64,
    /// Refused by a budget (`budget_exceeded`, `session_budget_exceeded`).
    pub refusals: i64,
    pub cost_usd: f64,
    /// Calls that used tokens but have no price: their cost is not in `cost_usd`.
    pub unpriced: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Calls per latency bin; empty where latency is not rolled up (the per-user rows).
    pub latency: Vec<i64>,
}

impl Counts {
    fn of(r: &Record) -> Counts {
        let error = r.status >= 400 || r.error_code.is_some();
        let fallback = !error
            && !r.degraded
            && r.attempts.len() > 1
            && r.attempts.first().map(|a| (&a.provider, &a.model))
                != r.attempts.last().map(|a| (&a.provider, &a.model));
        let mut latency = vec![0; BINS];
        latency[latency_bin(r.latency_ms)] = 1;
        Counts {
            calls: 1,
            errors: i64::from(error),
            degraded: i64::from(r.degraded),
            fallbacks: i64::from(fallback),
            refusals: i64::from(
                r.error_code
                    .as_deref()
                    .is_some_and(|c| REFUSALS.contains(&c)),
            ),
            cost_usd: r.cost_usd.unwrap_or(0.0),
            unpriced: i64::from(r.cost_usd.is_none() && r.input_tokens.is_some()),
            input_tokens: r.input_tokens.unwrap_or(0),
            output_tokens: r.output_tokens.unwrap_or(0),
            latency,
        }
    }

    fn add(&mut self, o: &Counts) {
        self.calls += o.calls;
        self.errors += o.errors;
        self.degraded += o.degraded;
        self.fallbacks += o.fallbacks;
        self.refusals += o.refusals;
        self.cost_usd += o.cost_usd;
        self.unpriced += o.unpriced;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    /// The `q` quantile (0..1) of latency in ms, estimated from the histogram: linear
    /// within the bin it falls in; the open last bin answers its lower edge. `None`
    /// without latency data.
    pub fn latency_quantile(&self, q: f64) -> Option<f64> {
        let n: i64 = self.latency.iter().sum();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).max(1.0);
        let mut seen = 0.0;
        for (i, &c) in self.latency.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let lo = if i == 0 { 0 } else { LATENCY_EDGES_MS[i - 1] } as f64;
            if seen + c as f64 >= rank {
                let Some(&hi) = LATENCY_EDGES_MS.get(i) else {
                    return Some(lo);
                };
                let within = (rank - seen) / c as f64;
                return Some(lo + within * (hi as f64 - lo));
            }
            seen += c as f64;
        }
        None
    }
}

/// A dimension to filter or group by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dim {
    Feature,
    Provider,
    Model,
    Key,
    User,
}

impl Dim {
    pub const ALL: [Dim; 5] = [Dim::Feature, Dim::Model, Dim::Provider, Dim::Key, Dim::User];

    pub fn parse(s: &str) -> Option<Dim> {
        Some(match s {
            "feature" => Dim::Feature,
            "provider" => Dim::Provider,
            "model" => Dim::Model,
            "key" => Dim::Key,
            "user" => Dim::User,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Dim::Feature => "feature",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::Key => "key",
            Dim::User => "user",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Dim::Feature => "feature",
            Dim::Provider => "provider",
            Dim::Model => "model",
            Dim::Key => "key_id",
            Dim::User => "user_id",
        }
    }

    fn of(self, r: &Record) -> Option<&str> {
        match self {
            Dim::Feature => r.feature.as_deref(),
            Dim::Provider => r.provider.as_deref(),
            Dim::Model => r.model.as_deref(),
            Dim::Key => r.key_id.as_deref(),
            Dim::User => r.user.as_deref(),
        }
    }
}

/// What the overview shows.
#[derive(Debug, Clone, PartialEq)]
pub struct OverviewQuery {
    pub since_ms: i64,
    pub until_ms: i64,
    /// Width of one bucket of the time series (a whole number of minutes).
    pub bucket_ms: i64,
    /// Only calls with these values (`""`: calls without the dimension).
    pub only: Vec<(Dim, String)>,
    /// The breakdown table's dimension.
    pub by: Dim,
    /// Most groups in the breakdown (by cost, then calls).
    pub top: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start_ms: i64,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Group {
    /// `None`: calls without this dimension (no feature, no key…).
    pub group: Option<String>,
    #[serde(flatten)]
    pub counts: Counts,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Overview {
    /// Every bucket of the range, empty ones included, oldest first.
    pub buckets: Vec<Bucket>,
    pub totals: Counts,
    pub groups: Vec<Group>,
    /// More groups existed than `top`.
    pub more_groups: bool,
    /// Read from the rollups (`false`: from the records, for a user filter).
    pub from_rollups: bool,
}

/// Adds records to the rollups: per (minute, feature, provider, model, key) and per
/// (minute, user), summed in memory first so a batch costs one upsert per group.
#[derive(Default)]
pub(crate) struct Rollup {
    calls: HashMap<(i64, [String; 4]), Counts>,
    users: HashMap<(i64, String), Counts>,
}

fn minute(ms: i64) -> i64 {
    ms - ms.rem_euclid(MINUTE_MS)
}

/// The end of a range, rounded up to a whole minute: the rollups cannot split one.
fn end_minute(ms: i64) -> i64 {
    minute(ms.saturating_add(MINUTE_MS - 1))
}

impl Rollup {
    pub(crate) fn add(&mut self, r: &Record) {
        let c = Counts::of(r);
        let dims = [Dim::Feature, Dim::Provider, Dim::Model, Dim::Key]
            .map(|d| d.of(r).unwrap_or_default().to_string());
        let m = minute(r.created_at_ms);
        if let Some(u) = &r.user {
            self.users.entry((m, u.clone())).or_default().add(&c);
        }
        self.calls.entry((m, dims)).or_default().add(&c);
    }

    /// Upserts the sums, many rows per statement (like the records' own inserts): a
    /// batch of 512 records from 500 users is a handful of statements, not 500.
    pub(crate) async fn write(
        self,
        tx: &mut sqlx::Transaction<'_, Any>,
        backend: Backend,
    ) -> Result<(), StoreError> {
        let calls: Vec<_> = self.calls.into_iter().collect();
        let mut rest = &calls[..];
        for size in statement_sizes(calls.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let mut q = sqlx::query(CALLS_UPSERT.sql(size, backend));
            for (key, c) in chunk {
                q = bind_values(q, call_values(key, c));
            }
            q.execute(&mut **tx).await?;
        }
        let users: Vec<_> = self.users.into_iter().collect();
        let mut rest = &users[..];
        for size in statement_sizes(users.len()) {
            let (chunk, after) = rest.split_at(size);
            rest = after;
            let mut q = sqlx::query(USERS_UPSERT.sql(size, backend));
            for (key, c) in chunk {
                q = bind_values(q, user_values(key, c));
            }
            q.execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl Rollup {
    /// [`Rollup::write`] on the SQLite writer thread's connection: one row per
    /// statement (a batch has few groups), each statement prepared once and kept.
    pub(crate) fn write_sqlite(self, tx: &rusqlite::Connection) -> rusqlite::Result<()> {
        if !self.calls.is_empty() {
            let mut upsert = tx.prepare_cached(CALLS_UPSERT.sql(1, Backend::Sqlite))?;
            for (key, c) in &self.calls {
                upsert.execute(rusqlite::params_from_iter(call_values(key, c)))?;
            }
        }
        if !self.users.is_empty() {
            let mut upsert = tx.prepare_cached(USERS_UPSERT.sql(1, Backend::Sqlite))?;
            for (key, c) in &self.users {
                upsert.execute(rusqlite::params_from_iter(user_values(key, c)))?;
            }
        }
        Ok(())
    }
}

/// A `rollup_calls` row's values, in [`CALLS_UPSERT`]'s column order (both drivers).
fn call_values<'a>(
    (m, [feature, provider, model, key]): &'a (i64, [String; 4]),
    c: &Counts,
) -> Vec<Val<'a>> {
    let mut row = vec![
        Val::Int(Some(*m)),
        Val::Text(Some(Cow::Borrowed(feature))),
        Val::Text(Some(Cow::Borrowed(provider))),
        Val::Text(Some(Cow::Borrowed(model))),
        Val::Text(Some(Cow::Borrowed(key))),
        Val::Int(Some(c.calls)),
        Val::Int(Some(c.errors)),
        Val::Int(Some(c.degraded)),
        Val::Int(Some(c.fallbacks)),
        Val::Int(Some(c.refusals)),
        Val::Real(Some(c.cost_usd)),
        Val::Int(Some(c.unpriced)),
        Val::Int(Some(c.input_tokens)),
        Val::Int(Some(c.output_tokens)),
    ];
    row.extend((0..BINS).map(|i| Val::Int(Some(c.latency.get(i).copied().unwrap_or(0)))));
    row
}

/// A `rollup_users` row's values, in [`USERS_UPSERT`]'s column order.
fn user_values<'a>((m, user): &'a (i64, String), c: &Counts) -> [Val<'a>; 5] {
    [
        Val::Int(Some(*m)),
        Val::Text(Some(Cow::Borrowed(user))),
        Val::Int(Some(c.calls)),
        Val::Int(Some(c.errors)),
        Val::Real(Some(c.cost_usd)),
    ]
}

/// The rollups' upserts: columns in bind order; a conflicting row adds to the stored one.
static CALLS_UPSERT: RowsInsert = RowsInsert::new(
    "INSERT INTO rollup_calls (minute_ms, feature, provider, model, key_id, calls, errors, degraded, fallbacks, refusals, cost_usd, unpriced, input_tokens, output_tokens, l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, l20, l21, l22, l23) VALUES",
    5 + COUNTERS.len() + BINS,
    "ON CONFLICT (minute_ms, feature, provider, model, key_id) DO UPDATE SET calls = rollup_calls.calls + excluded.calls, errors = rollup_calls.errors + excluded.errors, degraded = rollup_calls.degraded + excluded.degraded, fallbacks = rollup_calls.fallbacks + excluded.fallbacks, refusals = rollup_calls.refusals + excluded.refusals, cost_usd = rollup_calls.cost_usd + excluded.cost_usd, unpriced = rollup_calls.unpriced + excluded.unpriced, input_tokens = rollup_calls.input_tokens + excluded.input_tokens, output_tokens = rollup_calls.output_tokens + excluded.output_tokens, l0 = rollup_calls.l0 + excluded.l0, l1 = rollup_calls.l1 + excluded.l1, l2 = rollup_calls.l2 + excluded.l2, l3 = rollup_calls.l3 + excluded.l3, l4 = rollup_calls.l4 + excluded.l4, l5 = rollup_calls.l5 + excluded.l5, l6 = rollup_calls.l6 + excluded.l6, l7 = rollup_calls.l7 + excluded.l7, l8 = rollup_calls.l8 + excluded.l8, l9 = rollup_calls.l9 + excluded.l9, l10 = rollup_calls.l10 + excluded.l10, l11 = rollup_calls.l11 + excluded.l11, l12 = rollup_calls.l12 + excluded.l12, l13 = rollup_calls.l13 + excluded.l13, l14 = rollup_calls.l14 + excluded.l14, l15 = rollup_calls.l15 + excluded.l15, l16 = rollup_calls.l16 + excluded.l16, l17 = rollup_calls.l17 + excluded.l17, l18 = rollup_calls.l18 + excluded.l18, l19 = rollup_calls.l19 + excluded.l19, l20 = rollup_calls.l20 + excluded.l20, l21 = rollup_calls.l21 + excluded.l21, l22 = rollup_calls.l22 + excluded.l22, l23 = rollup_calls.l23 + excluded.l23",
);
static USERS_UPSERT: RowsInsert = RowsInsert::new(
    "INSERT INTO rollup_users (minute_ms, user_id, calls, errors, cost_usd) VALUES",
    5,
    "ON CONFLICT (minute_ms, user_id) DO UPDATE SET calls = rollup_users.calls + excluded.calls, errors = rollup_users.errors + excluded.errors, cost_usd = rollup_users.cost_usd + excluded.cost_usd",
);

const COUNTERS: [&str; 9] = [
    "calls",
    "errors",
    "degraded",
    "fallbacks",
    "refusals",
    "cost_usd",
    "unpriced",
    "input_tokens",
    "output_tokens",
];

fn latency_columns() -> impl Iterator<Item = String> {
    (0..BINS).map(|i| format!("l{i}"))
}

/// `SUM(calls) AS calls, …` over a rollup table's counters.
fn sums(latency: bool) -> String {
    let mut out: Vec<String> = COUNTERS
        .iter()
        .map(|c| {
            if *c == "cost_usd" {
                format!("CAST(SUM({c}) AS DOUBLE PRECISION) AS {c}")
            } else {
                format!("CAST(SUM({c}) AS BIGINT) AS {c}")
            }
        })
        .collect();
    if latency {
        out.extend(latency_columns().map(|c| format!("CAST(SUM({c}) AS BIGINT) AS {c}")));
    }
    out.join(", ")
}

fn read_counts(row: &AnyRow, latency: bool) -> Result<Counts, StoreError> {
    let get = |c: &str| -> Result<i64, StoreError> { Ok(row.try_get::<i64, _>(c)?) };
    Ok(Counts {
        calls: get("calls")?,
        errors: get("errors")?,
        degraded: get("degraded")?,
        fallbacks: get("fallbacks")?,
        refusals: get("refusals")?,
        cost_usd: row.try_get::<f64, _>("cost_usd")?,
        unpriced: get("unpriced")?,
        input_tokens: get("input_tokens")?,
        output_tokens: get("output_tokens")?,
        latency: if latency {
            latency_columns()
                .map(|c| get(&c))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        },
    })
}

fn empty_buckets(q: &OverviewQuery) -> BTreeMap<i64, Counts> {
    let bucket = q.bucket_ms.max(MINUTE_MS);
    let start = minute(q.since_ms);
    let mut out = BTreeMap::new();
    let mut at = start;
    while at < q.until_ms && out.len() < 10_000 {
        out.insert(at, Counts::default());
        at += bucket;
    }
    out
}

fn finish(
    q: &OverviewQuery,
    series: BTreeMap<i64, Counts>,
    groups: HashMap<Option<String>, Counts>,
    from_rollups: bool,
) -> Overview {
    let mut totals = Counts::default();
    for c in series.values() {
        totals.add(c);
    }
    let mut groups: Vec<Group> = groups
        .into_iter()
        .map(|(group, counts)| Group { group, counts })
        .collect();
    groups.sort_by(|a, b| {
        b.counts
            .cost_usd
            .total_cmp(&a.counts.cost_usd)
            .then(b.counts.calls.cmp(&a.counts.calls))
            .then(a.group.cmp(&b.group))
    });
    let more_groups = groups.len() > q.top;
    groups.truncate(q.top);
    Overview {
        buckets: series
            .into_iter()
            .map(|(start_ms, counts)| Bucket { start_ms, counts })
            .collect(),
        totals,
        groups,
        more_groups,
        from_rollups,
    }
}

fn none_if_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl Store {
    /// The overview of `q`: from the rollups, or for a user filter from that user's
    /// records.
    pub async fn overview(&self, q: &OverviewQuery) -> Result<Overview, StoreError> {
        if q.only.iter().any(|(d, _)| *d == Dim::User) {
            return self.overview_from_records(q).await;
        }
        let start = minute(q.since_ms);
        let bucket = q.bucket_ms.max(MINUTE_MS);
        let mut conds = vec!["minute_ms >= $1".to_string(), "minute_ms < $2".to_string()];
        for (i, (d, _)) in q.only.iter().enumerate() {
            conds.push(format!("{} = ${}", d.column(), i + 3));
        }
        fn with<'q>(
            sql: &'q str,
            start: i64,
            end: i64,
            only: &[(Dim, String)],
        ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>> {
            let mut query = sqlx::query(sql).bind(start).bind(end);
            for (_, v) in only {
                query = query.bind(v.clone());
            }
            query
        }
        let end = end_minute(q.until_ms);
        let mut series = empty_buckets(q);
        let sql = format!(
            "SELECT CAST((minute_ms - {start}) / {bucket} AS BIGINT) AS b, {} FROM rollup_calls WHERE {} GROUP BY (minute_ms - {start}) / {bucket}",
            sums(true),
            conds.join(" AND ")
        );
        for row in with(&sql, start, end, &q.only)
            .fetch_all(self.pool())
            .await?
        {
            let b: i64 = row.try_get("b")?;
            series
                .entry(start + b * bucket)
                .or_default()
                .add(&read_counts(&row, true)?);
        }
        let mut groups = HashMap::new();
        if q.by == Dim::User {
            // Users are rolled up on their own (calls, errors, cost), so a filter on
            // another dimension cannot narrow them: read those users' records instead.
            if !q.only.is_empty() {
                let from_records = self.overview_from_records(q).await?;
                return Ok(Overview {
                    groups: from_records.groups,
                    more_groups: from_records.more_groups,
                    ..finish(q, series, HashMap::new(), true)
                });
            }
            // Only the largest groups leave the database: a range with a million users
            // must not become a million rows in memory.
            let sql = format!(
                "SELECT user_id AS grp, CAST(SUM(calls) AS BIGINT) AS calls, \
                       CAST(SUM(errors) AS BIGINT) AS errors, \
                       CAST(SUM(cost_usd) AS DOUBLE PRECISION) AS cost_usd \
                       FROM rollup_users WHERE minute_ms >= $1 AND minute_ms < $2 GROUP BY user_id \
                       ORDER BY SUM(cost_usd) DESC, SUM(calls) DESC LIMIT {}",
                q.top + 1
            );
            for row in sqlx::query(&sql)
                .bind(start)
                .bind(end_minute(q.until_ms))
                .fetch_all(self.pool())
                .await?
            {
                groups.insert(
                    Some(row.try_get::<String, _>("grp")?),
                    Counts {
                        calls: row.try_get("calls")?,
                        errors: row.try_get("errors")?,
                        cost_usd: row.try_get("cost_usd")?,
                        ..Counts::default()
                    },
                );
            }
        } else {
            let col = q.by.column();
            let sql = format!(
                "SELECT {col} AS grp, {} FROM rollup_calls WHERE {} GROUP BY {col} \
                 ORDER BY SUM(cost_usd) DESC, SUM(calls) DESC LIMIT {}",
                sums(true),
                conds.join(" AND "),
                q.top + 1
            );
            for row in with(&sql, start, end, &q.only)
                .fetch_all(self.pool())
                .await?
            {
                let g: String = row.try_get("grp")?;
                groups.insert(none_if_empty(g), read_counts(&row, true)?);
            }
        }
        Ok(finish(q, series, groups, true))
    }

    /// The overview computed from the records themselves (streamed, summed in memory
    /// by the same code that feeds the rollups): for a user filter, and the reference
    /// the rollups are tested against.
    pub async fn overview_from_records(&self, q: &OverviewQuery) -> Result<Overview, StoreError> {
        use futures_util::TryStreamExt;
        let start = minute(q.since_ms);
        let bucket = q.bucket_ms.max(MINUTE_MS);
        let mut conds = vec![
            "created_at_ms >= $1".to_string(),
            "created_at_ms < $2".to_string(),
        ];
        for (i, (d, v)) in q.only.iter().enumerate() {
            if v.is_empty() {
                conds.push(format!("{} IS NULL AND ${} = ''", d.column(), i + 3));
            } else {
                conds.push(format!("{} = ${}", d.column(), i + 3));
            }
        }
        let sql = format!(
            "SELECT created_at_ms, feature, provider, model, key_id, user_id, status, error_code, \
             degraded, attempts, cost_usd, input_tokens, output_tokens, latency_ms \
             FROM records WHERE {}",
            conds.join(" AND ")
        );
        let mut query = sqlx::query(&sql).bind(start).bind(end_minute(q.until_ms));
        for (_, v) in &q.only {
            query = query.bind(v.clone());
        }
        let mut series = empty_buckets(q);
        let mut groups: HashMap<Option<String>, Counts> = HashMap::new();
        let mut rows = query.fetch(self.pool());
        while let Some(row) = rows.try_next().await? {
            let r = slim_record(&row)?;
            let c = Counts::of(&r);
            let b = (r.created_at_ms - start).div_euclid(bucket);
            series.entry(start + b * bucket).or_default().add(&c);
            groups
                .entry(q.by.of(&r).map(str::to_string))
                .or_default()
                .add(&c);
        }
        Ok(finish(q, series, groups, false))
    }
}

/// The columns of a record the overview reads.
fn slim_record(row: &AnyRow) -> Result<Record, StoreError> {
    let mut r = Record::new(String::new(), row.try_get("created_at_ms")?, "");
    r.feature = row.try_get("feature")?;
    r.provider = row.try_get("provider")?;
    r.model = row.try_get("model")?;
    r.key_id = row.try_get("key_id")?;
    r.user = row.try_get("user_id")?;
    r.status = row.try_get::<i64, _>("status")? as u16;
    r.error_code = row.try_get("error_code")?;
    r.degraded = row.try_get::<i64, _>("degraded")? != 0;
    let attempts: String = row.try_get("attempts")?;
    r.attempts = serde_json::from_str(&attempts).unwrap_or_default();
    r.cost_usd = row.try_get("cost_usd")?;
    r.input_tokens = row.try_get("input_tokens")?;
    r.output_tokens = row.try_get("output_tokens")?;
    r.latency_ms = row.try_get("latency_ms")?;
    Ok(r)
}

/// Migration 0018's backfill statements (the `INSERT … SELECT` over the records), for
/// [`Store::rebuild_rollups`]: one text for both uses.
fn backfill_sql(backend: Backend) -> Vec<String> {
    let text = match backend {
        Backend::Sqlite => include_str!("../migrations/sqlite/0018_rollups.sql"),
        Backend::Postgres => include_str!("../migrations/postgres/0018_rollups.sql"),
    };
    text.split(';')
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("--"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .filter(|s| s.trim_start().starts_with("INSERT INTO"))
        .collect()
}

impl Store {
    /// Rebuilds the rollups from the records (in one transaction): after records were
    /// deleted or changed by hand, outside llmop.
    pub async fn rebuild_rollups(&self) -> Result<(), StoreError> {
        use sqlx::Connection;
        let mut conn = self.pool().acquire().await?;
        let mut tx = conn.begin().await?;
        sqlx::query("DELETE FROM rollup_calls")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM rollup_users")
            .execute(&mut *tx)
            .await?;
        for stmt in backfill_sql(self.backend()) {
            sqlx::query(&stmt).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_split_at_their_edges() {
        assert_eq!(latency_bin(0), 0);
        assert_eq!(latency_bin(4), 0);
        assert_eq!(latency_bin(5), 1);
        assert_eq!(latency_bin(59_999), 22);
        assert_eq!(latency_bin(60_000), 23);
        assert_eq!(latency_bin(i64::MAX), 23);
    }

    #[test]
    fn the_migration_bins_as_the_code_does() {
        // Each of the 24 `SUM(CASE WHEN …)` of the backfill names its bin's edges.
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let sql = backfill_sql(backend).join("\n");
            for i in 0..BINS {
                let lo = (i > 0).then(|| format!("latency_ms >= {}", LATENCY_EDGES_MS[i - 1]));
                let hi = LATENCY_EDGES_MS.get(i).map(|e| format!("latency_ms < {e}"));
                let cond = [lo, hi]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" AND ");
                assert!(
                    sql.contains(&format!("WHEN {cond} THEN 1")),
                    "bin {i} ({cond}) is not in the {backend:?} backfill"
                );
            }
        }
    }

    #[test]
    fn quantiles_interpolate_within_their_bin() {
        // 100 calls in [100, 150): the median is halfway.
        let mut c = Counts {
            latency: vec![0; BINS],
            ..Counts::default()
        };
        c.latency[latency_bin(120)] = 100;
        assert_eq!(c.latency_quantile(0.5), Some(125.0));
        assert_eq!(c.latency_quantile(1.0), Some(150.0));
        // The open last bin answers its lower edge.
        c.latency[23] = 1_000;
        assert_eq!(c.latency_quantile(0.99), Some(60_000.0));
        assert_eq!(Counts::default().latency_quantile(0.5), None);
    }

    #[test]
    fn a_fallback_is_another_target_answering() {
        use crate::record::Attempt;
        let attempt = |provider: &str, model: &str, error: Option<&'static str>| Attempt {
            provider: provider.into(),
            model: model.into(),
            error: error.map(Into::into),
            upstream_status: None,
            latency_ms: 1,
            retry_reason: None,
        };
        let mut r = Record::new("r", 0, "/v1/chat/completions");
        r.status = 200;
        r.attempts = vec![attempt("a", "m", Some("timeout")), attempt("a", "m", None)];
        assert_eq!(Counts::of(&r).fallbacks, 0, "a retry on the same target");
        r.attempts = vec![attempt("a", "m", Some("timeout")), attempt("b", "m", None)];
        assert_eq!(Counts::of(&r).fallbacks, 1);
        r.degraded = true;
        assert_eq!(Counts::of(&r).fallbacks, 0, "degraded is counted apart");
        assert_eq!(Counts::of(&r).degraded, 1);
        r.degraded = false;
        r.status = 429;
        r.error_code = Some("budget_exceeded".into());
        let c = Counts::of(&r);
        assert_eq!((c.errors, c.refusals, c.fallbacks), (1, 1, 0));
    }
}
