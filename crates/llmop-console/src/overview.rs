//! `/ui/overview`: calls, errors, cost and latency over a time range, per feature,
//! model, provider, user or key, from the store's per-minute rollups.

use crate::chart::{self, Series};
use crate::pages::{frame, render};
use crate::session::Session;
use crate::Console;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Extension;
use llmop_store::overview::{Counts, Dim, Overview, OverviewQuery};
use minijinja::context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ranges the page offers, and the default.
const RANGES: [(&str, i64); 6] = [
    ("1h", 3_600_000),
    ("6h", 6 * 3_600_000),
    ("24h", 24 * 3_600_000),
    ("7d", 7 * 86_400_000),
    ("30d", 30 * 86_400_000),
    ("90d", 90 * 86_400_000),
];
const DEFAULT_RANGE: &str = "24h";

/// Bucket widths, smallest first: the first that gives at most [`MAX_BUCKETS`] wins.
const STEPS_MS: [i64; 14] = [
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];
const MAX_BUCKETS: i64 = 60;

/// What the URL asks for, parsed; or which parameter is wrong and why.
pub(crate) struct Asked {
    pub query: OverviewQuery,
    /// The parameters as given (kept in links and the form).
    pub params: BTreeMap<String, String>,
}

pub(crate) fn asked(q: &str, now_ms: i64) -> Result<Asked, (String, String)> {
    let mut params = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(q.as_bytes()) {
        let v = v.trim().to_string();
        if !v.is_empty() {
            params.insert(k.into_owned(), v);
        }
    }
    let time = |k: &str| -> Result<Option<i64>, (String, String)> {
        params
            .get(k)
            .map(|v| llmop_store::parse_time(v, now_ms).map_err(|e| (k.to_string(), e)))
            .transpose()
    };
    // Times are held to 1970 … 9999 (a hand-typed `since=-9223372036854775808` must not
    // overflow the arithmetic below).
    const LATEST_MS: i64 = 253_402_300_799_000;
    let until_ms = time("until")?.unwrap_or(now_ms).clamp(0, LATEST_MS);
    let since_ms = match time("since")? {
        Some(s) => s,
        None => {
            let range = params
                .get("range")
                .map(String::as_str)
                .unwrap_or(DEFAULT_RANGE);
            let ms = RANGES
                .iter()
                .find(|(n, _)| *n == range)
                .map(|(_, ms)| *ms)
                .ok_or_else(|| {
                    (
                        "range".to_string(),
                        format!("`{range}`: choose 1h, 6h, 24h, 7d, 30d or 90d, or give since"),
                    )
                })?;
            until_ms - ms
        }
    }
    .clamp(0, LATEST_MS);
    if since_ms >= until_ms {
        return Err(("since".into(), "must be before until".into()));
    }
    let span = until_ms - since_ms;
    let bucket_ms = STEPS_MS
        .iter()
        .copied()
        .find(|s| span / s <= MAX_BUCKETS)
        .unwrap_or_else(|| (span + MAX_BUCKETS - 1) / MAX_BUCKETS);
    let by = match params.get("by") {
        Some(b) => Dim::parse(b).ok_or_else(|| {
            (
                "by".to_string(),
                format!("`{b}`: group by feature, model, provider, key or user"),
            )
        })?,
        None => Dim::Feature,
    };
    let only = Dim::ALL
        .iter()
        .filter_map(|d| params.get(d.name()).map(|v| (*d, v.clone())))
        .collect();
    Ok(Asked {
        query: OverviewQuery {
            since_ms,
            until_ms,
            bucket_ms,
            only,
            by,
            top: 25,
        },
        params,
    })
}

/// A time as the axis and tooltips show it (UTC, to the minute).
fn when(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let s = humantime::format_rfc3339_seconds(t).to_string();
    // 2026-12-02T10:15:00Z → 12-02 10:15
    s.get(5..16).map(|x| x.replace('T', " ")).unwrap_or(s)
}

fn usd(v: f64) -> String {
    if v == 0.0 {
        "$0".into()
    } else if v.abs() < 0.01 {
        format!("${v:.5}")
    } else {
        format!("${v:.2}")
    }
}

fn ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0} s", v / 1000.0)
    } else {
        format!("{v:.0} ms")
    }
}

fn count(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v.fract() != 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// A line of numbers (the totals, a group).
#[derive(Serialize)]
struct Line {
    calls: i64,
    errors: i64,
    error_rate: String,
    cost: String,
    unpriced: i64,
    p50: String,
    p95: String,
    p99: String,
    degraded: i64,
    fallbacks: i64,
    refusals: i64,
    tokens: String,
}

impl Line {
    fn of(c: &Counts) -> Line {
        let q = |p| c.latency_quantile(p).map(ms).unwrap_or_else(|| "–".into());
        Line {
            calls: c.calls,
            errors: c.errors,
            error_rate: if c.calls == 0 {
                "–".into()
            } else {
                format!("{:.1}%", 100.0 * c.errors as f64 / c.calls as f64)
            },
            cost: usd(c.cost_usd),
            unpriced: c.unpriced,
            p50: q(0.5),
            p95: q(0.95),
            p99: q(0.99),
            degraded: c.degraded,
            fallbacks: c.fallbacks,
            refusals: c.refusals,
            tokens: format!("{} / {}", c.input_tokens, c.output_tokens),
        }
    }
}

#[derive(Serialize)]
struct GroupRow {
    /// `None`: calls without this dimension.
    name: Option<String>,
    /// The overview narrowed to this group.
    focus: String,
    /// The requests page with the same range and this group.
    requests: String,
    line: Line,
}

fn query_string(pairs: &BTreeMap<String, String>) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs.iter())
        .finish()
}

/// The requests page's filters for this range and these narrowing values.
fn requests_link(q: &OverviewQuery, extra: Option<(Dim, &str)>) -> String {
    let mut p = BTreeMap::new();
    p.insert("since".to_string(), q.since_ms.to_string());
    p.insert("until".to_string(), q.until_ms.to_string());
    for (d, v) in q.only.iter().map(|(d, v)| (*d, v.as_str())).chain(extra) {
        p.insert(d.name().to_string(), v.to_string());
    }
    format!("requests?{}", query_string(&p))
}

fn charts(o: &Overview) -> BTreeMap<&'static str, String> {
    let times: Vec<String> = o.buckets.iter().map(|b| when(b.start_ms)).collect();
    let col = |f: &dyn Fn(&Counts) -> Option<f64>| -> Vec<Option<f64>> {
        o.buckets.iter().map(|b| f(&b.counts)).collect()
    };
    let mut out = BTreeMap::new();
    out.insert(
        "calls",
        chart::bars(
            "Calls per bucket: succeeded and failed",
            &times,
            &[
                Series {
                    name: "ok",
                    class: "s-ok",
                    values: col(&|c| Some((c.calls - c.errors) as f64)),
                },
                Series {
                    name: "errors",
                    class: "s-err",
                    values: col(&|c| Some(c.errors as f64)),
                },
            ],
            &[
                Series {
                    name: "degraded",
                    class: "m-degraded",
                    values: col(&|c| Some(c.degraded as f64)),
                },
                Series {
                    name: "fallbacks",
                    class: "m-fallback",
                    values: col(&|c| Some(c.fallbacks as f64)),
                },
                Series {
                    name: "budget refusals",
                    class: "m-refusal",
                    values: col(&|c| Some(c.refusals as f64)),
                },
            ],
            &count,
        ),
    );
    out.insert(
        "cost",
        chart::bars(
            "Cost per bucket",
            &times,
            &[Series {
                name: "cost",
                class: "s-cost",
                values: col(&|c| Some(c.cost_usd)),
            }],
            &[],
            &usd,
        ),
    );
    out.insert(
        "latency",
        chart::lines(
            "Latency percentiles per bucket",
            &times,
            &[
                Series {
                    name: "p50",
                    class: "l-p50",
                    values: col(&|c| c.latency_quantile(0.5)),
                },
                Series {
                    name: "p95",
                    class: "l-p95",
                    values: col(&|c| c.latency_quantile(0.95)),
                },
                Series {
                    name: "p99",
                    class: "l-p99",
                    values: col(&|c| c.latency_quantile(0.99)),
                },
            ],
            &ms,
        ),
    );
    out
}

fn step_name(ms: i64) -> String {
    match ms {
        m if m % 86_400_000 == 0 => format!("{} d", m / 86_400_000),
        m if m % 3_600_000 == 0 => format!("{} h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{} min", m / 60_000),
        m => format!("{} s", m / 1000),
    }
}

pub async fn overview(
    State(c): State<Arc<Console>>,
    Extension(s): Extension<Session>,
    RawQuery(q): RawQuery,
) -> Response {
    let Some(store) = c.store.as_ref() else {
        return render(
            &c,
            "overview.html",
            StatusCode::NOT_FOUND,
            context! { error => "Recording is off ([store] enabled = false): there is nothing to show.", ..frame(&c, &s, 0) },
        );
    };
    let q = q.unwrap_or_default();
    let asked = match asked(&q, crate::now_ms()) {
        Ok(a) => a,
        Err((param, msg)) => {
            let params: BTreeMap<String, String> = url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            return render(
                &c,
                "overview.html",
                StatusCode::BAD_REQUEST,
                context! { error => format!("{param}: {msg}"), params => params, ..frame(&c, &s, 0) },
            );
        }
    };
    let started = std::time::Instant::now();
    let o = match store.overview(&asked.query).await {
        Ok(o) => o,
        Err(e) => {
            tracing::error!(error = %e, "console: overview failed");
            return render(
                &c,
                "overview.html",
                StatusCode::SERVICE_UNAVAILABLE,
                context! { error => "The record store cannot be read right now.", params => asked.params, ..frame(&c, &s, 0) },
            );
        }
    };
    let took_ms = started.elapsed().as_millis() as u64;
    let by = asked.query.by;
    let groups: Vec<GroupRow> = o
        .groups
        .iter()
        .map(|g| {
            let value = g.group.clone().unwrap_or_default();
            let mut focus = asked.params.clone();
            focus.insert(by.name().to_string(), value.clone());
            GroupRow {
                name: g.group.clone(),
                focus: format!("overview?{}", query_string(&focus)),
                requests: requests_link(&asked.query, g.group.as_deref().map(|v| (by, v))),
                line: Line::of(&g.counts),
            }
        })
        .collect();
    // Links that drop one narrowing value each.
    let narrowed: Vec<(String, String, String)> = asked
        .query
        .only
        .iter()
        .map(|(d, v)| {
            let mut without = asked.params.clone();
            without.remove(d.name());
            (
                d.name().to_string(),
                v.clone(),
                format!("overview?{}", query_string(&without)),
            )
        })
        .collect();
    render(
        &c,
        "overview.html",
        StatusCode::OK,
        context! { ..frame(&c, &s, 0), ..context! {
            params => asked.params,
            ranges => RANGES.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            range => asked.params.get("range").cloned().unwrap_or_else(|| DEFAULT_RANGE.into()),
            custom => asked.params.contains_key("since"),
            dims => Dim::ALL.iter().map(|d| d.name()).collect::<Vec<_>>(),
            by => by.name(),
            since => when(asked.query.since_ms),
            until => when(asked.query.until_ms),
            step => step_name(asked.query.bucket_ms),
            totals => Line::of(&o.totals),
            charts => charts(&o),
            groups => groups,
            more_groups => o.more_groups,
            by_user => by == Dim::User && o.from_rollups,
            from_rollups => o.from_rollups,
            narrowed => narrowed,
            requests => requests_link(&asked.query, None),
            took_ms => took_ms,
        } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_pick_a_bucket_and_parameters_are_checked() {
        let now = 1_800_000_000_000;
        let a = asked("", now).unwrap_or_else(|_| panic!("default"));
        assert_eq!(a.query.until_ms - a.query.since_ms, 86_400_000);
        assert_eq!(a.query.bucket_ms, 1_800_000, "24 h in 48 half hours");
        assert_eq!(a.query.by, Dim::Feature);
        let a = asked("range=1h&by=user&feature=f1&model=", now).unwrap_or_else(|_| panic!());
        assert_eq!(a.query.bucket_ms, 60_000);
        assert_eq!(a.query.by, Dim::User);
        assert_eq!(a.query.only, vec![(Dim::Feature, "f1".to_string())]);
        let a = asked("since=90d", now).unwrap_or_else(|_| panic!());
        assert!((a.query.until_ms - a.query.since_ms) / a.query.bucket_ms <= MAX_BUCKETS);
        let a = asked("since=3650d", now).unwrap_or_else(|_| panic!());
        assert!((a.query.until_ms - a.query.since_ms) / a.query.bucket_ms <= MAX_BUCKETS);
        // Extreme times are held to a sane range, not overflowed.
        let a = asked("since=-9223372036854775808&until=9223372036854775807", now)
            .unwrap_or_else(|_| panic!());
        assert!(a.query.since_ms == 0 && a.query.bucket_ms > 0);
        for bad in [
            "range=2y",
            "by=price",
            "since=yesterday",
            "since=1h&until=2h",
        ] {
            assert!(asked(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_and_amounts_read_well() {
        assert_eq!(when(1_764_670_500_000), "12-02 10:15");
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(ms(1500.0), "1500 ms");
        assert_eq!(ms(15_000.0), "15 s");
        assert_eq!(step_name(1_800_000), "30 min");
    }
}
