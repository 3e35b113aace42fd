//! `llmop demo`: one command leaves a populated store behind: a split served on both
//! arms, a shadow, fallbacks past the flaky target, budget refusals, sessions.

mod support;

#[tokio::test]
async fn the_demo_fills_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let o = support::llmop(&[
        "demo",
        "--dir",
        demo.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--seconds",
        "4",
        "--rate",
        "50",
        "--exit",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("/ui/"), "{out}");
    let store = llmop_store::Store::open(&format!("sqlite://{}", demo.join("llmop.db").display()))
        .await
        .unwrap();
    let q = |sql: &'static str| {
        let store = store.clone();
        async move {
            let r = store
                .query_readonly(sql, 10, std::time::Duration::from_secs(10))
                .await
                .unwrap();
            r.rows[0][0].as_i64().unwrap_or(0)
        }
    };
    assert!(q("SELECT COUNT(*) FROM records").await >= 100);
    assert!(q("SELECT COUNT(DISTINCT arm) FROM records WHERE feature = 'support-reply' AND shadow = 0").await == 2, "both arms of the split");
    assert!(
        q("SELECT COUNT(*) FROM records WHERE shadow = 1").await > 0,
        "the shadow"
    );
    assert!(
        q("SELECT COUNT(*) FROM records WHERE json_array_length(attempts) > 1 AND status < 400")
            .await
            > 0,
        "fallbacks"
    );
    assert!(
        q("SELECT COUNT(*) FROM records WHERE error_code = 'budget_exceeded'").await > 0,
        "budget refusals"
    );
    assert!(
        q("SELECT COUNT(DISTINCT session_id) FROM records").await > 5,
        "sessions"
    );
    assert!(
        q("SELECT COUNT(DISTINCT user_id) FROM records").await > 5,
        "users"
    );
    // The overview's rollups hold the same calls.
    assert_eq!(
        q("SELECT SUM(calls) FROM rollup_calls").await,
        q("SELECT COUNT(*) FROM records").await
    );
}
