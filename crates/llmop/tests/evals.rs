//! Evaluation end to end, through the real binary: datasets pushed and built from
//! records, every evaluator kind, judges whose answers do not parse, pairwise judges
//! asked in both orders, repeats as fresh samples and reruns from the cache, the cost
//! cap, compare verdicts and their exit codes, the deploy gate (CLI and admin API) and
//! judge calibration. The mock provider's rules stage the answers: v1 of `qa` answers
//! every item right, v2 answers 20% of them wrong, v3 answers like v1.

mod support;

use serde_json::{json, Value};
use std::process::Output;
use std::time::Duration;
use support::{client, output_text as out, Gateway};

/// Judges first (their prompts quote the answers), then the feature's answers: a `bad-`
/// item asked by v2 gets "wrong", every other item its `answer=`.
const CONFIG: &str = r#"
[providers.sim]
kind = "mock"
rules = [
  { when = '(?s)JUDGE.*Answer: wrong', reply = '{"reasoning":"the answer says wrong","verdict":"wrong"}' },
  { when = 'JUDGE', reply = '{"reasoning":"looks right","verdict":"correct"}' },
  { when = 'BROKEN', reply = 'I refuse to answer in JSON' },
  { when = 'PAIR', reply = '{"reasoning":"the first one reads better","winner":"A"}' },
  { when = 'v2 Question: bad-', reply = 'wrong' },
  { when = 'Question: \S+ answer=(\w+)', reply = '$1' },
]

[prices."sim/*"]
input = 1.0
output = 2.0

[eval_gates]
prod = { dataset = "qa" }
"#;

fn qa(version_tag: &str) -> String {
    format!(
        r#"name = "qa"
model = "sim/echo"
[variables]
q = {{ type = "string" }}
[[messages]]
role = "user"
template = "{version_tag} Question: {{{{ q }}}}"
"#
    )
}

const JUDGE: &str = r#"name = "judge-qa"
model = "sim/echo"
[variables]
output = { type = "string" }
expected = { type = "string", default = "" }
[[messages]]
role = "user"
template = "JUDGE\nExpected: {{ expected }}\nAnswer: {{ output }}"
[output]
parser = "json"
on_parse_failure = "error"
schema = { type = "object", properties = { reasoning = { type = "string" }, verdict = { type = "string", enum = ["correct", "wrong"] } }, required = ["reasoning", "verdict"] }
"#;

const BROKEN_JUDGE: &str = r#"name = "judge-broken"
model = "sim/echo"
[variables]
output = { type = "string" }
[[messages]]
role = "user"
template = "BROKEN {{ output }}"
[output]
parser = "json"
on_parse_failure = "error"
schema = { type = "object", properties = { reasoning = { type = "string" }, verdict = { type = "string", enum = ["correct", "wrong"] } }, required = ["reasoning", "verdict"] }
"#;

const PAIR_JUDGE: &str = r#"name = "judge-pair"
model = "sim/echo"
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

const EVALS: &str = r#"
feature = "qa"
dataset = "qa"

[policy]
min_items = 20
non_inferiority_margin = 0.1

[[evaluators]]
name = "exact"
kind = "exact"

[[evaluators]]
name = "short"
kind = "length"
max_words = 3

[[evaluators]]
name = "no-apology"
kind = "not_contains"
values = ["sorry"]
case_sensitive = false

[[evaluators]]
name = "shape"
kind = "regex"
pattern = '^\w+$'

[[evaluators]]
name = "close"
kind = "similarity"
threshold = 0.5
gate = false

[[evaluators]]
name = "judge"
kind = "judge"
feature = "judge-qa"
version = 1
choices = { correct = 1.0, wrong = 0.0 }

[[evaluators]]
name = "own-code"
kind = "command"
command = ["sh", "-c", "grep -q '\"output\":\"wrong\"' && echo 0 || echo 1"]
gate = false

[[evaluators]]
name = "prefer"
kind = "pairwise"
feature = "judge-pair"
version = 1
gate = false
"#;

/// `n` items; every fifth is a `bad-` item (v2 answers it wrong).
fn dataset(n: usize) -> String {
    (0..n)
        .map(|i| {
            let kind = if i % 5 == 0 { "bad" } else { "good" };
            let ans = ["yes", "no", "maybe"][i % 3];
            json!({"id": format!("item-{i:03}"), "variables": {"q": format!("{kind}-{i} answer={ans}")}, "expected": ans, "tags": [kind]})
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn stdout_json(o: &Output) -> Value {
    let text = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {}", out(o)))
}

async fn setup() -> Gateway {
    let gw = Gateway::start(CONFIG);
    for f in [
        qa("v1"),
        qa("v2"),
        qa("v3"),
        JUDGE.into(),
        BROKEN_JUDGE.into(),
        PAIR_JUDGE.into(),
    ] {
        gw.push_feature(&f).await;
    }
    gw.write("evals/qa.toml", EVALS);
    gw.write("evals/datasets/qa.jsonl", &dataset(100));
    let o = gw.cli(&["dataset", "push", "evals/datasets/qa.jsonl"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    gw
}

/// Records of eval calls so far (generation and judge calls), once the writer settled.
async fn eval_records(gw: &Gateway) -> i64 {
    let mut last = -1;
    for _ in 0..50 {
        let o = gw.cli(&[
            "query",
            "SELECT COUNT(*) AS n FROM records WHERE env = 'eval'",
            "--json",
        ]);
        let v = stdout_json(&o);
        let n = v["rows"][0][0].as_i64().unwrap_or_else(|| panic!("{v}"));
        if n == last {
            return n;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

#[tokio::test]
async fn compare_verdicts_exit_codes_and_the_deploy_gate() {
    let gw = setup().await;

    // v1 is live in prod: the first deploy of an environment has nothing to compare.
    let o = gw.cli(&["deploy", "qa", "1", "--env", "prod", "--reason", "launch"]);
    assert_eq!(code(&o), 0, "{}", out(&o));

    // v2 has no compare yet: the gate refuses and names the command that would make one.
    let o = gw.cli(&["deploy", "qa", "2", "--env", "prod"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(
        out(&o).contains("llmop eval compare qa --baseline 1 --candidate 2 --dataset qa"),
        "{}",
        out(&o)
    );

    // v2 is wrong on 20% of the items: fail, exit 1, and the flipped items are named.
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "env:prod",
        "--candidate",
        "2",
        "--format",
        "json",
        "--concurrency",
        "16",
    ]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let r = stdout_json(&o);
    assert_eq!(r["verdict"], "fail");
    let exact = r["evaluators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "exact")
        .unwrap();
    assert_eq!(exact["verdict"], "fail", "{exact}");
    assert!(
        (exact["difference"]["mean"].as_f64().unwrap() + 0.2).abs() < 1e-9,
        "{exact}"
    );
    assert!(
        exact["difference"]["hi"].as_f64().unwrap() < -0.1,
        "{exact}"
    );
    let flipped: Vec<&str> = exact["flipped_to_fail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(flipped.len(), 20);
    assert!(flipped.iter().all(|id| {
        let n: usize = id.trim_start_matches("item-").parse().unwrap();
        n.is_multiple_of(5)
    }));
    // The judge saw the same regression; the report-only evaluators do not gate.
    let judge = r["evaluators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "judge")
        .unwrap();
    assert_eq!(judge["verdict"], "fail", "{judge}");
    // A judge that always prefers the first answer, asked in both orders, gives ties.
    let prefer = r["evaluators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "prefer")
        .unwrap();
    assert_eq!(prefer["candidate_mean"].as_f64(), Some(0.5), "{prefer}");
    assert_eq!(prefer["difference"]["mean"].as_f64(), Some(0.0), "{prefer}");
    // The judge was never calibrated: said, not hidden.
    assert!(
        r["warnings"]
            .to_string()
            .contains("judge-qa v1 was never calibrated"),
        "{r}"
    );

    // A failing compare is evidence against: the gate still refuses, naming it.
    let o = gw.cli(&["deploy", "qa", "2", "--env", "prod"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("is `fail`"), "{}", out(&o));
    // So does the admin API, with a stable code.
    let resp = client()
        .post(format!("{}/admin/features/qa/deploy", gw.url))
        .json(&json!({"env": "prod", "version": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "eval_gate_refused", "{body}");

    // v3 answers exactly like v1: pass, exit 0; the baseline's run is reused, not rerun.
    let before = eval_records(&gw).await;
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--format",
        "json",
        "--concurrency",
        "16",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let r = stdout_json(&o);
    assert_eq!(r["verdict"], "pass", "{r}");
    assert_eq!(r["baseline"]["reused"], true);
    assert_eq!(r["candidate"]["reused"], false);
    // Only v3's 100 answers are new calls: v3 answers what v1 answered, so every judge
    // question (same judge version, same inputs, same repeat) was asked before and comes
    // from the cache, pairwise ones included.
    assert_eq!(eval_records(&gw).await - before, 100);

    // Markdown and JUnit for CI, from the same stored runs (nothing rerun).
    let before = eval_records(&gw).await;
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--format",
        "markdown",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert!(out(&o).contains("| exact |"), "{}", out(&o));
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "2",
        "--format",
        "junit",
    ]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("<failure type=\"fail\""), "{}", out(&o));
    // Pairwise judge answers are cached too.
    assert_eq!(eval_records(&gw).await, before);

    // With a passing compare the gate lets v3 through, and the history says why.
    let o = gw.cli(&[
        "deploy",
        "qa",
        "3",
        "--env",
        "prod",
        "--reason",
        "v3 passed",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    // --force needs a reason, and is recorded as forced.
    let o = gw.cli(&["deploy", "qa", "2", "--env", "prod", "--force"]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    let o = gw.cli(&[
        "deploy",
        "qa",
        "2",
        "--env",
        "prod",
        "--force",
        "--reason",
        "hotfix, evals later",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = gw.cli(&["deploy", "history", "qa", "--env", "prod", "--json"]);
    let h = stdout_json(&o);
    assert_eq!(h[0]["gate"], "forced past the eval gate", "{h}");
    assert!(
        h[1]["gate"].as_str().unwrap().starts_with("compare cmp-"),
        "{h}"
    );

    // Three items cannot decide anything: inconclusive, exit 2.
    gw.write("evals/datasets/tiny.jsonl", &dataset(3));
    let o = gw.cli(&["dataset", "push", "evals/datasets/tiny.jsonl"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--dataset",
        "tiny",
    ]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    assert!(out(&o).contains("INCONCLUSIVE"), "{}", out(&o));
    // Errors exit 3.
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--dataset",
        "nope",
    ]);
    assert_eq!(code(&o), 3, "{}", out(&o));
}

#[tokio::test]
async fn runs_repeat_cache_cap_and_judge_errors() {
    let gw = setup().await;
    gw.write("evals/datasets/tiny.jsonl", &dataset(3));
    assert_eq!(
        code(&gw.cli(&["dataset", "push", "evals/datasets/tiny.jsonl"])),
        0
    );

    // Three repeats of three items: nine fresh answers, each its own call.
    let before = eval_records(&gw).await;
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "2",
        "--dataset",
        "tiny",
        "--repeat",
        "3",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let r = stdout_json(&o);
    assert_eq!(r["summary"]["answers"], 9);
    assert_eq!(r["summary"]["cached"], 0);
    assert!(r["summary"]["cost_usd"].as_f64().unwrap() > 0.0);
    let exact = r["summary"]["evaluators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "exact")
        .unwrap()
        .clone();
    // item-000 is a bad item: v2 answers it wrong in every repeat.
    assert!(
        (exact["mean"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{exact}"
    );
    // 9 answers + 9 judge calls (a repeat's judge call is its own sample too).
    assert_eq!(eval_records(&gw).await - before, 18);
    // The run's calls are tagged with it.
    let run_id = r["run"]["id"].as_str().unwrap().to_string();
    let o = gw.cli(&[
        "query",
        &format!("SELECT COUNT(*) FROM records WHERE tags LIKE '%{run_id}%'"),
        "--json",
    ]);
    assert_eq!(stdout_json(&o)["rows"][0][0], 18, "{}", out(&o));

    // The same run again: every answer from the cache, nothing spent, no call made.
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "2",
        "--dataset",
        "tiny",
        "--repeat",
        "3",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let r = stdout_json(&o);
    assert_eq!(r["summary"]["cached"], 9);
    assert_eq!(r["summary"]["cost_usd"], 0.0);
    assert_eq!(eval_records(&gw).await - before, 18);

    // The cost cap stops the run cleanly: partial, exit 2, under the cap.
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "1",
        "--max-usd",
        "0.0005",
        "--concurrency",
        "4",
        "--json",
    ]);
    assert_eq!(code(&o), 2, "{}", out(&o));
    let r = stdout_json(&o);
    assert_eq!(r["run"]["status"], "partial");
    let answers = r["summary"]["answers"].as_u64().unwrap();
    assert!(answers > 0 && answers < 100, "{r}");
    assert!(r["summary"]["cost_usd"].as_f64().unwrap() <= 0.0005, "{r}");
    assert!(r["stopped"].as_str().unwrap().contains("cost cap"), "{r}");
    let o = gw.cli(&["eval", "runs", "qa", "--json"]);
    let runs = stdout_json(&o);
    assert_eq!(runs[0]["status"], "partial", "{runs}");

    // A run larger than a batch of stored results, with more items in flight than the
    // store has connections: results are written while items go on (this once
    // deadlocked on SQLite: a batch's commit waited for an item paused in a transaction).
    gw.write("evals/datasets/big.jsonl", &dataset(250));
    assert_eq!(
        code(&gw.cli(&["dataset", "push", "evals/datasets/big.jsonl"])),
        0
    );
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "3",
        "--dataset",
        "big",
        "--concurrency",
        "32",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    assert_eq!(stdout_json(&o)["summary"]["answers"], 250);

    // A judge whose answer does not parse is an error on every item, never a zero.
    gw.write(
        "evals/broken.toml",
        "feature = \"qa\"\n[[evaluators]]\nname = \"judge\"\nkind = \"judge\"\nfeature = \"judge-broken\"\nversion = 1\nchoices = { correct = 1.0, wrong = 0.0 }\n",
    );
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "1",
        "--dataset",
        "tiny",
        "--evals",
        "evals/broken.toml",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let r = stdout_json(&o);
    let j = &r["summary"]["evaluators"][0];
    assert_eq!(j["errors"], 3, "{j}");
    assert!(j["mean"].is_null(), "{j}");
    assert!(
        j["first_error"].as_str().unwrap().contains("did not parse"),
        "{j}"
    );
    // ...and a compare on it is an error (exit 3), not a verdict.
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--dataset",
        "tiny",
        "--evals",
        "evals/broken.toml",
    ]);
    assert_eq!(code(&o), 3, "{}", out(&o));

    // A judge that is not a proper judge is refused before anything runs.
    gw.write(
        "evals/bad-judge.toml",
        "feature = \"qa\"\n[[evaluators]]\nname = \"judge\"\nkind = \"judge\"\nfeature = \"qa\"\nversion = 1\nchoices = { correct = 1.0 }\n",
    );
    let o = gw.cli(&[
        "eval",
        "run",
        "qa",
        "--version",
        "1",
        "--dataset",
        "tiny",
        "--evals",
        "evals/bad-judge.toml",
    ]);
    assert_eq!(code(&o), 1, "{}", out(&o));
    assert!(out(&o).contains("must answer JSON"), "{}", out(&o));
}

#[tokio::test]
async fn datasets_files_records_and_calibration() {
    let gw = setup().await;
    // list / show / diff
    let o = gw.cli(&["dataset", "push", "evals/datasets/qa.jsonl"]);
    assert!(out(&o).contains("already has this content"), "{}", out(&o));
    let mut changed = dataset(100).replace("\"expected\":\"yes\"", "\"expected\":\"Yes\"");
    changed.push_str("\n{\"id\":\"extra\",\"variables\":{\"q\":\"good-x answer=yes\"}}");
    gw.write("evals/datasets/qa.jsonl", &changed);
    let o = gw.cli(&["dataset", "push", "evals/datasets/qa.jsonl"]);
    assert!(
        out(&o).contains("qa v2 registered (101 items"),
        "{}",
        out(&o)
    );
    let o = gw.cli(&["dataset", "diff", "qa", "1", "2", "--json"]);
    let d = stdout_json(&o);
    assert_eq!(d["added"], json!(["extra"]));
    assert_eq!(d["changed"].as_array().unwrap().len(), 34, "{d}");
    let o = gw.cli(&["dataset", "list"]);
    assert!(
        out(&o).contains("qa") && out(&o).contains("v2"),
        "{}",
        out(&o)
    );
    // CSV, with a bad line named.
    gw.write("evals/datasets/bad.csv", "id,q\nx,one\nx,two\n");
    let o = gw.cli(&["dataset", "push", "evals/datasets/bad.csv"]);
    assert_eq!(code(&o), 1);
    assert!(
        out(&o).contains("`x` appears more than once"),
        "{}",
        out(&o)
    );

    // Production calls become items, keeping their recorded variables (and outputs).
    gw.admin_features("/qa/deploy", json!({"env": "prod", "version": 1}))
        .await;
    for i in 0..4 {
        let r = client()
            .post(format!("{}/v1/features/qa/invoke", gw.url))
            .json(&json!({"variables": {"q": format!("good-{i} answer=yes")}, "env": "prod"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let mut items = Value::Null;
    for _ in 0..50 {
        let o = gw.cli(&[
            "dataset",
            "add",
            "from-prod",
            "--from-records",
            "feature=qa&status=ok",
            "--with-outputs",
            "--json",
        ]);
        if code(&o) == 0 && stdout_json(&o)["items"] == 4 {
            let o = gw.cli(&["dataset", "show", "from-prod", "--json"]);
            items = stdout_json(&o)["items"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let items = items
        .as_array()
        .unwrap_or_else(|| panic!("no dataset from records"));
    assert_eq!(items.len(), 4);
    for it in items {
        let q = it["variables"]["q"].as_str().unwrap();
        assert!(q.starts_with("good-") && q.ends_with("answer=yes"), "{it}");
        assert_eq!(it["expected"], "yes", "{it}");
        assert!(
            it["source"].as_str().unwrap().starts_with("record:"),
            "{it}"
        );
    }
    // From SQL as well.
    let o = gw.cli(&[
        "dataset",
        "add",
        "from-sql",
        "--from-records",
        "SELECT request_id FROM records WHERE feature = 'qa' AND env = 'prod' LIMIT 2",
        "--json",
    ]);
    assert_eq!(stdout_json(&o)["items"], 2, "{}", out(&o));

    // Judge calibration: 10 labelled items, the judge disagrees with people on one.
    let labelled: Vec<String> = (0..10)
        .map(|i| {
            let output = if i < 5 { "yes" } else { "wrong" };
            let human = if i < 5 || i == 9 { "correct" } else { "wrong" };
            json!({"id": format!("l{i}"), "variables": {"output": output, "expected": "yes"}, "labels": [human]}).to_string()
        })
        .collect();
    gw.write("evals/datasets/judge-labels.jsonl", &labelled.join("\n"));
    assert_eq!(
        code(&gw.cli(&["dataset", "push", "evals/datasets/judge-labels.jsonl"])),
        0
    );
    let o = gw.cli(&[
        "eval",
        "calibrate",
        "judge-qa",
        "--version",
        "1",
        "--labels",
        "judge-labels",
        "--json",
    ]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let c = stdout_json(&o);
    assert_eq!(c["n"], 10);
    assert!((c["agreement"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{c}");
    // kappa = (0.9 - 0.5) / (1 - 0.5) with judge 5/5 and people 6/4.
    assert!((c["kappa"].as_f64().unwrap() - 0.8).abs() < 1e-9, "{c}");
    assert!(
        (c["true_positive_rate"].as_f64().unwrap() - 5.0 / 6.0).abs() < 1e-9,
        "{c}"
    );
    assert_eq!(c["false_positive_rate"], 0.0);
    // A compare now trusts the judge: no calibration warning.
    gw.write("evals/datasets/tiny.jsonl", &dataset(3));
    assert_eq!(
        code(&gw.cli(&["dataset", "push", "evals/datasets/tiny.jsonl"])),
        0
    );
    let o = gw.cli(&[
        "eval",
        "compare",
        "qa",
        "--baseline",
        "1",
        "--candidate",
        "3",
        "--dataset",
        "tiny",
        "--format",
        "json",
    ]);
    let r = stdout_json(&o);
    assert!(!r["warnings"].to_string().contains("judge-qa"), "{r}");
}
