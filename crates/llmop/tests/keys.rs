//! API keys and the admin token against the real binary: open until the first key,
//! then 401 without a valid key, 403 outside a key's scope, revocation within the
//! refresh interval, the admin and records APIs behind the admin token, and a listener
//! beyond loopback never open.

mod support;

use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{client, llmop, Gateway};

const CONFIG: &str = "[providers.sim]\nkind = \"mock\"\n[providers.other]\nkind = \"mock\"\n[features]\nrefresh_ms = 50\n[server]\nadmin_token_env = \"ADMIN_TOKEN\"\n";
const ADMIN: &str = "admin-secret-1";

fn create_key(store: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["keys", "create", "--store", store, "--json"];
    args.extend_from_slice(extra);
    let o = llmop(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["key"].as_str().unwrap().into(),
    )
}

async fn chat(gw: &Gateway, key: Option<&str>, model: &str, env: Option<&str>) -> (u16, Value) {
    let mut r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}));
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    if let Some(e) = env {
        r = r.header("x-llmop-env", e);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// Waits (bounded) until a call without a key gets `status`.
async fn until_keyless(gw: &Gateway, status: u16) {
    let start = Instant::now();
    while chat(gw, None, "sim/echo", None).await.0 != status {
        assert!(start.elapsed() < Duration::from_secs(3), "never {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_close_the_gateway_and_scope_what_it_serves() {
    let gw = Gateway::start_with_env(CONFIG, &[("ADMIN_TOKEN", ADMIN)]);
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    // Open until the first key exists.
    assert_eq!(chat(&gw, None, "sim/echo", None).await.0, 200);

    let (id, key) = create_key(&store, &["--name", "backend"]);
    let (scoped_id, scoped) = create_key(
        &store,
        &[
            "--name",
            "support-bot",
            "--routes",
            "sim/*",
            "--features",
            "greet",
            "--env",
            "prod",
        ],
    );
    until_keyless(&gw, 401).await;
    // Both keys loaded (a refresh may fall between the two creations).
    let start = Instant::now();
    while chat(&gw, Some(&scoped), "sim/echo", Some("prod")).await.0 == 401 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "scoped key never loaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = chat(&gw, None, "sim/echo", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let (s, v) = chat(&gw, Some("llmop_kzzz_wrong"), "sim/echo", None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    assert!(v["error"]["message"].as_str().unwrap().contains("kzzz"));

    // A valid key: served, and the record says which key.
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(&key)
        .header("x-request-id", "keyed-1")
        .json(&json!({"model": "other/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // x-api-key works too (the Anthropic SDK sends it).
    let r = client()
        .post(format!("{}/v1/messages", gw.url))
        .header("x-api-key", &key)
        .json(&json!({"model": "sim/echo", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Scopes: 403 outside them.
    assert_eq!(
        chat(&gw, Some(&scoped), "sim/echo", Some("prod")).await.0,
        200
    );
    let (s, v) = chat(&gw, Some(&scoped), "other/echo", Some("prod")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("key_not_allowed")),
        "{v}"
    );
    assert_eq!(
        chat(&gw, Some(&scoped), "sim/echo", Some("dev")).await.0,
        403
    );
    assert_eq!(
        chat(&gw, Some(&scoped), "feature/other", Some("prod"))
            .await
            .0,
        403
    );
    // /v1/models lists what the key may call.
    let ids = gw.model_ids(&scoped).await;
    assert!(
        ids.iter().any(|i| i == "sim/echo") && !ids.iter().any(|i| i.starts_with("other/")),
        "{ids:?}"
    );

    // The records API and the admin API need the admin token now.
    let get = |path: &str, token: Option<&str>| {
        let mut r = client().get(format!("{}{path}", gw.url));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(get("/v1/requests/keyed-1", None).await, 401);
    assert_eq!(get("/v1/requests/keyed-1", Some(&key)).await, 401);
    assert_eq!(get("/admin/circuits", None).await, 401);
    assert_eq!(get("/admin/features", Some(ADMIN)).await, 200);
    // (The record lands moments after the answer: poll, bounded.)
    let start = Instant::now();
    let rec: Value = loop {
        let r = client()
            .get(format!("{}/v1/requests/keyed-1", gw.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no record");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(rec["key_id"], id.as_str());

    // Listing never shows a key; the store holds only hashes.
    let o = llmop(&["keys", "list", "--store", &store]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&id) && text.contains("support-bot") && !text.contains(&key),
        "{text}"
    );
    assert!(!gw.store_bytes().contains(&key[7..]));

    // Revocation takes effect within the refresh interval.
    let o = llmop(&["keys", "revoke", &scoped_id, "--store", &store]);
    assert!(o.status.success());
    let start = Instant::now();
    while chat(&gw, Some(&scoped), "sim/echo", Some("prod")).await.0 != 401 {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "revoked key still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(chat(&gw, Some(&key), "sim/echo", None).await.0, 200);
    let o = llmop(&["keys", "revoke", &scoped_id, "--store", &store]);
    assert!(!o.status.success());
}

#[tokio::test]
async fn beyond_loopback_the_gateway_is_never_open() {
    let gw = Gateway::start_on("[providers.sim]\nkind = \"mock\"\n", &[], "0.0.0.0:0");
    let url = gw.url.replace("0.0.0.0", "127.0.0.1");
    let r = client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "sim/echo", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nor is its admin API without a token.
    let r = client()
        .get(format!("{url}/admin/features"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[test]
fn a_missing_admin_token_variable_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("llmop.toml");
    std::fs::write(
        &cfg,
        "[server]\nadmin_token_env = \"NOT_SET_ANYWHERE_42\"\n[providers.sim]\nkind = \"mock\"\n",
    )
    .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_llmop"))
        .args([
            "serve",
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("NOT_SET_ANYWHERE_42"));
}

/// A request to an open gateway, as a browser page would send it: `host`/`origin`
/// headers (`None`: as the client makes them), a JSON body when `body` is given.
async fn from_page(
    gw: &Gateway,
    method: &str,
    path: &str,
    host: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let url = format!("{}{path}", gw.url);
    let mut r = match method {
        "GET" => client().get(url),
        _ => client().post(url),
    };
    if let Some(h) = host {
        r = r.header("host", h);
    }
    if let Some(o) = origin {
        r = r.header("origin", o);
    }
    if let Some(b) = body {
        // What a page's form or `fetch(…, {mode: "no-cors"})` can send.
        r = r.header("content-type", "text/plain").body(b.to_string());
    }
    let r = r.header("x-request-id", "from-page").send().await.unwrap();
    let status = r.status().as_u16();
    let rid = r
        .headers()
        .get("x-request-id")
        .map(|v| v.to_str().unwrap().to_string());
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        rid,
    )
}

/// A chat call as a page would post it: its status and body.
async fn chat_from(gw: &Gateway, host: Option<&str>, origin: Option<&str>) -> (u16, Value) {
    let chat = json!({"model": "sim/echo", "messages": [{"role": "user", "content": "hi"}]});
    let (s, v, _) = from_page(gw, "POST", "/v1/chat/completions", host, origin, Some(chat)).await;
    (s, v)
}

/// While no key is needed, a web page cannot use the gateway: not by posting to it
/// (spending the operator's provider keys, or rolling a feature back through the open
/// admin API), nor by rebinding its DNS name to 127.0.0.1 to read records and the
/// console. SDKs, curl and pages on this machine are served as before; once keys are in
/// force, every call is authenticated instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_gateway_serves_only_this_machine() {
    let config = "[providers.sim]\nkind = \"mock\"\n[features]\nrefresh_ms = 50\n";
    let gw = Gateway::start(config);
    let port = gw.url.rsplit(':').next().unwrap().to_string();
    let chat = json!({"model": "sim/echo", "messages": [{"role": "user", "content": "hi"}]});
    let evil = Some("https://evil.example");

    // Posted from another site's page: refused before anything runs, in the envelope.
    let (s, v, rid) = from_page(
        &gw,
        "POST",
        "/v1/chat/completions",
        None,
        evil,
        Some(chat.clone()),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("origin_not_allowed")),
        "{v}"
    );
    assert_eq!(rid.as_deref(), Some("from-page"));
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("allowed_hosts") && !message.contains("evil"),
        "{message}"
    );
    // The Anthropic endpoint answers in its own format.
    let messages = json!({"model": "sim/echo", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let (s, v, _) = from_page(&gw, "POST", "/v1/messages", None, evil, Some(messages)).await;
    assert_eq!((s, v["type"].as_str()), (403, Some("error")), "{v}");
    assert_eq!(v["error"]["type"].as_str(), Some("permission_error"), "{v}");
    // The open admin API: a rollback from a page is refused, not attempted.
    let (s, v, _) = from_page(
        &gw,
        "POST",
        "/admin/features/greet/rollback",
        None,
        evil,
        Some(json!({"env": "prod", "reason": "from a page"})),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("origin_not_allowed")),
        "{v}"
    );
    // Sandboxed frames and file:// pages send `Origin: null`.
    let (s, _) = chat_from(&gw, None, Some("null")).await;
    assert_eq!(s, 403);

    // A page that rebound its own name to 127.0.0.1 is same-origin to itself: no
    // Origin on its reads, but its name in Host.
    let rebound = format!("evil.example:{port}");
    for path in [
        "/v1/requests",
        "/ui/requests",
        "/admin/features",
        "/metrics",
    ] {
        let (s, v, _) = from_page(&gw, "GET", path, Some(&rebound), None, None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("host_not_allowed")),
            "{path}: {v}"
        );
    }

    // This machine's pages and clients: served.
    let local = format!("localhost:{port}");
    let (s, v) = chat_from(&gw, Some(&local), Some("http://localhost:3000")).await;
    assert_eq!(s, 200, "{v}");
    let (s, _, _) = from_page(
        &gw,
        "GET",
        "/ui/requests",
        Some(&format!("[::1]:{port}")),
        None,
        None,
    )
    .await;
    assert_eq!(s, 200);
    // The refused calls left no record; the served one did.
    assert_eq!(gw.record("from-page").await["status"], 200);
    let list = support::get_json(&gw, "/v1/requests?limit=50").await;
    let served = list["data"].as_array().unwrap();
    assert_eq!(served.len(), 1, "{list}");
    assert!(gw
        .logs()
        .contains("refused a request that names another host"));

    // Once a key is in force, a page's call is an authenticated call like any other.
    let store = format!("sqlite://{}", gw.dir().join("llmop.db").display());
    let (_, key) = create_key(&store, &["--name", "web"]);
    until_keyless(&gw, 401).await;
    let r = client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("origin", "https://app.example")
        .bearer_auth(&key)
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, v) = chat_from(&gw, None, evil).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (401, Some("missing_api_key")),
        "{v}"
    );
}

/// `[server] allowed_hosts` adds the operator's own names for this machine.
#[tokio::test]
async fn allowed_hosts_name_this_machine_too() {
    let gw = Gateway::start(
        "[server]\nallowed_hosts = [\"llmop.test\"]\n[providers.sim]\nkind = \"mock\"\n",
    );
    let port = gw.url.rsplit(':').next().unwrap().to_string();
    let host = format!("LLMOP.test:{port}");
    let (s, v) = chat_from(&gw, Some(&host), Some("http://llmop.test")).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = chat_from(&gw, Some("other.test"), None).await;
    assert_eq!(s, 403);
    // And a name that is not a host name stops the start, naming the key.
    let o = support::llmop_with_config(
        &["check"],
        "[server]\nallowed_hosts = [\"https://llmop.test/\"]\n[providers.sim]\nkind = \"mock\"\n",
    );
    assert!(!o.status.success());
    assert!(
        support::output_text(&o).contains("allowed_hosts"),
        "{}",
        support::output_text(&o)
    );
}
