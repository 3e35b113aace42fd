//! The requests view exported as CSV or JSONL, streamed page by page from the store:
//! memory stays one page whatever the size of the export.

use crate::pages::filter_of;
use crate::Console;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use llmop_store::{ListFilter, Record, Store};
use std::sync::Arc;

/// Records per page read from the store while exporting.
const PAGE: u32 = 500;
/// Most records one export carries (narrow the filter for more).
const MAX_ROWS: usize = 1_000_000;

#[derive(Clone, Copy)]
enum Format {
    Csv,
    Jsonl,
}

pub async fn csv(c: State<Arc<Console>>, q: RawQuery) -> Response {
    export(c, q, Format::Csv).await
}

pub async fn jsonl(c: State<Arc<Console>>, q: RawQuery) -> Response {
    export(c, q, Format::Jsonl).await
}

const COLUMNS: &[&str] = &[
    "request_id",
    "created_at_ms",
    "feature",
    "feature_version",
    "arm",
    "route",
    "provider",
    "model",
    "status",
    "error_code",
    "user",
    "session",
    "key_id",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "latency_ms",
    "degraded",
];

fn csv_row(r: &Record) -> Vec<String> {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    let n = |v: Option<i64>| v.map(|x| x.to_string()).unwrap_or_default();
    vec![
        r.request_id.clone(),
        r.created_at_ms.to_string(),
        o(&r.feature),
        n(r.feature_version),
        o(&r.arm),
        o(&r.route),
        o(&r.provider),
        o(&r.model),
        r.status.to_string(),
        o(&r.error_code),
        o(&r.user),
        o(&r.session),
        o(&r.key_id),
        n(r.input_tokens),
        n(r.output_tokens),
        r.cost_usd.map(|x| x.to_string()).unwrap_or_default(),
        r.latency_ms.to_string(),
        r.degraded.to_string(),
    ]
}

/// A CSV cell a spreadsheet will not run as a formula (OWASP's CSV injection advice:
/// a leading `=`, `+`, `-`, `@`, tab or carriage return is quoted away).
fn cell(v: String) -> String {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) && v.parse::<f64>().is_err() {
        format!("'{v}")
    } else {
        v
    }
}

fn encode(records: &[Record], fmt: Format, header: bool) -> bytes::Bytes {
    match fmt {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::with_capacity(records.len() * 160));
            if header {
                let _ = w.write_record(COLUMNS);
            }
            for r in records {
                let _ = w.write_record(csv_row(r).into_iter().map(cell));
            }
            bytes::Bytes::from(w.into_inner().unwrap_or_default())
        }
        Format::Jsonl => {
            let mut out = Vec::with_capacity(records.len() * 1024);
            for r in records {
                if serde_json::to_writer(&mut out, r).is_ok() {
                    out.push(b'\n');
                }
            }
            bytes::Bytes::from(out)
        }
    }
}

async fn export(State(c): State<Arc<Console>>, RawQuery(q): RawQuery, fmt: Format) -> Response {
    let Some(store) = c.store.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "recording is off: there are no records",
        )
            .into_response();
    };
    let mut f = match filter_of(&q.unwrap_or_default()) {
        Ok((f, _)) => f,
        Err((p, m)) => return (StatusCode::BAD_REQUEST, format!("{p}: {m}")).into_response(),
    };
    f.limit = Some(PAGE);
    f.cursor = None;
    let state = Some((store, f, 0usize, true));
    let stream = futures::stream::unfold(state, move |st| async move {
        let (store, mut f, sent, first): (Store, ListFilter, usize, bool) = st?;
        if sent >= MAX_ROWS {
            return None;
        }
        match store.list(&f).await {
            Ok(page) => {
                let chunk = encode(&page.records, fmt, first);
                let sent = sent + page.records.len();
                let next = page.next_cursor.map(|cur| {
                    f.cursor = Some(cur);
                    (store, f, sent, false)
                });
                Some((Ok::<_, std::io::Error>(chunk), next))
            }
            Err(e) => {
                // Bytes were sent: the export ends short, and says so in the log.
                tracing::error!(error = %e, "console export: store read failed, export cut short");
                Some((Err(std::io::Error::other("store read failed")), None))
            }
        }
    });
    let (ctype, ext) = match fmt {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        Format::Jsonl => ("application/x-ndjson", "jsonl"),
    };
    (
        [
            (header::CONTENT_TYPE, ctype.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"llmop-requests.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_numbers_kept() {
        assert_eq!(cell("=HYPERLINK(\"x\")".into()), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("@SUM(A1)".into()), "'@SUM(A1)");
        assert_eq!(cell("-1.5".into()), "-1.5");
        assert_eq!(cell("plain".into()), "plain");
    }
}
