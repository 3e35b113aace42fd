//! The one test DSL of the integration tests: the real `llmop` binary as a gateway
//! (`Gateway`) and as a CLI (`llmop`, `llmop_with_config`), HTTP call helpers, fake
//! upstreams that speak a provider's wire format from fixture files and capture what
//! they received, and a throwaway PostgreSQL database.
#![allow(dead_code)]

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn fixture(path: &str) -> String {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("fixture {p}: {e}"))
}

/// A running `llmop serve`. Killed on drop.
pub struct Gateway {
    child: Child,
    pub url: String,
    pub stderr_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_on(config, env, "127.0.0.1:0")
    }

    /// With `files` (path relative to the config, text) written next to the config
    /// before it starts: eval files, which the gateway reads at start.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let p = dir.path().join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&p, text).expect("write file");
        }
        Self::start_in(dir, config, &[], "127.0.0.1:0")
    }

    /// Listening on `listen` (e.g. `0.0.0.0:0`).
    pub fn start_on(config: &str, env: &[(&str, &str)], listen: &str) -> Gateway {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, config, env, listen)
    }

    fn start_in(
        dir: tempfile::TempDir,
        config: &str,
        env: &[(&str, &str)],
        listen: &str,
    ) -> Gateway {
        let cfg = dir.path().join("llmop.toml");
        std::fs::write(&cfg, config).expect("write config");
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmop"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&cfg)
            .arg("--listen")
            .arg(listen)
            .env("LLMOP_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn llmop");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let url = match line.trim().strip_prefix("llmop listening on ") {
            Some(u) => u.to_string(),
            None => {
                let _ = child.kill();
                let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("llmop did not start: {line:?}\n{err}");
            }
        };
        Gateway {
            child,
            url,
            stderr_path,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every file of the gateway's record store (database, WAL, spill), as lossy text.
    pub fn store_bytes(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self._dir.path())
            .expect("read dir")
            .flatten()
        {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with("llmop.db") {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                all.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        all
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    /// The gateway's SQLite record store, as the CLI's `--store` takes it.
    pub fn store_url(&self) -> String {
        format!("sqlite://{}", self.dir().join("llmop.db").display())
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits (bounded) until the logs hold a line containing `needle`, and returns it.
    /// Log lines are written by a background thread, so they land shortly after the
    /// response.
    pub fn wait_for_log_line(&self, needle: &str) -> String {
        let start = std::time::Instant::now();
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(needle)) {
                return line.to_string();
            }
            if start.elapsed() > Duration::from_secs(5) {
                panic!("no log line with {needle:?}:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The record of `request_id`, waiting (bounded) for it to be committed: in the
    /// default durability mode a record lands moments after its response.
    pub async fn record(&self, request_id: &str) -> Value {
        let url = format!("{}/v1/requests/{request_id}", self.url);
        let start = std::time::Instant::now();
        loop {
            let r = client().get(&url).send().await.expect("GET record");
            if r.status() == 200 {
                return r.json().await.expect("record JSON");
            }
            assert_eq!(r.status(), 404, "{}", r.text().await.unwrap_or_default());
            if start.elapsed() > Duration::from_secs(5) {
                panic!("no record of {request_id}:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Registers a feature file through the admin API; returns its version.
    pub async fn push_feature(&self, file: &str) -> i64 {
        let r = client()
            .post(format!("{}/admin/features", self.url))
            .body(file.to_string())
            .send()
            .await
            .expect("POST /admin/features");
        let v: Value = r.json().await.expect("push answer JSON");
        v["version"].as_i64().unwrap_or_else(|| panic!("{v}"))
    }

    /// `POST /admin/features{path}` (a deploy, a rollback) as actor `tester`; asserts
    /// a 200 and returns the answer.
    pub async fn admin_features(&self, path: &str, body: Value) -> Value {
        let r = client()
            .post(format!("{}/admin/features{path}", self.url))
            .header("x-llmop-actor", "tester")
            .json(&body)
            .send()
            .await
            .expect("POST /admin/features");
        let status = r.status();
        let v: Value = r.json().await.expect("admin answer JSON");
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Writes a file next to the gateway's config (`evals/qa.toml`, a dataset), creating
    /// its directories; returns its path.
    pub fn write(&self, rel: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir().join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write file");
        p
    }

    /// Runs the `llmop` CLI against this gateway: its config (so its store, its eval
    /// gates and `evals/` next to it) and its URL, from its directory.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_llmop"))
            .args(args)
            .arg("--config")
            .arg(self.dir().join("llmop.toml"))
            .current_dir(self.dir())
            .env("LLMOP_GATEWAY_URL", &self.url)
            .env_remove("LLMOP_CONFIG")
            .env_remove("LLMOP_STORE_URL")
            .output()
            .expect("run llmop")
    }

    /// The `/metrics` page as text.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The model ids `GET /v1/models` lists for `key`.
    pub async fn model_ids(&self, key: &str) -> Vec<String> {
        let v: Value = client()
            .get(format!("{}/v1/models", self.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("GET /v1/models")
            .json()
            .await
            .expect("a JSON body");
        v["data"]
            .as_array()
            .expect("a model list")
            .iter()
            .filter_map(|m| m["id"].as_str().map(str::to_string))
            .collect()
    }

    /// `kill -9`: no shutdown, no drain, no flush.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status();
        self.wait_exit(within)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a fake upstream received.
#[derive(Debug, Clone)]
pub struct Captured {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
}

/// What a fake upstream answers.
pub enum Reply {
    /// A JSON body with a status and extra headers.
    Json(u16, String, Vec<(&'static str, String)>),
    /// An SSE body sent frame by frame with a pause between frames.
    Sse(String, Duration),
    /// The first `n` frames of an SSE body, then the connection breaks.
    SseCut(String, usize),
    /// Headers never come.
    Hang,
    /// Any body with any content type.
    Raw(u16, &'static str, String),
    /// An SSE body sent whole, then the connection stays open and silent.
    SseHang(String),
}

impl Reply {
    pub fn ok(body: String) -> Reply {
        Reply::Json(200, body, vec![])
    }
    pub fn sse(body: String) -> Reply {
        Reply::Sse(body, Duration::ZERO)
    }
}

type Responder = dyn Fn(&Captured, usize) -> Reply + Send + Sync;

/// A local server that answers every POST with what the responder says.
pub struct Upstream {
    pub url: String,
    pub captured: Arc<Mutex<Vec<Captured>>>,
    pub calls: Arc<AtomicUsize>,
    /// Set when a client dropped a streamed response before its end.
    pub stream_abandoned: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Upstream {
    pub async fn start(
        responder: impl Fn(&Captured, usize) -> Reply + Send + Sync + 'static,
    ) -> Upstream {
        let captured = Arc::new(Mutex::new(Vec::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let abandoned = Arc::new(AtomicBool::new(false));
        let responder: Arc<Responder> = Arc::new(responder);
        let (cap, cnt, ab) = (captured.clone(), calls.clone(), abandoned.clone());
        let app = axum::Router::new().fallback(move |req: Request| {
            let (cap, cnt, ab, responder) =
                (cap.clone(), cnt.clone(), ab.clone(), responder.clone());
            async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let headers = req.headers().clone();
                let bytes = axum::body::to_bytes(req.into_body(), 64 << 20)
                    .await
                    .unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let c = Captured {
                    path,
                    headers,
                    body,
                };
                let n = cnt.fetch_add(1, Ordering::SeqCst);
                cap.lock().unwrap().push(c.clone());
                respond(responder(&c, n), ab).await
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Upstream {
            url,
            captured,
            calls,
            stream_abandoned: abandoned,
            task,
        }
    }

    pub fn last(&self) -> Captured {
        self.captured
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no call captured")
    }

    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Splits an SSE text into frames, keeping each frame's terminator (LF or CRLF).
fn frames(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        let lf = rest.find("\n\n").map(|i| (i, 2));
        let crlf = rest.find("\r\n\r\n").map(|i| (i, 4));
        let next = match (lf, crlf) {
            (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
            (a, b) => a.or(b),
        };
        match next {
            Some((i, n)) => {
                out.push(rest[..i + n].to_string());
                rest = &rest[i + n..];
            }
            None => {
                if !rest.is_empty() {
                    out.push(rest.to_string());
                }
                break;
            }
        }
    }
    out
}

struct AbandonGuard(Arc<AtomicBool>, bool);
impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

async fn respond(reply: Reply, abandoned: Arc<AtomicBool>) -> Response {
    match reply {
        Reply::Json(status, body, headers) => {
            let mut b = Response::builder()
                .status(StatusCode::from_u16(status).unwrap())
                .header("content-type", "application/json");
            for (k, v) in headers {
                b = b.header(k, v);
            }
            b.body(Body::from(body)).unwrap()
        }
        Reply::Raw(status, ct, body) => Response::builder()
            .status(StatusCode::from_u16(status).unwrap())
            .header("content-type", ct)
            .body(Body::from(body))
            .unwrap(),
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(Body::empty())
        }
        Reply::Sse(text, gap) => {
            let fs = frames(&text);
            let total = fs.len();
            let guard = AbandonGuard(abandoned, false);
            let s =
                futures::stream::iter(fs.into_iter().enumerate()).then(move |(i, f)| async move {
                    if i > 0 && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    (i, f)
                });
            let s = s.scan(guard, move |g, (i, f)| {
                if i + 1 == total {
                    g.1 = true;
                }
                futures::future::ready(Some(Ok::<_, std::io::Error>(Bytes::from(f))))
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap()
        }
        Reply::SseHang(text) => {
            let s =
                futures::stream::once(async move { Ok::<_, std::io::Error>(Bytes::from(text)) })
                    .chain(futures::stream::once(async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok(Bytes::new())
                    }));
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap()
        }
        Reply::SseCut(text, n) => {
            let fs: Vec<_> = frames(&text).into_iter().take(n).collect();
            let s = futures::stream::iter(
                fs.into_iter()
                    .map(|f| Ok::<_, std::io::Error>(Bytes::from(f))),
            )
            .chain(futures::stream::once(async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Err(std::io::Error::other("connection reset (test)"))
            }));
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(Body::from_stream(s))
                .unwrap()
        }
    }
}

/// Parses an SSE response body into (event name, data) pairs.
pub fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for frame in text.split("\n\n") {
        let mut event = String::new();
        let mut data = String::new();
        for line in frame.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if !data.is_empty() {
            out.push((event, data));
        }
    }
    out
}

/// POSTs a JSON body to the gateway.
pub async fn post_json(gw: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    post_with(gw, path, body, &[]).await
}

/// POSTs a JSON body to the gateway with extra headers (`x-request-id`, a key…).
pub async fn post_with(
    gw: &Gateway,
    path: &str,
    body: &Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = client().post(format!("{}{path}", gw.url)).json(body);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.expect("request to the gateway")
}

/// `GET {gateway}{path}` as JSON.
pub async fn get_json(gw: &Gateway, path: &str) -> Value {
    client()
        .get(format!("{}{path}", gw.url))
        .send()
        .await
        .expect("request to the gateway")
        .json()
        .await
        .expect("a JSON body")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// A throwaway PostgreSQL database on the local server, dropped at the end.
pub struct PgDb {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDb {
    pub async fn create() -> PgDb {
        use sqlx::Connection;
        let admin_url = std::env::var("LLMOP_TEST_PG_ADMIN_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let mut admin = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("PostgreSQL must be reachable (set LLMOP_TEST_PG_ADMIN_URL)");
        let name = format!(
            "llmop_feat_test_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        );
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        PgDb {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub async fn drop_db(self) {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

/// Runs the `llmop` CLI with `args` and waits for it.
pub fn llmop(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(args)
        .output()
        .expect("run llmop")
}

/// Runs the `llmop` CLI with `args` and `--config` a file holding `config`.
pub fn llmop_with_config(args: &[&str], config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("llmop.toml");
    std::fs::write(&path, config).expect("write config");
    Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("LLMOP_CONFIG")
        .output()
        .expect("run llmop")
}

/// A CLI run's stdout and stderr, for assertion messages.
pub fn output_text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Deletes every Redis key under a test's `prefix` (its counters, its cache).
pub async fn redis_cleanup(prefix: &str) {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// The text of an OpenAI chat-completions stream: its chunks' `delta.content`, joined.
pub fn openai_stream_text(sse: &str) -> String {
    sse_events(sse)
        .iter()
        .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect()
}
