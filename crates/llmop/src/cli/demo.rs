//! `llmop demo`: a gateway on the mock provider with a demo config (features with a
//! split and a shadow, budgets, a flaky target behind a fallback), then a few minutes
//! of realistic traffic (users, agent sessions, streams, failures, budget refusals), so
//! a newcomer sees a populated console in one command. The gateway keeps serving after
//! the traffic (Ctrl-C stops it), on a store kept in the demo's directory.

use anyhow::{bail, Context};
use clap::Args;
use rand::Rng;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Where the demo's config, features and record store go (created if missing).
    #[arg(long, default_value = "llmop-demo")]
    dir: PathBuf,
    /// Listen address (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// How long to send traffic, in seconds.
    #[arg(long, default_value_t = 180)]
    seconds: u64,
    /// Calls per second.
    #[arg(long, default_value_t = 8.0)]
    rate: f64,
    /// Stop the gateway once the traffic is sent (instead of serving until Ctrl-C).
    #[arg(long)]
    exit: bool,
}

const CONFIG: &str = r#"# llmop demo: mock providers only, nothing leaves this machine.
[server]
listen = "{listen}"

[store]
url = "sqlite://{store}"

[providers.sim]
kind = "mock"
latency_ms = 35
models = ["small", "large"]
rules = [
  { when = "(?i)classify", reply = "{\"intent\": \"refund\", \"confidence\": 0.93}" },
  { when = "(?i)summari[sz]e", reply = "{\"summary\": \"The customer cannot export invoices since the last update and asks for a workaround.\"}" },
  { when = "(?i)order (\\w+)", reply = "Order $1 left our warehouse this morning; tracking follows by email." },
]
reply = "Thanks for reaching out! I have looked into it: a fix ships this week."

# A target that fails a third of its calls, behind a fallback (route `smart`).
[providers.flaky]
kind = "mock"
latency_ms = 120
error_rate = 0.35
error_status = 503

[providers.backup]
kind = "mock"
latency_ms = 60

[prices."sim/*"]
input = 2.5
output = 10.0
[prices."flaky/*"]
input = 5.0
output = 15.0
[prices."backup/*"]
input = 0.15
output = 0.6

[routes.fast]
targets = [{ provider = "sim", model = "small" }]

[routes.smart]
targets = [{ provider = "flaky", model = "large" }, { provider = "backup", model = "small" }]

# An intern with a tiny daily budget: refused once it is spent.
[[budgets]]
scope = "user:intern"
window = "day"
hard_usd = 0.00002

[[budgets]]
scope = "global"
window = "month"
soft_usd = 5
hard_usd = 100

[[budgets]]
scope = "session:*"
max_calls = 6
"#;

const SUPPORT_V1: &str = r#"name = "support-reply"
description = "A reply to a customer's message."
route = "fast"
[variables]
message = { type = "string" }
[[messages]]
role = "system"
template = "You answer customer support messages kindly and briefly."
[[messages]]
role = "user"
template = "{{ message }}"
"#;

const SUPPORT_V2: &str = r#"name = "support-reply"
description = "A reply to a customer's message, with the order status when one is named."
route = "smart"
[variables]
message = { type = "string" }
[[messages]]
role = "system"
template = "You answer customer support messages kindly, in two sentences at most, and give the order status when the customer names an order."
[[messages]]
role = "user"
template = "{{ message }}"
"#;

const SUMMARIZE: &str = r#"name = "summarize-ticket"
description = "One-sentence summary of a ticket, as JSON."
route = "fast"
[variables]
ticket = { type = "string" }
[[messages]]
role = "system"
template = "Summarize the support ticket in one sentence. Answer in JSON."
[[messages]]
role = "user"
template = "{{ ticket }}"
[output]
parser = "json"
schema = { type = "object", properties = { summary = { type = "string" } }, required = ["summary"] }
"#;

const CLASSIFY: &str = r#"name = "classify-intent"
description = "The intent of a customer's message."
model = "sim/large"
[variables]
message = { type = "string" }
[[messages]]
role = "user"
template = "Classify the intent of: {{ message }}"
[output]
parser = "json"
schema = { type = "object", properties = { intent = { type = "string" } }, required = ["intent"] }
"#;

const MESSAGES: &[&str] = &[
    "Where is my order A1042?",
    "I was charged twice for my subscription.",
    "The export button does nothing since the last update.",
    "Can I change the delivery address of order B2211?",
    "How do I reset my password?",
    "I want a refund for my last purchase.",
    "The app crashes when I open the invoices page.",
];

pub fn run(a: DemoArgs) -> ExitCode {
    // The demo's own output is the progress; the gateway logs only warnings.
    if std::env::var_os("LLMOP_LOG").is_none() {
        std::env::set_var("LLMOP_LOG", "warn");
    }
    let _log = super::serve::init_logging(super::serve::LogFormat::Text);
    super::block_on(tokio::runtime::Builder::new_multi_thread(), demo(a), 1)
}

/// An address with a concrete port: port 0 is resolved here, so the demo knows where
/// its gateway listens.
fn concrete(listen: &str) -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (pass --listen another address)"))?;
    Ok(l.local_addr()?.to_string())
}

fn write_files(dir: &Path, listen: &str) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("features"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let store = dir.join("llmop.db");
    let config = CONFIG
        .replace("{listen}", listen)
        .replace("{store}", &store.display().to_string());
    let path = dir.join("llmop.toml");
    std::fs::write(&path, config)?;
    for (name, text) in [
        ("support-reply.toml", SUPPORT_V2),
        ("summarize-ticket.toml", SUMMARIZE),
        ("classify-intent.toml", CLASSIFY),
    ] {
        std::fs::write(dir.join("features").join(name), text)?;
    }
    Ok(path)
}

async fn admin(
    c: &reqwest::Client,
    url: &str,
    path: &str,
    body: reqwest::Body,
    json: bool,
) -> anyhow::Result<Value> {
    let mut r = c.post(format!("{url}{path}")).body(body);
    if json {
        r = r.header("content-type", "application/json");
    }
    let r = r.send().await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{path}: {status} {}", v["error"]["message"]);
    }
    Ok(v)
}

/// Registers the features and deploys them: `support-reply` split 50/50 between two
/// versions, `summarize-ticket` v1 with its v2 as a shadow, `classify-intent` v1.
async fn set_up(c: &reqwest::Client, url: &str) -> anyhow::Result<()> {
    let summarize_v2 = SUMMARIZE.replace("route = \"fast\"", "route = \"smart\"");
    let mut versions = std::collections::BTreeMap::new();
    for (name, text) in [
        ("support-reply", SUPPORT_V1),
        ("support-reply", SUPPORT_V2),
        ("summarize-ticket", SUMMARIZE),
        ("summarize-ticket", &summarize_v2),
        ("classify-intent", CLASSIFY),
    ] {
        let v = admin(c, url, "/admin/features", text.to_string().into(), false).await?;
        versions
            .entry(name)
            .or_insert_with(Vec::new)
            .push(v["version"].as_i64().unwrap_or(1));
    }
    let v = |name: &str, i: usize| {
        versions
            .get(name)
            .and_then(|v| v.get(i).copied())
            .unwrap_or(1)
    };
    let deploys = [
        (
            "support-reply",
            json!({"env": "prod", "split": format!("{}=50,{}=50", v("support-reply", 0), v("support-reply", 1)), "reason": "demo: try the order-aware reply on half the traffic"}),
        ),
        (
            "summarize-ticket",
            json!({"env": "prod", "version": v("summarize-ticket", 0), "shadow": v("summarize-ticket", 1), "reason": "demo: shadow the smart route"}),
        ),
        (
            "classify-intent",
            json!({"env": "prod", "version": v("classify-intent", 0), "reason": "demo"}),
        ),
    ];
    for (name, body) in deploys {
        admin(
            c,
            url,
            &format!("/admin/features/{name}/deploy"),
            body.to_string().into(),
            true,
        )
        .await?;
    }
    Ok(())
}

#[derive(Default)]
struct Tally {
    calls: AtomicU64,
    failed: AtomicU64,
}

/// One call of the demo's traffic, chosen at random.
async fn one_call(c: reqwest::Client, url: String, n: u64, tally: Arc<Tally>) {
    let (pick, user, session, msg, stream) = {
        let mut rng = rand::thread_rng();
        (
            rng.gen_range(0..100),
            format!("user-{}", rng.gen_range(1..=24)),
            format!("sess-{}", n / 5 + rng.gen_range(0..3)),
            MESSAGES[rng.gen_range(0..MESSAGES.len())],
            rng.gen_bool(0.4),
        )
    };
    let user = if pick >= 95 {
        "intern".to_string()
    } else {
        user
    };
    let invoke = |feature: &str, vars: Value| {
        c.post(format!("{url}/v1/features/{feature}/invoke"))
            .json(&json!({"variables": vars, "env": "prod"}))
    };
    let req = match pick {
        0..=39 => invoke("support-reply", json!({"message": msg})),
        40..=59 => invoke("summarize-ticket", json!({"ticket": msg})),
        60..=74 => invoke("classify-intent", json!({"message": msg})),
        _ => c.post(format!("{url}/v1/chat/completions")).json(&json!({
            "model": if pick < 90 { "smart" } else { "sim/small" },
            "stream": stream,
            "messages": [
                {"role": "system", "content": "You are a helpful support agent."},
                {"role": "user", "content": msg}
            ]
        })),
    };
    let sent = req
        .header("x-llmop-user", &user)
        .header("x-llmop-session", &session)
        .header("x-llmop-tags", "source=demo")
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    tally.calls.fetch_add(1, Ordering::Relaxed);
    match sent {
        Ok(r) if r.status().is_success() => {
            let _ = r.bytes().await;
        }
        _ => {
            tally.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn demo(a: DemoArgs) -> anyhow::Result<()> {
    if !(a.rate > 0.0 && a.rate <= 1000.0) {
        bail!("--rate must be between 0 and 1000 calls per second");
    }
    let listen = concrete(&a.listen)?;
    let config = write_files(&a.dir, &listen)?;
    let url = format!("http://{listen}");
    let served = config.clone();
    let server = tokio::spawn(async move { super::serve::serve(&served, None).await });
    let c = reqwest::Client::new();
    let ready = Instant::now();
    loop {
        if server.is_finished() {
            return match server.await {
                Ok(Err(e)) => Err(e),
                _ => bail!("the gateway stopped"),
            };
        }
        if let Ok(r) = c.get(format!("{url}/readyz")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not become ready within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    set_up(&c, &url).await?;
    println!("llmop demo: gateway on {url} (config {})", config.display());
    println!(
        "console: {url}/ui/   sending {} calls per second for {} s…",
        a.rate, a.seconds
    );
    let tally = Arc::new(Tally::default());
    let limit = Arc::new(tokio::sync::Semaphore::new(32));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(a.seconds) {
        tick.tick().await;
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        let (c2, url2, tally2) = (c.clone(), url.clone(), tally.clone());
        tokio::spawn(async move {
            one_call(c2, url2, n, tally2).await;
            drop(permit);
        });
        n += 1;
        if last_report.elapsed() >= Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  {:>4} s  {} calls, {} refused or failed",
                started.elapsed().as_secs(),
                tally.calls.load(Ordering::Relaxed),
                tally.failed.load(Ordering::Relaxed)
            );
        }
    }
    // Let the calls in flight finish.
    let _ = limit.acquire_many(32).await;
    println!(
        "done: {} calls, {} refused or failed (budget refusals, a flaky target, session limits).",
        tally.calls.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed)
    );
    println!("open {url}/ui/ : the overview, any call's story, the split and shadow under Features, Budgets, Circuits.");
    if a.exit {
        server.abort();
        // Records are committed within moments of each answer.
        tokio::time::sleep(Duration::from_millis(300)).await;
        return Ok(());
    }
    println!(
        "the gateway keeps serving; Ctrl-C stops it. Later: llmop serve --config {}",
        config.display()
    );
    match server.await {
        Ok(r) => r,
        Err(e) => bail!("the gateway stopped: {e}"),
    }
}
