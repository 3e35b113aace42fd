//! Each budget's spend from the records: the cold path behind `llmop budgets` and
//! `GET /admin/budgets`.

use super::*;

/// Each configured budget's spend in its current window, from the records (what
/// `llmop budgets` and `GET /admin/budgets` show): subject, spend, calls, limits, burn
/// rate per hour and the spend projected to the window's end.
pub async fn report(
    budgets: &[BudgetConfig],
    store: &llmop_store::Store,
    now: i64,
) -> Result<Vec<serde_json::Value>, llmop_store::StoreError> {
    use llmop_store::CostBy;
    let mut out = Vec::new();
    for b in budgets {
        let scope = &b.scope;
        let window = b.window();
        if window == Window::Request {
            out.push(
                serde_json::json!({"scope": b.scope, "window": "request", "hard_usd": b.hard_usd,
                "note": "a cap on each request: nothing accumulates"}),
            );
            continue;
        }
        let (start, end) = window.bounds(now);
        let (by, only): (CostBy, Option<String>) = match scope {
            Scope::Global => (CostBy::Model, None),
            Scope::Key(k) => (CostBy::Key, k.clone()),
            Scope::User(u) => (CostBy::User, u.clone()),
            Scope::Feature(f) => (CostBy::Feature, f.clone()),
            Scope::Tag(k, v) => (CostBy::Tag(k.clone()), Some(v.clone())),
            Scope::Session => (CostBy::Session, None),
            Scope::Request => continue,
        };
        let rows = store.cost_by(&by, start).await?;
        let mut groups: Vec<(String, f64, i64)> = Vec::new();
        if *scope == Scope::Global {
            groups.push((
                "global".into(),
                rows.iter().map(|r| r.cost_usd).sum(),
                rows.iter().map(|r| r.calls).sum(),
            ));
        } else {
            for r in rows {
                let Some(g) = r.group else { continue };
                if only.as_ref().is_some_and(|o| *o != g) {
                    continue;
                }
                groups.push((g, r.cost_usd, r.calls));
            }
        }
        let elapsed_h = ((now - start).max(1) as f64) / 3_600_000.0;
        let window_h = ((end - start) as f64) / 3_600_000.0;
        for (subject, spent, calls) in groups {
            let burn = spent / elapsed_h;
            out.push(serde_json::json!({
                "scope": b.scope, "subject": subject, "window": window.as_str(),
                "window_end_ms": end, "spent_usd": spent, "calls": calls,
                "soft_usd": b.soft_usd, "hard_usd": b.hard_usd, "max_calls": b.max_calls,
                "burn_usd_per_hour": burn, "projected_usd": burn * window_h,
            }));
        }
    }
    Ok(out)
}
