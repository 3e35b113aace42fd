//! Quality in production, through the real binary: online evaluators score recorded
//! calls off the request path (sampled, filtered by environment, judges within a daily
//! cap), their queued work survives a crash, and feedback becomes `human` scores that
//! `llmop scores` aggregates with the online ones.

mod support;

use serde_json::{json, Value};
use std::process::Output;
use std::time::{Duration, Instant};
use support::{client, output_text as out, Gateway};

/// `sim` answers the feature; `judges` (its own provider, so that a test can make it
/// slow or failing) answers the judge.
fn config(judges: &str, online: &str) -> String {
    format!(
        r#"
[providers.sim]
kind = "mock"
rules = [{{ when = 'Question: \S+ answer=(\w+)', reply = '$1' }}]

[providers.judges]
kind = "mock"
{judges}
rules = [
  {{ when = '(?s)JUDGE.*Answer: no', reply = '{{"reasoning":"no is wrong here","verdict":"wrong"}}' }},
  {{ when = 'JUDGE', reply = '{{"reasoning":"fine","verdict":"correct"}}' }},
  {{ when = '(?s)PAIR\nA: yes\nB: no', reply = '{{"reasoning":"yes is right","winner":"A"}}' }},
  {{ when = '(?s)PAIR\nA: no\nB: yes', reply = '{{"reasoning":"yes is right","winner":"B"}}' }},
  {{ when = 'PAIR', reply = '{{"reasoning":"as good","winner":"tie"}}' }},
]

[prices."judges/*"]
input = 1.0
output = 2.0

[online]
poll_ms = 50
{online}
"#
    )
}

const QA: &str = r#"name = "qa"
model = "sim/echo"
[variables]
q = { type = "string" }
[[messages]]
role = "user"
template = "Question: {{ q }}"
"#;

const JUDGE: &str = r#"name = "judge-qa"
model = "judges/echo"
[variables]
output = { type = "string" }
[[messages]]
role = "user"
template = "JUDGE\nAnswer: {{ output }}"
[output]
parser = "json"
on_parse_failure = "error"
schema = { type = "object", properties = { reasoning = { type = "string" }, verdict = { type = "string", enum = ["correct", "wrong"] } }, required = ["reasoning", "verdict"] }
"#;

fn evals(judge_rate: f64, daily_usd: f64) -> String {
    format!(
        r#"
feature = "qa"
[[evaluators]]
name = "one-word"
kind = "regex"
pattern = '^\w+$'
[[evaluators]]
name = "short"
kind = "length"
max_words = 3
[[evaluators]]
name = "judge"
kind = "judge"
feature = "judge-qa"
version = 1
choices = {{ correct = 1.0, wrong = 0.0 }}
[online]
envs = ["prod"]
sample = {{ judge = {judge_rate} }}
judge_daily_usd = {daily_usd}
"#
    )
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

async fn setup(gw: &Gateway) {
    gw.push_feature(QA).await;
    gw.push_feature(JUDGE).await;
    gw.admin_features("/qa/deploy", json!({"env": "prod", "version": 1}))
        .await;
    gw.admin_features("/qa/deploy", json!({"env": "staging", "version": 1}))
        .await;
}

async fn invoke(gw: &Gateway, env: &str, i: usize) -> (String, Duration) {
    let ans = ["yes", "no", "maybe"][i % 3];
    let t = Instant::now();
    let r = client()
        .post(format!("{}/v1/features/qa/invoke", gw.url))
        .json(&json!({"variables": {"q": format!("q{i} answer={ans}")}, "env": env}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    (v["request_id"].as_str().unwrap().to_string(), t.elapsed())
}

/// `llmop scores --json` rows, keyed by (evaluator, source).
fn scores(gw: &Gateway, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["scores", "--json", "--feature", "qa"];
    args.extend_from_slice(extra);
    let o = gw.cli(&args);
    assert_eq!(code(&o), 0, "{}", out(&o));
    serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o)))
}

fn count(rows: &[Value], evaluator: &str) -> i64 {
    rows.iter()
        .filter(|r| r["evaluator"] == evaluator)
        .map(|r| r["count"].as_i64().unwrap())
        .sum()
}

/// Waits (bounded) until `done` holds of the scores.
async fn wait_for(gw: &Gateway, what: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let rows = scores(gw, &[]);
        if done(&rows) {
            return rows;
        }
        if start.elapsed() > Duration::from_secs(20) {
            panic!("{what}: {rows:?}\n{}", gw.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn online_scores_sampling_latency_and_feedback() {
    // The judge takes 800 ms: a scored call must not wait for it.
    let gw = Gateway::start_with_files(
        &config("latency_ms = 800", ""),
        &[("evals/qa.toml", &evals(0.5, 100.0))],
    );
    setup(&gw).await;
    let mut ids = Vec::new();
    let mut slowest = Duration::ZERO;
    for i in 0..60 {
        let (id, took) = invoke(&gw, "prod", i).await;
        slowest = slowest.max(took);
        ids.push(id);
    }
    // Staging is not in the eval file's environments: never scored.
    let (staging, _) = invoke(&gw, "staging", 0).await;
    assert!(
        slowest < Duration::from_millis(700),
        "a call waited for its online judge: {slowest:?}"
    );
    // Deterministic checks score every call; the judge about half of them (the draw
    // is per call: within 4 standard deviations of 30).
    let rows = wait_for(&gw, "every call scored", |r| {
        count(r, "one-word") == 60 && count(r, "short") == 60
    })
    .await;
    let judged = wait_for(&gw, "judged calls", |r| count(r, "judge") >= 15).await;
    let n = count(&judged, "judge");
    assert!((15..=45).contains(&n), "{n} of 60 judged at a rate of 0.5");
    let one_word = rows.iter().find(|r| r["evaluator"] == "one-word").unwrap();
    assert_eq!(one_word["pass_rate"], 1.0);
    assert_eq!(one_word["source"], "online");
    assert_eq!(one_word["feature_version"], 1);
    // The judge says `wrong` for every "no" answer: a third of what it judged.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let judged = scores(&gw, &["--evaluator", "judge"]);
    let rate = judged[0]["pass_rate"].as_f64().unwrap();
    assert!(rate > 0.4 && rate < 0.9, "{judged:?}");
    let o = gw.cli(&["scores", "--request", &staging, "--json"]);
    assert_eq!(
        serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap(),
        Vec::<Value>::new()
    );
    // One call's scores, each named by its evaluator; judge scores name the judge version.
    let o = gw.cli(&["scores", "--request", &ids[0], "--json"]);
    let one: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(one.iter().any(|s| s["evaluator"] == "short"), "{one:?}");
    if let Some(j) = one.iter().find(|s| s["evaluator"] == "judge") {
        assert_eq!(j["judge"], "judge-qa v1");
    }

    // Feedback through the API is a `human` score beside the online ones.
    let r = client()
        .post(format!("{}/v1/requests/{}/feedback", gw.url, ids[1]))
        .json(&json!({"score": 0.0, "label": "unhelpful", "comment": "wrong answer"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let human = scores(&gw, &["--source", "human"]);
    assert_eq!(human.len(), 1, "{human:?}");
    assert_eq!(human[0]["evaluator"], "feedback");
    assert_eq!(human[0]["count"], 1);
    assert_eq!(human[0]["pass_rate"], 0.0);
    let o = gw.cli(&["scores", "--feature", "qa", "--by-day"]);
    assert!(
        out(&o).contains("feedback") && out(&o).contains("one-word"),
        "{}",
        out(&o)
    );
    // The queue is empty once everything is scored.
    let metrics = gw.metrics().await;
    assert!(metrics.contains("llmop_online_scores_total"), "{metrics}");
}

#[tokio::test]
async fn judge_daily_cap_holds() {
    let gw = Gateway::start_with_files(
        &config("", "concurrency = 1"),
        &[("evals/qa.toml", &evals(1.0, 0.000001))],
    );
    setup(&gw).await;
    for i in 0..10 {
        invoke(&gw, "prod", i).await;
    }
    // Deterministic checks scored every call where its record was built (stored when
    // the record is: the writer commits in batches, so wait for it).
    wait_for(&gw, "deterministic checks", |r| count(r, "short") == 10).await;
    // The first judge call spends past the cap; the other nine calls' judges are
    // skipped for the day (counted), and no second judge score appears.
    let start = Instant::now();
    loop {
        let m = gw.metrics().await;
        let capped = m
            .lines()
            .find(|l| l.starts_with("llmop_online_judge_capped_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        if capped == Some(9.0) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{capped:?}\n{m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = scores(&gw, &[]);
    assert_eq!(count(&rows, "judge"), 1, "{rows:?}");
}

#[tokio::test]
async fn queued_work_survives_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shared.db");
    let evals_dir = dir.path().join("evals");
    std::fs::create_dir_all(&evals_dir).unwrap();
    std::fs::write(evals_dir.join("qa.toml"), evals(1.0, 100.0)).unwrap();
    let store = format!(
        "[store]\nurl = \"sqlite://{}\"\ndurability = \"strict\"\n",
        db.display()
    );
    let online = format!("evals_dir = \"{}\"", evals_dir.display());
    // The judge's provider is down: the judge scores stay queued, retried with backoff.
    let mut gw = Gateway::start(&format!(
        "{store}{}",
        config("error_rate = 1.0\nerror_status = 503", &online)
    ));
    setup(&gw).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(invoke(&gw, "prod", i).await.0);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(&scores(&gw, &[]), "judge"), 0);
    gw.kill_hard();

    // Back up with a healthy judge: the queued work is done.
    let gw = Gateway::start(&format!("{store}{}", config("", &online)));
    let rows = wait_for(&gw, "judged after the restart", |r| count(r, "judge") == 5).await;
    assert_eq!(count(&rows, "short"), 5);
}

const DRIFT_EVALS: &str = r#"
feature = "qa"
[[evaluators]]
name = "says-yes"
kind = "regex"
pattern = '^yes$'
[online]
envs = ["prod"]
[online.drift]
window = "3s"
baseline = "2m"
margin = 0.1
min_samples = 20
check_every = "250ms"
"#;

/// Drift, staged: 60 calls answered `yes` (the baseline), then 40 answered `no`. The
/// drop raises exactly one alert (an episode), through the log and the metric, and the
/// alert names the evidence; nothing is raised while quality is stable.
#[tokio::test]
async fn a_quality_drop_raises_one_drift_alert() {
    let gw = Gateway::start_with_files(&config("", ""), &[("evals/qa.toml", DRIFT_EVALS)]);
    setup(&gw).await;
    let ask = |i: usize, ans: &'static str| {
        let url = format!("{}/v1/features/qa/invoke", gw.url);
        async move {
            let r = client()
                .post(url)
                .json(&json!({"variables": {"q": format!("q{i} answer={ans}")}, "env": "prod"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    for i in 0..60 {
        ask(i, "yes").await;
    }
    wait_for(&gw, "baseline scored", |r| count(r, "says-yes") == 60).await;
    // Let the baseline age out of the recent window; checks run meanwhile.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let alerts = |gw: &Gateway| -> i64 {
        let o = gw.cli(&["query", "SELECT COUNT(*) FROM drift_alerts", "--json"]);
        let v: Value =
            serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o)));
        v["rows"][0][0].as_i64().unwrap()
    };
    assert_eq!(alerts(&gw), 0, "stable quality raised an alert");
    for i in 60..100 {
        ask(i, "no").await;
    }
    wait_for(&gw, "drop scored", |r| count(r, "says-yes") == 100).await;
    let line = gw.wait_for_log_line("quality drift");
    assert!(
        line.contains("says-yes") && line.contains("baseline=1"),
        "{line}"
    );
    // More checks pass: still one episode.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(alerts(&gw), 1);
    let o = gw.cli(&[
        "query",
        "SELECT evaluator, model, evidence FROM drift_alerts WHERE closed_at_ms IS NULL",
        "--json",
    ]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["rows"][0][0], "says-yes");
    assert_eq!(v["rows"][0][1], "sim/echo");
    let evidence: Value = serde_json::from_str(v["rows"][0][2].as_str().unwrap()).unwrap();
    assert_eq!(evidence["measure"], "pass_rate");
    assert_eq!(evidence["recent"], 0.0);
    assert!(gw.metrics().await.contains("llmop_drift_alerts_total"));
    // So does the admin API.
    let q = support::get_json(&gw, "/admin/quality?feature=qa&since=1h").await;
    assert_eq!(q["open_drift_alerts"][0]["evaluator"], "says-yes", "{q}");
    assert!(q["days"].as_array().is_some_and(|d| !d.is_empty()), "{q}");
    // `llmop quality` shows the scores over time and the open episode.
    let o = gw.cli(&["quality", "qa"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(
        out(&o).contains("says-yes") && out(&o).contains("DRIFT since"),
        "{}",
        out(&o)
    );
}

const CANARY_EVALS: &str = r#"
feature = "qa"
[[evaluators]]
name = "says-yes"
kind = "regex"
pattern = '^yes$'
[online]
[online.canary]
on_regression = "rollback"
margin = 0.1
min_calls = 20
promote = true
check_every = "200ms"
"#;

fn qa_tagged(tag: &str) -> String {
    QA.replace("Question:", &format!("{tag} Question:"))
}

/// Canaries, staged: v2 answers `no` to everything (worse), v3 answers like v1 (equal).
/// A split to v2 is rolled back automatically, the audited reason naming the evidence;
/// a split to v3 is promoted (and never rolled back).
#[tokio::test]
async fn canaries_are_rolled_back_or_promoted_on_evidence() {
    let cfg = config("", "").replace(
        "rules = [{ when = 'Question",
        "rules = [{ when = 'v2 Question', reply = 'no' }, { when = 'Question",
    );
    let gw = Gateway::start_with_files(&cfg, &[("evals/qa.toml", CANARY_EVALS)]);
    for v in ["v1", "v2", "v3"] {
        gw.push_feature(&qa_tagged(v)).await;
    }
    gw.admin_features("/qa/deploy", json!({"env": "prod", "version": 1}))
        .await;
    let traffic = |from: usize| {
        let url = format!("{}/v1/features/qa/invoke", gw.url);
        async move {
            for i in from..from + 120 {
                let r = client()
                    .post(&url)
                    .json(&json!({"variables": {"q": format!("q{i} answer=yes")}, "env": "prod", "user": format!("user-{i}")}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }
    };
    let history = |gw: &Gateway| -> Vec<Value> {
        let o = gw.cli(&["deploy", "history", "qa", "--env", "prod", "--json"]);
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", out(&o)))
    };
    let wait_change = |gw: &Gateway, seq: i64| {
        let start = Instant::now();
        loop {
            let h = history(gw);
            if h[0]["seq"].as_i64().unwrap() >= seq {
                return h;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no canary decision: {h:?}\n{}",
                gw.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    // v2 on half the users: worse, rolled back to v1.
    gw.admin_features("/qa/deploy", json!({"env": "prod", "split": "1=50,2=50"}))
        .await;
    traffic(0).await;
    let h = wait_change(&gw, 3);
    assert_eq!(h[0]["actor"], "llmop:canary", "{h:?}");
    assert_eq!(
        h[0]["to"]["arms"],
        json!([{"version": 1, "weight": 100}]),
        "{h:?}"
    );
    let reason = h[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("canary v2 is worse than v1")
            && reason.contains("says-yes: v2 pass_rate 0.000 vs v1 1.000"),
        "{reason}"
    );

    // v3 on half the users: not worse, promoted.
    gw.admin_features("/qa/deploy", json!({"env": "prod", "split": "1=50,3=50"}))
        .await;
    traffic(1000).await;
    let h = wait_change(&gw, 5);
    assert_eq!(h[0]["actor"], "llmop:canary", "{h:?}");
    assert_eq!(
        h[0]["to"]["arms"],
        json!([{"version": 3, "weight": 100}]),
        "{h:?}"
    );
    assert!(
        h[0]["reason"]
            .as_str()
            .unwrap()
            .contains("canary v3 is not worse than v1"),
        "{h:?}"
    );
    // And it stays: no rollback follows.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(history(&gw)[0]["seq"], 5);
}

const PAIR_JUDGE: &str = r#"name = "judge-pair"
model = "judges/echo"
[variables]
a = { type = "string" }
b = { type = "string" }
[[messages]]
role = "user"
template = "PAIR\nA: {{ a }}\nB: {{ b }}"
[output]
parser = "json"
on_parse_failure = "error"
schema = { type = "object", properties = { reasoning = { type = "string" }, winner = { type = "string", enum = ["A", "B", "tie"] } }, required = ["reasoning", "winner"] }
"#;

/// Shadows judged pairwise: v2 (answers `no`) shadows v1 (answers `yes`); the judge,
/// asked in both orders, prefers `yes` each time: the primary wins every pair, and the
/// interval of the shadow's preference lies below one half.
#[tokio::test]
async fn shadow_report_judges_pairs_in_both_orders() {
    let cfg = config("", "").replace(
        "rules = [{ when = 'Question",
        "rules = [{ when = 'v2 Question', reply = 'no' }, { when = 'Question",
    );
    let evals = "feature = \"qa\"\n[[evaluators]]\nname = \"prefer\"\nkind = \"pairwise\"\nfeature = \"judge-pair\"\nversion = 1\n";
    let gw = Gateway::start_with_files(&cfg, &[("evals/qa.toml", evals)]);
    gw.push_feature(&qa_tagged("v1")).await;
    gw.push_feature(&qa_tagged("v2")).await;
    gw.push_feature(PAIR_JUDGE).await;
    gw.admin_features(
        "/qa/deploy",
        json!({"env": "prod", "version": 1, "shadow": 2}),
    )
    .await;
    for i in 0..30 {
        invoke(&gw, "prod", 3 * i).await; // answer=yes
    }
    // Shadows run after their primaries, on their own tasks.
    let start = Instant::now();
    loop {
        let o = gw.cli(&[
            "query",
            "SELECT COUNT(*) FROM records WHERE shadow = 1 AND status = 200",
            "--json",
        ]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["rows"][0][0] == 30 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let o = gw.cli(&["shadow", "report", "qa", "--pairwise", "--json"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let r: Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &r["evaluators"][0];
    assert_eq!(e["pairs"], 30, "{r}");
    assert_eq!(e["primary_wins"], 30, "{r}");
    assert_eq!(e["shadow_wins"], 0, "{r}");
    assert!(
        e["preference_minus_half"]["hi"].as_f64().unwrap() < 0.0,
        "{r}"
    );
    let o = gw.cli(&["shadow", "report", "qa", "--pairwise"]);
    assert!(
        out(&o).contains("shadow v2 against primary v1"),
        "{}",
        out(&o)
    );
}
