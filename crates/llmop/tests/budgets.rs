//! Budgets, session budgets and rate limits against the real binary: hard limits refuse
//! with the right error and never reach the upstream, soft alerts fire once per window,
//! per-request caps clamp max_tokens, agent loops stop at max_calls with a handoff hint,
//! keys and route targets are rate limited, and two replicas sharing Redis and
//! PostgreSQL never overspend under 64 concurrent calls.

mod support;

use futures::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;
use support::{client, Gateway, PgDb, Reply, Upstream};

/// An OpenAI answer that used 5 prompt and 5 completion tokens.
fn small_answer() -> Reply {
    Reply::ok(
        json!({
            "id": "chatcmpl-b", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
        })
        .to_string(),
    )
}

/// `up/m` costs $1,000 per million tokens: $0.01 per answer above; a call with
/// `max_tokens = 10` reserves a little more than that.
fn config(up: &Upstream, extra: &str) -> String {
    format!(
        "[providers.up]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [prices.\"up/*\"]\ninput = 1000.0\noutput = 1000.0\n{extra}",
        up.url
    )
}

async fn call(
    gw: &Gateway,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, h, r.json().await.unwrap())
}

fn hi(max_tokens: u32) -> Value {
    json!({"model": "up/m", "max_tokens": max_tokens, "messages": [{"role": "user", "content": "say hi to everyone here"}]})
}

#[tokio::test]
async fn a_hard_budget_refuses_with_the_scope_window_spend_and_limit() {
    let up = Upstream::start(|_, _| small_answer()).await;
    let gw = Gateway::start(&config(
        &up,
        "[[budgets]]\nscope = \"user:*\"\nwindow = \"day\"\nhard_usd = 0.05\n",
    ));
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..10 {
        let (s, h, v) = call(&gw, &[("x-llmop-user", "ann")], hi(10)).await;
        match s {
            200 => ok += 1,
            429 => {
                refused = Some((h, v));
                break;
            }
            other => panic!("{other}: {v}"),
        }
    }
    let (h, v) = refused.expect("the budget never refused");
    assert!((3..=5).contains(&ok), "{ok} calls before the limit");
    assert_eq!(v["error"]["code"], "budget_exceeded");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("user:ann") && m.contains("day") && m.contains("$0.05 hard limit"),
        "{m}"
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 86_400);
    // The refused call never reached the upstream.
    assert_eq!(up.count(), ok);
    // Another user has their own budget.
    assert_eq!(call(&gw, &[("x-llmop-user", "bob")], hi(10)).await.0, 200);

    // `llmop budgets`: spend per subject in the current window, from the records.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args([
            "budgets",
            "--json",
            "--config",
            gw.dir().join("llmop.toml").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let rows: Value = serde_json::from_slice(&o.stdout).unwrap();
    let ann = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["subject"] == "ann")
        .unwrap();
    assert!(
        (ann["spent_usd"].as_f64().unwrap() - ok as f64 * 0.01).abs() < 1e-9,
        "{ann}"
    );
    assert_eq!(ann["hard_usd"], 0.05);
    assert!(ann["projected_usd"].as_f64().unwrap() >= ann["spent_usd"].as_f64().unwrap());
    // The same through the admin API.
    let v = support::get_json(&gw, "/admin/budgets").await;
    assert!(
        v["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["subject"] == "bob"),
        "{v}"
    );
}

#[tokio::test]
async fn a_soft_budget_alerts_exactly_once_per_window() {
    let hook = Upstream::start(|_, _| Reply::ok("{}".into())).await;
    let up = Upstream::start(|_, _| small_answer()).await;
    let gw = Gateway::start(&config(
        &up,
        &format!(
            "[[budgets]]\nscope = \"feature:*\"\nsoft_usd = 0.025\n[alerts]\nwebhook_url = \"{}/alerts\"\n",
            hook.url
        ),
    ));
    for _ in 0..8 {
        let (s, _, _) = call(&gw, &[("x-llmop-feature", "summarize")], hi(10)).await;
        assert_eq!(s, 200, "a soft limit never refuses");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.count(), 1, "one alert for the window");
    let alert = hook.last().body;
    assert_eq!(alert["type"], "budget.soft_limit");
    assert_eq!(alert["scope"], "feature:summarize");
    assert_eq!(alert["window"], "day");
    assert!(alert["spent_usd"].as_f64().unwrap() >= 0.025);
    // Another feature crossing its own soft limit alerts separately.
    for _ in 0..3 {
        call(&gw, &[("x-llmop-feature", "translate")], hi(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(hook.count(), 2);
}

#[tokio::test]
async fn a_per_request_cap_clamps_max_tokens_or_refuses() {
    let up = Upstream::start(|_, _| small_answer()).await;
    // $0.02 a request: ~20 tokens at $1,000 per million.
    let gw = Gateway::start(&config(
        &up,
        "[[budgets]]\nscope = \"request\"\nhard_usd = 0.02\n",
    ));
    let (s, _, v) = call(&gw, &[], hi(1000)).await;
    assert_eq!(s, 200, "{v}");
    let sent = up.last().body;
    let max = sent["max_completion_tokens"]
        .as_u64()
        .or(sent["max_tokens"].as_u64())
        .unwrap();
    assert!(max < 20, "max_tokens clamped to what fits: {max}");
    // A prompt that alone is over the cap is refused.
    let long = "word ".repeat(200);
    let (s, _, v) = call(
        &gw,
        &[],
        json!({"model": "up/m", "messages": [{"role": "user", "content": long}]}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("budget_exceeded")),
        "{v}"
    );
    assert_eq!(up.count(), 1);
}

#[tokio::test]
async fn an_agent_loop_is_stopped_at_max_calls_with_a_handoff_hint() {
    let up = Upstream::start(|_, _| small_answer()).await;
    let gw = Gateway::start(&config(
        &up,
        "[[budgets]]\nscope = \"session:*\"\nmax_calls = 5\nmax_duration_s = 600\n",
    ));
    let mut served = 0;
    let stopped = loop {
        let (s, h, v) = call(&gw, &[("x-llmop-session", "loop-1")], hi(10)).await;
        if s != 200 {
            break (s, h, v);
        }
        served += 1;
        assert!(served <= 5, "the loop was not stopped");
    };
    assert_eq!(served, 5);
    let (s, h, v) = stopped;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("session_budget_exceeded"))
    );
    assert_eq!(v["error"]["handoff"]["to"], "human");
    assert_eq!(h["x-llmop-handoff"], "human");
    assert_eq!(up.count(), 5);
    // Other sessions carry on.
    assert_eq!(
        call(&gw, &[("x-llmop-session", "loop-2")], hi(10)).await.0,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_route_targets_are_rate_limited() {
    let up = Upstream::start(|_, _| small_answer()).await;
    let spare = Upstream::start(|_, _| small_answer()).await;
    let gw = Gateway::start(&format!(
        "{}[providers.spare]\nkind = \"openai\"\nbase_url = \"{}/v1\"\n\
         [routes.quota]\ntargets = [{{ provider = \"up\", model = \"m\", rpm = 2 }}, {{ provider = \"spare\", model = \"m\" }}]\n\
         [features]\nrefresh_ms = 50\n",
        config(&up, ""),
        spare.url
    ));
    // A route target at its provider quota hands over to the next target.
    for _ in 0..4 {
        let (s, _, v) = call(&gw, &[], json!({"model": "quota", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})).await;
        assert_eq!(s, 200, "{v}");
    }
    assert_eq!((up.count(), spare.count()), (2, 2));

    // A key with rpm = 3.
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args([
            "keys", "create", "--name", "slow", "--rpm", "3", "--json", "--store", &store,
        ])
        .output()
        .unwrap();
    let key = serde_json::from_slice::<Value>(&o.stdout).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let auth = format!("Bearer {key}");
    // Wait until the gateway has loaded the key (calls without one are then refused).
    let start = std::time::Instant::now();
    while call(&gw, &[], hi(5)).await.0 != 401 {
        assert!(start.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        assert_eq!(call(&gw, &[("authorization", &auth)], hi(5)).await.0, 200);
    }
    let (s, h, v) = call(&gw, &[("authorization", &auth)], hi(5)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{v}"
    );
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
}

#[tokio::test]
async fn two_replicas_sharing_redis_never_overspend_under_64_concurrent_calls() {
    let db = PgDb::create().await;
    let prefix = format!("llmop-test-{}-{}:", std::process::id(), db.url.len());
    let up = Upstream::start(|_, _| small_answer()).await;
    // Each answer costs $0.01; the hard budget is worth ten of them.
    let cfg = config(
        &up,
        &format!(
            "[store]\nurl = \"{}\"\ndurability = \"strict\"\n[counters]\nurl = \"redis://127.0.0.1:6379\"\n\
             [[budgets]]\nscope = \"global\"\nwindow = \"day\"\nhard_usd = 0.10\n",
            db.url
        ),
    );
    let env = [("LLMOP_COUNTERS_PREFIX", prefix.as_str())];
    let a = Gateway::start_with_env(&cfg, &env);
    let b = Gateway::start_with_env(&cfg, &env);
    let results: Vec<u16> = futures::stream::iter(0..64)
        .map(|i| {
            let gw = if i % 2 == 0 { &a } else { &b };
            async move { call(gw, &[], hi(10)).await.0 }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let ok = results.iter().filter(|s| **s == 200).count();
    let refused = results.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 64, "{results:?}");
    assert!(ok >= 1 && refused >= 1, "{ok} ok, {refused} refused");
    // No refused call reached the upstream.
    assert_eq!(up.count(), ok);
    // The spend recorded (strict: every answer is committed) is within the limit: each
    // reservation covered its call's real cost.
    let store = llmop_store::Store::open(&db.url).await.unwrap();
    let rows = store.cost_by(&llmop_store::CostBy::Model, 0).await.unwrap();
    let spent: f64 = rows.iter().map(|r| r.cost_usd).sum();
    assert!(spent <= 0.10 + 1e-9, "spent {spent}");
    assert!((spent - ok as f64 * 0.01).abs() < 1e-9);
    eprintln!("64 concurrent calls on 2 replicas: {ok} served, {refused} refused, ${spent:.4} spent of $0.10");
    // The next call is refused on both replicas once the window's spend is settled.
    store.close().await;
    drop((a, b));
    support::redis_cleanup(&prefix).await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_unreachable_redis_follows_the_configured_policy() {
    let up = Upstream::start(|_, _| small_answer()).await;
    let budget = "[[budgets]]\nscope = \"global\"\nhard_usd = 1.0\n";
    let closed = Gateway::start(&config(
        &up,
        &format!("{budget}[counters]\nurl = \"redis://127.0.0.1:1\"\non_error = \"fail_closed\"\n"),
    ));
    let (s, _, v) = call(&closed, &[], hi(5)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (503, Some("counters_unavailable")),
        "{v}"
    );
    assert_eq!(up.count(), 0);
    let open = Gateway::start(&config(
        &up,
        &format!("{budget}[counters]\nurl = \"redis://127.0.0.1:1\"\non_error = \"fail_open\"\n"),
    ));
    assert_eq!(call(&open, &[], hi(5)).await.0, 200);
    let metrics = open.metrics().await;
    assert!(metrics.contains("llmop_counter_errors_total"), "{metrics}");
}

#[tokio::test]
async fn budgets_added_through_the_admin_api_apply_at_once_and_can_be_removed() {
    let up = Upstream::start(|_, _| small_answer()).await;
    let gw = Gateway::start(&config(&up, ""));
    assert_eq!(call(&gw, &[("x-llmop-user", "cy")], hi(10)).await.0, 200);
    let r = client()
        .post(format!("{}/admin/budgets", gw.url))
        .json(&json!({"scope": "user:cy", "window": "hour", "hard_usd": 0.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _, v) = call(&gw, &[("x-llmop-user", "cy")], hi(10)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("budget_exceeded"))
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("hour"));
    // Invalid budgets are refused, naming the field.
    let r = client()
        .post(format!("{}/admin/budgets", gw.url))
        .json(&json!({"scope": "users:*", "hard_usd": 1.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "scope");
    let r = client()
        .delete(format!("{}/admin/budgets/{id}", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(call(&gw, &[("x-llmop-user", "cy")], hi(10)).await.0, 200);
}
