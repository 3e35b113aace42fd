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
