//! `llmop quality <feature>`: per version and evaluator, the online scores over time (a
//! text sparkline of the daily mean), sample sizes, and the open drift alerts.

use super::{now_ms, open, print_json, store_url, table, time, write_out, StoreArg};
use anyhow::anyhow;
use clap::Args;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args)]
pub struct QualityArgs {
    feature: String,
    /// The window: `7d`, `30d`, or a time.
    #[arg(long, default_value = "7d")]
    since: String,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    store: StoreArg,
}

/// One character per day: the day's mean score from ▁ (0) to █ (1); `·` without scores.
fn sparkline(days: &[Option<f64>]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    days.iter()
        .map(|d| match d {
            Some(v) => BARS[((v.clamp(0.0, 1.0) * 7.0).round()) as usize],
            None => '·',
        })
        .collect()
}

pub fn run(config: &Path, a: QualityArgs) -> ExitCode {
    super::run_async(async move {
        let store = open(&store_url(config, a.store.store)?).await?;
        let now = now_ms();
        let since = llmop_store::parse_time(&a.since, now).map_err(|m| anyhow!("--since: {m}"))?;
        let groups = store
            .score_groups(&llmop_store::ScoreFilter {
                feature: Some(a.feature.clone()),
                since_ms: Some(since),
                by_day: true,
                ..Default::default()
            })
            .await?;
        let alerts = store.open_drift_alerts(Some(&a.feature)).await?;
        if a.json {
            return print_json(&serde_json::json!({"days": groups, "open_drift_alerts": alerts}));
        }
        let first_day = since / 86_400_000;
        let last_day = now / 86_400_000;
        let ndays = (last_day - first_day + 1).clamp(1, 400) as usize;
        // (version, evaluator, source) -> per-day means, scores, sum of values, valued.
        type Row = (Vec<Option<f64>>, i64, f64, i64);
        let mut rows: BTreeMap<(i64, String, String), Row> = BTreeMap::new();
        for g in &groups {
            let key = (
                g.feature_version.unwrap_or(0),
                g.evaluator.clone(),
                g.source.clone(),
            );
            let e = rows
                .entry(key)
                .or_insert_with(|| (vec![None; ndays], 0, 0.0, 0));
            if let (Some(day), Some(mean)) = (g.day_ms, g.mean) {
                let i = (day / 86_400_000 - first_day).clamp(0, ndays as i64 - 1) as usize;
                e.0[i] = Some(mean);
                e.2 += mean * g.count as f64;
                e.3 += g.count;
            }
            e.1 += g.count;
        }
        if rows.is_empty() {
            out!(
                "no scores for `{}` since {} (online evaluators: docs/quality.md)",
                a.feature,
                a.since
            );
        } else {
            let mut t = table();
            t.set_header([
                "version",
                "evaluator",
                "source",
                "scores",
                "mean",
                &format!("daily mean, {} days", ndays),
            ]);
            for ((v, e, s), (days, n, sum, scored)) in &rows {
                t.add_row([
                    format!("v{v}"),
                    e.clone(),
                    s.clone(),
                    n.to_string(),
                    if *scored > 0 {
                        format!("{:.3}", sum / *scored as f64)
                    } else {
                        "-".into()
                    },
                    sparkline(days),
                ]);
            }
            write_out(format_args!("{t}"));
        }
        if alerts.is_empty() {
            out!("no open drift alerts");
        }
        for al in &alerts {
            out!(
                "DRIFT since {}: v{} {} on {}: {} → {} ({})",
                time(al.opened_at_ms),
                al.feature_version,
                al.evaluator,
                al.model,
                al.evidence["baseline"],
                al.evidence["recent"],
                al.evidence["measure"].as_str().unwrap_or("")
            );
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn sparkline_maps_means_to_bars() {
        assert_eq!(
            super::sparkline(&[Some(0.0), None, Some(0.5), Some(1.0)]),
            "▁·▅█"
        );
    }
}
