//! One test suite, run against both backends: a SQLite file in a temporary directory,
//! and a throwaway PostgreSQL database created for the run and dropped after it
//! (admin URL from `LLMOP_TEST_PG_ADMIN_URL`, default the local server's `postgres`
//! user).

use llmop_store::{
    Attempt, Feedback, ListFilter, QueryError, Record, StatusFilter, Store, StoreError,
};
use serde_json::json;
use sqlx::Connection;
use std::time::Duration;

fn full_record(id: &str, at: i64) -> Record {
    let mut r = Record::new(id, at, "/v1/chat/completions");
    r.env = Some("prod".into());
    r.key_id = Some("key_ab12".into());
    r.user = Some("user-1".into());
    r.session = Some("sess-1".into());
    r.feature = Some("summarize".into());
    r.feature_version = Some(3);
    r.content_hash = Some("sha256:abc".into());
    r.arm = Some("3".into());
    r.shadow = true;
    r.replay_of = Some("orig-1".into());
    r.shadow_of = Some("primary-1".into());
    r.guardrails = vec![llmop_core::guard::GuardVerdict {
        rule: "no-secrets".into(),
        direction: "output".into(),
        part: "text".into(),
        action: "block".into(),
        outcome: "blocked".into(),
        detectors: vec!["secret.github_token".into()],
        evidence: vec!["sha256:0123456789ab…/40".into()],
        latency_us: 12,
    }];
    r.variables = Some(serde_json::json!({"ticket": "printer on fire", "max_words": 40}));
    r.route = Some("smart".into());
    r.stream = true;
    r.provider = Some("openai".into());
    r.model = Some("gpt-4o".into());
    r.upstream_id = Some("chatcmpl-1".into());
    r.status = 200;
    r.error_code = None;
    r.client_disconnected = true;
    r.parse_status = Some("ok".into());
    r.input_tokens = Some(120);
    r.output_tokens = Some(30);
    r.cached_tokens = Some(100);
    r.cost_usd = Some(0.00123);
    r.latency_ms = 812;
    r.ttft_ms = Some(95);
    r.tags.insert("team".into(), "support".into());
    r.attempts = vec![
        Attempt {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            error: Some("upstream_error".into()),
            upstream_status: Some(503),
            latency_ms: 40,
            retry_reason: Some("upstream_error".into()),
        },
        Attempt {
            provider: "openai".into(),
            model: "gpt-4o".into(),
            error: None,
            upstream_status: None,
            latency_ms: 760,
            retry_reason: None,
        },
    ];
    r.request_params = json!({"temperature": 0.2, "max_tokens": 64});
    r.input_messages = json!([{"role": "user", "content": "héllo ✓ \"quoted\""}]);
    r.rendered_prompt = Some("Summarize: …".into());
    r.output_text = Some("A summary.".into());
    r.output_tool_calls = json!([{"id": "c1", "name": "f", "arguments": "{}"}]);
    r.parsed_output = Some(json!({"summary": "A summary."}));
    r.feedback = Some(Feedback {
        score: Some(1.0),
        label: Some("good".into()),
        comment: None,
        at_ms: at + 5,
    });
    r
}

fn small(id: &str, at: i64, feature: &str, user: &str, status: u16) -> Record {
    let mut r = Record::new(id, at, "/v1/chat/completions");
    r.feature = Some(feature.into());
    r.user = Some(user.into());
    r.session = Some(format!("s-{user}"));
    r.status = status;
    r.latency_ms = 10;
    r
}

/// Agent safety's shared state: a session's taint only grows; an approval is decided
/// once, and an expired one cannot be.
async fn agent_state(store: &Store) {
    assert_eq!(store.session_taint("k:s1").await.unwrap(), 0);
    assert_eq!(store.add_session_taint("k:s1", 0b01).await.unwrap(), 0b01);
    assert_eq!(store.add_session_taint("k:s1", 0b10).await.unwrap(), 0b11);
    assert_eq!(store.add_session_taint("k:s1", 0b01).await.unwrap(), 0b11);
    assert_eq!(store.session_taint("k:s2").await.unwrap(), 0);
    let answer = serde_json::json!({"parts": [{"ToolCall": {"id": "c1", "name": "send_email", "arguments": "{}"}}]});
    for (id, ttl) in [("apr_a", 60_000), ("apr_old", -1)] {
        store
            .insert_approval(&llmop_store::NewApproval {
                id,
                ttl_ms: ttl,
                request_id: "r1",
                key_id: Some("k"),
                session: Some("s1"),
                tool: "send_email",
                rule: "rule_of_two",
                reason: "why",
                answer: &answer,
            })
            .await
            .unwrap();
    }
    let pending = store.approvals(Some("pending"), 10).await.unwrap();
    assert_eq!(
        pending.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["apr_a"]
    );
    assert_eq!(
        store.approval("apr_old").await.unwrap().unwrap().status,
        "expired"
    );
    assert!(!store
        .decide_approval("apr_old", true, "me", None)
        .await
        .unwrap());
    assert!(store
        .decide_approval("apr_a", false, "me", Some("no"))
        .await
        .unwrap());
    assert!(!store
        .decide_approval("apr_a", true, "me", None)
        .await
        .unwrap());
    let a = store.approval("apr_a").await.unwrap().unwrap();
    assert_eq!(
        (
            a.status.as_str(),
            a.decided_by.as_deref(),
            a.decision_note.as_deref()
        ),
        ("denied", Some("me"), Some("no"))
    );
    assert_eq!(a.answer, answer);
}

async fn run_suite(url: &str) {
    let store = Store::open(url).await.expect("open");
    assert_eq!(store.schema_version().await.unwrap(), 20);
    // Opening again (another replica, a restart) finds the schema in place.
    let again = Store::open(url).await.expect("reopen");
    assert_eq!(again.schema_version().await.unwrap(), 20);
    again.close().await;
    agent_state(&store).await;

    // Every field survives the round trip.
    let r = full_record("req-full", 1_700_000_000_000);
    store.insert_batch(std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(store.get("req-full").await.unwrap(), Some(r.clone()));
    assert_eq!(store.get("nope").await.unwrap(), None);
    // Guardrail verdicts are rows in SQL, on either backend.
    let q = store
        .query_readonly(
            "SELECT request_id, rule, outcome, latency_us FROM guardrail_verdicts",
            10,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(q.rows.len(), 1);
    assert_eq!(q.rows[0][1], serde_json::json!("no-secrets"));
    assert_eq!(q.rows[0][2], serde_json::json!("blocked"));
    assert_eq!(q.rows[0][3], serde_json::json!(12));

    // Inserts are idempotent: the first write wins.
    let mut dup = r.clone();
    dup.status = 500;
    store.insert_batch(&[dup]).await.unwrap();
    assert_eq!(store.get("req-full").await.unwrap().unwrap().status, 200);
    assert_eq!(store.count().await.unwrap(), 1);

    // Listing: newest first, filters, cursor paging with ties on time.
    let mut batch = Vec::new();
    for i in 0..25 {
        let at = 1_800_000_000_000 + (i / 2) as i64; // pairs share a millisecond
        let feature = if i % 3 == 0 { "a" } else { "b" };
        let user = if i % 2 == 0 { "u-even" } else { "u-odd" };
        let status = if i % 5 == 0 { 502 } else { 200 };
        let mut r = small(&format!("r{i:02}"), at, feature, user, status);
        // The console's filters: model, provider, key, version, degraded, latency, cost.
        r.model = Some(if i % 4 == 0 { "big" } else { "small" }.into());
        r.provider = Some("p".into());
        r.key_id = Some(if i < 5 { "k-early" } else { "k-late" }.into());
        r.feature_version = Some(1 + (i % 2) as i64);
        r.degraded = i == 7;
        r.cost_usd = Some(0.001 * i as f64);
        r.upstream_id = Some(format!("chatcmpl-{i}"));
        batch.push(r);
    }
    store.insert_batch(&batch).await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&ListFilter {
                since_ms: Some(1_800_000_000_000),
                limit: Some(10),
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(page.records.len() <= 10);
        seen.extend(page.records.iter().map(|r| r.request_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected: Vec<String> = batch.iter().map(|r| r.request_id.clone()).collect();
    expected.sort_by(|a, b| b.cmp(a)); // ids grow with time here, so newest first = id descending
    assert_eq!(seen, expected, "every record exactly once, newest first");

    let count = |f: ListFilter| {
        let store = store.clone();
        async move {
            store
                .list(&ListFilter {
                    limit: Some(1000),
                    ..f
                })
                .await
                .unwrap()
                .records
                .len()
        }
    };
    assert_eq!(
        count(ListFilter {
            feature: Some("a".into()),
            ..Default::default()
        })
        .await,
        9
    );
    assert_eq!(
        count(ListFilter {
            user: Some("u-odd".into()),
            ..Default::default()
        })
        .await,
        12
    );
    assert_eq!(
        count(ListFilter {
            session: Some("s-u-even".into()),
            ..Default::default()
        })
        .await,
        13
    );
    assert_eq!(
        count(ListFilter {
            status: Some(StatusFilter::Error),
            since_ms: Some(1_800_000_000_000),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(ListFilter {
            status: Some(StatusFilter::Ok),
            since_ms: Some(1_800_000_000_000),
            ..Default::default()
        })
        .await,
        20
    );
    assert_eq!(
        count(ListFilter {
            status: Some(StatusFilter::Exactly(502)),
            ..Default::default()
        })
        .await,
        5
    );
    // Any id finds its call: the provider's answer id, a session.
    let by = |q: &str| ListFilter {
        q: Some(q.into()),
        ..Default::default()
    };
    assert_eq!(count(by("chatcmpl-13")).await, 1);
    assert_eq!(count(by("r13")).await, 1);
    assert_eq!(count(by("s-u-odd")).await, 12);
    assert_eq!(count(by("nothing-like-it")).await, 0);
    // Without the provider-id index a search still finds a call by its provider's id
    // (by a scan of the time index), with the other filters and pages as before; with
    // the index back, through it again. Another opening of the store sees which it is.
    assert!(store.searches_provider_ids());
    store.index_provider_ids(false).await.unwrap();
    assert!(!store.searches_provider_ids());
    assert!(!Store::open(url).await.unwrap().searches_provider_ids());
    assert_eq!(count(by("chatcmpl-13")).await, 1);
    assert_eq!(count(by("r13")).await, 1);
    assert_eq!(count(by("s-u-odd")).await, 12);
    assert_eq!(count(by("chatcmpl-none")).await, 0);
    let both = |user: &str| ListFilter {
        user: Some(user.into()),
        ..by("chatcmpl-13")
    };
    assert_eq!(count(both("u-odd")).await, 1);
    assert_eq!(count(both("u-even")).await, 0);
    // Twelve calls share one provider id (a provider that reuses ids): found one page
    // at a time, newest first, each once.
    let mut twelve = Vec::new();
    for i in 0..12 {
        let mut r = Record::new(format!("same-up-{i:02}"), 1_900_000_000_000 + i, "chat");
        r.upstream_id = Some("chatcmpl-shared".into());
        twelve.push(r);
    }
    store.insert_batch(&twelve).await.unwrap();
    let (mut paged, mut cursor) = (Vec::new(), None);
    loop {
        let page = store
            .list(&ListFilter {
                limit: Some(5),
                cursor: cursor.clone(),
                ..by("chatcmpl-shared")
            })
            .await
            .unwrap();
        paged.extend(page.records.iter().map(|r| r.request_id.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut want: Vec<String> = twelve.iter().map(|r| r.request_id.clone()).collect();
    want.reverse();
    assert_eq!(paged, want);
    store.index_provider_ids(true).await.unwrap();
    assert!(Store::open(url).await.unwrap().searches_provider_ids());
    assert_eq!(count(by("chatcmpl-13")).await, 1);
    assert_eq!(
        count(ListFilter {
            model: Some("big".into()),
            provider: Some("p".into()),
            ..Default::default()
        })
        .await,
        7
    );
    assert_eq!(
        count(ListFilter {
            key: Some("k-early".into()),
            version: Some(2),
            ..Default::default()
        })
        .await,
        2
    );
    assert_eq!(
        count(ListFilter {
            degraded: Some(true),
            ..Default::default()
        })
        .await,
        1
    );
    assert_eq!(
        count(ListFilter {
            min_latency_ms: Some(10),
            max_latency_ms: Some(10),
            since_ms: Some(1_800_000_000_000),
            ..Default::default()
        })
        .await,
        25
    );
    assert_eq!(
        count(ListFilter {
            min_latency_ms: Some(11),
            since_ms: Some(1_800_000_000_000),
            ..Default::default()
        })
        .await,
        0
    );
    assert_eq!(
        count(ListFilter {
            min_cost_usd: Some(0.0195),
            ..Default::default()
        })
        .await,
        5
    );
    assert_eq!(
        count(ListFilter {
            until_ms: Some(1_800_000_000_000),
            ..Default::default()
        })
        .await,
        1
    );
    assert!(matches!(
        store
            .list(&ListFilter {
                cursor: Some("garbage".into()),
                ..Default::default()
            })
            .await,
        Err(StoreError::BadCursor)
    ));

    // Feedback.
    let fb = Feedback {
        score: Some(-1.0),
        label: Some("wrong".into()),
        comment: Some("hallucinated a date".into()),
        at_ms: 42,
    };
    assert!(store.set_feedback("r03", &fb).await.unwrap());
    assert_eq!(
        store.get("r03").await.unwrap().unwrap().feedback,
        Some(fb.clone())
    );
    assert!(!store.set_feedback("nope", &fb).await.unwrap());

    // Concurrent writers lose nothing.
    let before = store.count().await.unwrap();
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for chunk in 0..5 {
                let recs: Vec<Record> = (0..10)
                    .map(|i| {
                        small(
                            &format!("c{t}-{chunk}-{i}"),
                            1_900_000_000_000 + i,
                            "c",
                            "u",
                            200,
                        )
                    })
                    .collect();
                store.insert_batch(&recs).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(store.count().await.unwrap(), before + 400);

    // Read-only SQL: answers, refuses writes (and changes nothing), caps rows and time.
    let q = store
        .query_readonly(
            "SELECT feature, COUNT(*) AS n, SUM(latency_ms) AS total FROM records WHERE feature IN ('a', 'b') GROUP BY feature ORDER BY feature",
            100,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(q.columns, vec!["feature", "n", "total"]);
    assert_eq!(
        q.rows,
        vec![
            vec![json!("a"), json!(9), json!(90)],
            vec![json!("b"), json!(16), json!(160)]
        ]
    );
    assert!(!q.truncated);
    let n = store.count().await.unwrap();
    for write in [
        "DELETE FROM records",
        "UPDATE records SET status = 1",
        "DROP TABLE records",
        "INSERT INTO llmop_schema VALUES (99, 0)",
    ] {
        let r = store
            .query_readonly(write, 10, Duration::from_secs(5))
            .await;
        assert!(matches!(r, Err(QueryError::Failed(_))), "{write}: {r:?}");
    }
    assert_eq!(store.count().await.unwrap(), n, "nothing changed");
    assert!(matches!(
        store
            .query_readonly("SELECT 1; DELETE FROM records", 10, Duration::from_secs(5))
            .await,
        Err(QueryError::Refused(_))
    ));
    let q = store
        .query_readonly("SELECT request_id FROM records", 5, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(q.rows.len(), 5);
    assert!(q.truncated);
    let slow = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000) SELECT COUNT(*) FROM c";
    match store
        .query_readonly(slow, 10, Duration::from_millis(300))
        .await
    {
        Err(QueryError::Timeout(_)) => {}
        Err(QueryError::Failed(m)) if m.contains("timeout") || m.contains("cancel") => {}
        other => panic!("slow query not stopped: {other:?}"),
    }
    // Writes still work afterwards.
    store
        .insert_batch(&[small("after-query", 1_950_000_000_000, "z", "u", 200)])
        .await
        .unwrap();

    // Retention.
    let purged = store.purge_before(1_800_000_000_000).await.unwrap();
    assert_eq!(purged, 1);
    assert_eq!(store.get("req-full").await.unwrap(), None);
    assert!(store.get("r00").await.unwrap().is_some());

    // Feature versions: numbered per feature, one per content hash.
    let spec = |t: f64| serde_json::json!({"name": "summ", "params": {"temperature": t}});
    let p1 = store
        .push_feature_version("summ", "sha256:a", &spec(0.1), Some("ci"))
        .await
        .unwrap();
    assert_eq!((p1.version.version, p1.created), (1, true));
    let again = store
        .push_feature_version("summ", "sha256:a", &spec(0.1), None)
        .await
        .unwrap();
    assert_eq!((again.version.version, again.created), (1, false));
    assert_eq!(again.version.created_by.as_deref(), Some("ci"));
    // Concurrent pushes of different content each get their own number, however many
    // race for the same one (more pushers than a fixed retry count once lost to).
    let pushes = (0..16).map(|i| {
        let store = store.clone();
        async move {
            store
                .push_feature_version("summ", &format!("sha256:c{i}"), &spec(i as f64), None)
                .await
                .unwrap()
                .version
                .version
        }
    });
    let mut numbers = futures_util::future::join_all(pushes).await;
    numbers.sort();
    assert_eq!(numbers, (2..=17).collect::<Vec<i64>>());
    let all = store.feature_versions("summ").await.unwrap();
    assert_eq!(all.len(), 17);
    assert_eq!(all[0].spec, spec(0.1));
    assert_eq!(
        store
            .feature_version("summ", 3)
            .await
            .unwrap()
            .map(|v| v.version),
        Some(3)
    );
    assert!(store.feature_version("summ", 99).await.unwrap().is_none());
    assert!(store.feature_versions("other").await.unwrap().is_empty());

    deployments(&store).await;
    cost_report(&store).await;
    overview(&store).await;
    nulls_then_values(&store).await;
    keys(&store).await;
    evals(&store).await;
    scores(&store).await;
    inline_scores(&store).await;
    model_sightings(&store).await;
    // Kept reasoning state commits with its record and is found by tool-call id.
    let mut kept = small("req-kept", 1_000, "f", "u", 200);
    kept.reasoning_tokens = Some(192);
    kept.system_fingerprint = Some("fp_1".into());
    kept.upstream_model = Some("gemini-2.0-flash-001".into());
    kept.reasoning_state = vec![llmop_store::KeptState {
        call_id: "llmop_call_1".into(),
        state: serde_json::json!({"upstream_id": null, "parts": [{"kind": "signature", "signature": "s"}]}),
    }];
    store
        .insert_batch(std::slice::from_ref(&kept))
        .await
        .unwrap();
    let back = store.get("req-kept").await.unwrap().unwrap();
    assert_eq!(back.reasoning_tokens, Some(192));
    assert_eq!(back.system_fingerprint.as_deref(), Some("fp_1"));
    assert_eq!(back.upstream_model.as_deref(), Some("gemini-2.0-flash-001"));
    let found = store
        .reasoning_state(&["llmop_call_1".into(), "llmop_call_none".into()])
        .await
        .unwrap();
    assert_eq!(found, kept.reasoning_state);
    // Retention takes kept state with its records.
    store.purge_before(2_000).await.unwrap();
    assert!(store
        .reasoning_state(&["llmop_call_1".into()])
        .await
        .unwrap()
        .is_empty());
    store.close().await;
}

/// Evaluation's tables: dataset versions by content hash, the cache, runs and results,
/// compares for the gate, calibrations (a kappa that is NULL, then a value).
async fn evals(store: &Store) {
    use llmop_store::{Calibration, EvalCompare, EvalRun};
    let items = json!([{"id": "a", "variables": {"q": "1"}}]);
    let (v1, created) = store
        .push_dataset_version(
            "qa",
            "sha256:one",
            &items,
            Some("file:qa.jsonl"),
            Some("alice"),
        )
        .await
        .unwrap();
    assert!(created);
    assert_eq!((v1.version, v1.item_count), (1, 1));
    let (again, created) = store
        .push_dataset_version("qa", "sha256:one", &items, None, None)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again.version, 1);
    let (v2, _) = store
        .push_dataset_version("qa", "sha256:two", &json!([]), None, None)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    assert_eq!(
        store
            .dataset_version("qa", None)
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(
        store
            .dataset_version("qa", Some(1))
            .await
            .unwrap()
            .unwrap()
            .items,
        items
    );
    assert_eq!(store.dataset_versions(None).await.unwrap().len(), 2);
    // Racing pushes of different content each get their own number.
    let racing = (0..16).map(|i| {
        let store = store.clone();
        async move {
            let (v, created) = store
                .push_dataset_version("race", &format!("sha256:{i}"), &json!([]), None, None)
                .await
                .unwrap();
            assert!(created);
            v.version
        }
    });
    let mut numbers = futures_util::future::join_all(racing).await;
    numbers.sort();
    assert_eq!(numbers, (1..=16).collect::<Vec<i64>>());
    // Racing pushes of the same content: one version, created once.
    let racing = (0..16).map(|_| {
        let store = store.clone();
        async move {
            store
                .push_dataset_version("same", "sha256:same", &json!([]), None, None)
                .await
                .unwrap()
        }
    });
    let pushed = futures_util::future::join_all(racing).await;
    assert!(pushed.iter().all(|(v, _)| v.version == 1), "{pushed:?}");
    assert_eq!(pushed.iter().filter(|(_, created)| *created).count(), 1);

    store
        .eval_cache_put(&[("k1".into(), json!({"text": "x"})), ("k2".into(), json!(2))])
        .await
        .unwrap();
    // A key keeps its first value.
    store
        .eval_cache_put(&[("k1".into(), json!("other"))])
        .await
        .unwrap();
    let got = store
        .eval_cache_get(&["k1".into(), "k2".into(), "k3".into()])
        .await
        .unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got["k1"], json!({"text": "x"}));

    let run = EvalRun {
        id: "run-1".into(),
        feature: "qa".into(),
        version: 1,
        content_hash: "sha256:f1".into(),
        dataset: "qa".into(),
        dataset_version: 1,
        dataset_hash: "sha256:one".into(),
        evaluators_hash: "sha256:e".into(),
        repeats: 2,
        status: "running".into(),
        started_at_ms: 1,
        finished_at_ms: None,
        cost_usd: None,
        summary: None,
        created_by: None,
    };
    store.insert_eval_run(&run).await.unwrap();
    assert!(store
        .reusable_eval_run("qa", "sha256:f1", "sha256:one", "sha256:e", 2)
        .await
        .unwrap()
        .is_none());
    store
        .insert_eval_results(
            "run-1",
            &[
                ("a".into(), 0, json!({"n": 0})),
                ("a".into(), 1, json!({"n": 1})),
            ],
        )
        .await
        .unwrap();
    store
        .finish_eval_run("run-1", "complete", 0.25, &json!({"items": 1}))
        .await
        .unwrap();
    let reused = store
        .reusable_eval_run("qa", "sha256:f1", "sha256:one", "sha256:e", 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reused.cost_usd, Some(0.25));
    assert_eq!(reused.summary, Some(json!({"items": 1})));
    assert_eq!(store.eval_results("run-1").await.unwrap().len(), 2);
    assert_eq!(store.eval_runs("qa", 10).await.unwrap().len(), 1);

    let cmp = |id: &str, verdict: &str, at: i64| EvalCompare {
        id: id.into(),
        feature: "qa".into(),
        baseline_version: 1,
        baseline_hash: "sha256:f1".into(),
        candidate_version: 2,
        candidate_hash: "sha256:f2".into(),
        dataset: "qa".into(),
        dataset_hash: "sha256:one".into(),
        evals_hash: "sha256:file".into(),
        verdict: verdict.into(),
        report: json!({"verdict": verdict}),
        created_at_ms: at,
        created_by: None,
    };
    store
        .insert_eval_compare(&cmp("c1", "fail", 10))
        .await
        .unwrap();
    store
        .insert_eval_compare(&cmp("c2", "pass", 20))
        .await
        .unwrap();
    let latest = store
        .latest_eval_compare("qa", "sha256:f2", "sha256:f1", "sha256:one", "sha256:file")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (latest.id.as_str(), latest.verdict.as_str()),
        ("c2", "pass")
    );
    assert!(store
        .latest_eval_compare("qa", "sha256:f2", "sha256:f1", "sha256:one", "sha256:other")
        .await
        .unwrap()
        .is_none());

    let cal = |kappa: Option<f64>, at: i64| Calibration {
        judge: "judge".into(),
        version: 1,
        content_hash: "sha256:j".into(),
        dataset: "labels".into(),
        dataset_hash: "sha256:l".into(),
        kappa,
        report: json!({}),
        created_at_ms: at,
    };
    store.put_calibration(&cal(None, 1)).await.unwrap();
    assert_eq!(
        store.calibration("judge", 1).await.unwrap().unwrap().kappa,
        None
    );
    store.put_calibration(&cal(Some(0.75), 2)).await.unwrap();
    assert_eq!(
        store.calibration("judge", 1).await.unwrap().unwrap().kappa,
        Some(0.75)
    );
    assert!(store.calibration("judge", 2).await.unwrap().is_none());
}

/// Scores and the online queue: queued with their record, in its transaction; scores
/// upserted and aggregated; feedback becomes a `human` score.
async fn scores(store: &Store) {
    use llmop_store::{ScoreFilter, StoredScore};
    let mut r = small("scored-1", 5_000, "qa", "u", 200);
    r.feature_version = Some(2);
    r.env = Some("prod".into());
    r.online_evals = vec!["exact".into(), "judge".into()];
    let plain = small("scored-2", 5_001, "qa", "u", 200);
    store.insert_batch(&[r, plain]).await.unwrap();
    let due = store.due_online(i64::MAX, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].request_id, "scored-1");
    assert_eq!(due[0].evaluators, vec!["exact", "judge"]);
    // A retry moves it out of reach until its time.
    store
        .retry_online("scored-1", i64::MAX - 1, "judge down")
        .await
        .unwrap();
    assert!(store.due_online(1_000_000, 10).await.unwrap().is_empty());
    let q = store.due_online(i64::MAX, 10).await.unwrap();
    assert_eq!(
        (q[0].attempts, q[0].last_error.as_deref()),
        (1, Some("judge down"))
    );
    let score = |evaluator: &str, value: Option<f64>, pass: Option<bool>, error: Option<&str>| {
        StoredScore {
            request_id: "scored-1".into(),
            evaluator: evaluator.into(),
            source: "online".into(),
            feature: Some("qa".into()),
            feature_version: Some(2),
            env: Some("prod".into()),
            model: Some("sim/echo".into()),
            value,
            pass,
            error: error.map(str::to_string),
            cost_usd: None,
            created_at_ms: 6_000,
            ..StoredScore::default()
        }
    };
    store
        .finish_online(
            "scored-1",
            &[
                score("exact", Some(1.0), Some(true), None),
                score("judge", None, None, Some("no verdict")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(store.online_queue_len().await.unwrap(), 0);
    // The same evaluator again replaces its score.
    store
        .put_scores(&[StoredScore {
            cost_usd: Some(0.25),
            judge: Some("j v1".into()),
            ..score("judge", Some(0.0), Some(false), None)
        }])
        .await
        .unwrap();
    assert_eq!(store.online_judge_spend("qa", 0).await.unwrap(), 0.25);
    let of = store.scores_of("scored-1").await.unwrap();
    assert_eq!(of.len(), 2);
    assert_eq!(of[1].pass, Some(false));
    assert!(of[1].error.is_none());
    // Feedback is a human score.
    store
        .set_feedback(
            "scored-1",
            &Feedback {
                score: Some(1.0),
                label: Some("good".into()),
                comment: None,
                at_ms: 7_000,
            },
        )
        .await
        .unwrap();
    let groups = store
        .score_groups(&ScoreFilter {
            feature: Some("qa".into()),
            ..ScoreFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(groups.len(), 3, "{groups:?}");
    let human = groups.iter().find(|g| g.source == "human").unwrap();
    assert_eq!(
        (human.count, human.mean, human.pass_rate),
        (1, Some(1.0), Some(1.0))
    );
    let by_day = store
        .score_groups(&ScoreFilter {
            source: Some("online".into()),
            by_day: true,
            since_ms: Some(0),
            ..ScoreFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(by_day.len(), 2);
    assert_eq!(by_day[0].day_ms, Some(0));
    assert!(store
        .score_groups(&ScoreFilter {
            evaluator: Some("nope".into()),
            ..ScoreFilter::default()
        })
        .await
        .unwrap()
        .is_empty());
}

/// Scores given in place are part of their record's row and read like any other online
/// score (`all_scores`): per call, in aggregates, as points; a record stored under its
/// own key (a client reused a request id) takes its scores and its queued work there.
async fn inline_scores(store: &Store) {
    use llmop_store::InlineScore;
    let given = |evaluator: &str, pass: bool| {
        InlineScore::compact(
            evaluator.into(),
            Some(if pass { 1.0 } else { 0.0 }),
            Some(pass),
            Some(if pass { "fine" } else { "nope" }.to_string()),
            None,
        )
    };
    // A value that is the pass, and a passing check's detail, are not kept; a graded
    // value is.
    assert_eq!(given("a", true).value, None);
    assert_eq!(given("a", true).detail, None);
    assert_eq!(given("a", false).detail.as_deref(), Some("nope"));
    let graded = InlineScore::compact("g".into(), Some(0.7), Some(true), None, None);
    assert_eq!(graded.value, Some(0.7));
    let batch: Vec<Record> = (0..70)
        .map(|i| {
            let id = format!("inline-{i}");
            let mut r = small(&id, 9_000 + i, "inline", "u", 200);
            r.call_uid = format!("uid-{i}");
            r.feature_version = Some(1);
            r.provider = Some("sim".into());
            r.model = Some("echo".into());
            r.online_scores = vec![given("a", true), given("b", i % 2 == 0), given("c", false)];
            r
        })
        .collect();
    store.insert_batch(&batch).await.unwrap();
    let back = store.get("inline-4").await.unwrap().unwrap();
    assert_eq!(back.online_scores, batch[4].online_scores);
    let of = store.scores_of("inline-69").await.unwrap();
    assert_eq!(of.len(), 3, "{of:?}");
    let c = of.iter().find(|s| s.evaluator == "c").unwrap();
    assert_eq!(
        (c.source.as_str(), c.pass, c.value, c.detail.as_deref()),
        ("online", Some(false), Some(0.0), Some("nope"))
    );
    assert_eq!(
        (c.feature.as_deref(), c.feature_version, c.model.as_deref()),
        (Some("inline"), Some(1), Some("sim/echo"))
    );
    let b = store
        .score_groups(&llmop_store::ScoreFilter {
            feature: Some("inline".into()),
            evaluator: Some("b".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((b[0].count, b[0].pass_rate), (70, Some(0.5)), "{b:?}");
    let points = store.score_points("inline", 0).await.unwrap();
    assert_eq!(points.len(), 210);
    assert_eq!(points.iter().filter(|p| p.value == 1.0).count(), 70 + 35);
    let mut g = small("inline-graded", 9_400, "inline", "u", 200);
    g.online_scores = vec![graded];
    store.insert_batch(&[g]).await.unwrap();
    let of = store.scores_of("inline-graded").await.unwrap();
    assert_eq!((of[0].value, of[0].pass), (Some(0.7), Some(true)));
    // The same request id from another call: its scores and queued work follow it.
    let mut again = small("inline-3", 9_500, "inline", "u", 200);
    again.call_uid = "uid-other".into();
    again.online_scores = vec![given("a", false)];
    again.online_evals = vec!["judge".into()];
    store.insert_batch(&[again]).await.unwrap();
    let first = store.scores_of("inline-3").await.unwrap();
    assert!(first
        .iter()
        .all(|s| s.evaluator != "a" || s.pass == Some(true)));
    let moved = store.scores_of("inline-3~uid-other").await.unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].pass, Some(false));
    let due = store.due_online(i64::MAX, 100).await.unwrap();
    assert!(
        due.iter().any(|q| q.request_id == "inline-3~uid-other"),
        "{due:?}"
    );
    assert!(!due.iter().any(|q| q.request_id == "inline-3"));
}

/// Model sightings: the first is silent, a new identity under a known model is a change
/// (once), a known one is nothing.
async fn model_sightings(store: &Store) {
    use llmop_store::ModelSighting;
    let s = |u: &str, f: &str| ModelSighting {
        model: "openai/gpt-4o".into(),
        upstream_model: u.into(),
        fingerprint: f.into(),
    };
    assert_eq!(
        store
            .note_model_sighting(&s("gpt-4o-2024-08-06", "fp_1"), 1)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .note_model_sighting(&s("gpt-4o-2024-08-06", "fp_1"), 2)
            .await
            .unwrap(),
        None
    );
    let changed = store
        .note_model_sighting(&s("gpt-4o-2024-11-20", "fp_2"), 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(changed, vec![s("gpt-4o-2024-08-06", "fp_1")]);
    assert_eq!(
        store
            .note_model_sighting(&s("gpt-4o-2024-11-20", "fp_2"), 4)
            .await
            .unwrap(),
        None
    );
    let mut r = small("sighted", 9_000, "fp-feature", "u", 200);
    r.provider = Some("openai".into());
    r.model = Some("gpt-4o".into());
    r.upstream_model = Some("gpt-4o-2024-11-20".into());
    r.system_fingerprint = Some("fp_2".into());
    store.insert_batch(&[r]).await.unwrap();
    assert_eq!(
        store.model_sightings("fp-feature", 0).await.unwrap(),
        vec![s("gpt-4o-2024-11-20", "fp_2")]
    );
}

/// API keys: shown once, stored hashed, revocable.
async fn keys(store: &Store) {
    use llmop_store::{hash_key, key_id_of, KeyScopes};
    let scopes = KeyScopes {
        features: vec!["summ".into()],
        rpm: Some(60),
        ..KeyScopes::default()
    };
    let (k, secret) = store
        .create_key("ci", &scopes, Some("alice"))
        .await
        .unwrap();
    assert_eq!(key_id_of(&secret), Some(k.id.as_str()));
    assert_eq!(k.hash, hash_key(&secret));
    let (k2, secret2) = store
        .create_key("other", &KeyScopes::default(), None)
        .await
        .unwrap();
    assert_ne!(secret, secret2);
    let all = store.keys().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all.iter().find(|x| x.id == k.id).unwrap().scopes, scopes);
    // The secret itself is nowhere in the store.
    let q = store
        .query_readonly(
            "SELECT * FROM api_keys",
            10,
            std::time::Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert!(!format!("{:?}", q.rows).contains(&secret));
    assert!(store.revoke_key(&k2.id).await.unwrap());
    assert!(!store.revoke_key(&k2.id).await.unwrap());
    assert!(!store
        .keys()
        .await
        .unwrap()
        .iter()
        .find(|x| x.id == k2.id)
        .unwrap()
        .active());
}

/// A statement first executed with a NULL in a float column serves later rows with a
/// value there (on PostgreSQL a cached statement keeps its first parameter types; sqlx's
/// Any driver once typed a NULL f64 as float4 and every later cost failed to commit).
async fn nulls_then_values(store: &Store) {
    let at = 2_200_000_000_000;
    for (i, cost) in [None, Some(0.125), None, Some(2.5)].into_iter().enumerate() {
        // One row, then two rows per statement: both shapes see NULL first.
        let mut batch = Vec::new();
        for j in 0..=(i % 2) {
            let mut r = small(&format!("null-first-{i}-{j}"), at, "nf", "u", 200);
            r.cost_usd = cost;
            batch.push(r);
        }
        store.insert_batch(&batch).await.unwrap();
    }
    let got = store.get("null-first-3-1").await.unwrap().unwrap();
    assert_eq!(got.cost_usd, Some(2.5));
    assert_eq!(
        store.get("null-first-0-0").await.unwrap().unwrap().cost_usd,
        None
    );
    // Feedback: a label without a score first, then a score.
    let label_only = llmop_store::Feedback {
        score: None,
        label: Some("meh".into()),
        comment: None,
        at_ms: at,
    };
    assert!(store
        .set_feedback("null-first-0-0", &label_only)
        .await
        .unwrap());
    let scored = llmop_store::Feedback {
        score: Some(0.75),
        ..label_only
    };
    assert!(store.set_feedback("null-first-1-0", &scored).await.unwrap());
    let got = store.get("null-first-1-0").await.unwrap().unwrap();
    assert_eq!(got.feedback.and_then(|f| f.score), Some(0.75));
}

/// `llmop cost`: spend grouped by feature, model and tag; unknown costs counted apart.
async fn cost_report(store: &Store) {
    use llmop_store::CostBy;
    let at = 2_100_000_000_000;
    let rec = |id: &str, feature: &str, team: &str, cost: Option<f64>| {
        let mut r = small(id, at, feature, "u", 200);
        r.provider = Some("openai".into());
        r.model = Some("gpt-4o".into());
        r.tags.insert("team".into(), team.into());
        r.cost_usd = cost;
        r.input_tokens = Some(100);
        r.output_tokens = Some(10);
        r
    };
    store
        .insert_batch(&[
            rec("cost-1", "f1", "a", Some(0.5)),
            rec("cost-2", "f1", "b", Some(0.25)),
            rec("cost-3", "f2", "a", None),
        ])
        .await
        .unwrap();
    let by_feature = store.cost_by(&CostBy::Feature, at).await.unwrap();
    assert_eq!(by_feature.len(), 2);
    assert_eq!(by_feature[0].group.as_deref(), Some("f1"));
    assert_eq!((by_feature[0].calls, by_feature[0].cost_usd), (2, 0.75));
    assert_eq!(
        (by_feature[1].unpriced_calls, by_feature[1].cost_usd),
        (1, 0.0)
    );
    assert_eq!(by_feature[0].input_tokens, 200);
    let by_tag = store
        .cost_by(&CostBy::Tag("team".into()), at)
        .await
        .unwrap();
    assert_eq!(by_tag[0].group.as_deref(), Some("a"));
    assert_eq!((by_tag[0].calls, by_tag[0].cost_usd), (2, 0.5));
    let by_model = store.cost_by(&CostBy::Model, at).await.unwrap();
    assert_eq!(by_model[0].group.as_deref(), Some("openai/gpt-4o"));
    assert_eq!(by_model[0].calls, 3);
}

/// The overview: per-minute rollups kept by the writer agree with the records they
/// count (a record written twice counted once, a reused id counted as its own call),
/// and with the migration's SQL backfill.
async fn overview(store: &Store) {
    use llmop_store::overview::{Counts, Dim, Overview, OverviewQuery};
    let at = 2_200_000_000_000; // a whole minute
    let mut recs = Vec::new();
    for i in 0..120i64 {
        let mut r = small(
            &format!("ov-{i}"),
            at + i * 7_000,
            ["f1", "f2", "f3"][(i % 3) as usize],
            &format!("u{}", i % 4),
            if i % 10 == 0 { 502 } else { 200 },
        );
        r.provider = Some(["openai", "anthropic"][(i % 2) as usize].into());
        r.model = Some(["m-small", "m-large"][(i % 5 == 0) as usize].into());
        r.key_id = (i % 6 != 0).then(|| format!("key_{}", i % 2));
        r.latency_ms = 3 + i * 97;
        r.cost_usd = (i % 7 != 0).then_some(0.001 * i as f64);
        r.input_tokens = Some(100 + i);
        r.output_tokens = Some(10);
        r.degraded = i % 11 == 1;
        if i % 13 == 2 {
            r.status = 429;
            r.error_code = Some("budget_exceeded".into());
        }
        if i % 9 == 4 {
            let a = |p: &str, e: Option<&'static str>| Attempt {
                provider: p.into(),
                model: "m".into(),
                error: e.map(Into::into),
                upstream_status: None,
                latency_ms: 5,
                retry_reason: None,
            };
            r.attempts = vec![a("openai", Some("timeout")), a("anthropic", None)];
        }
        r.call_uid = format!("uid-{i}");
        recs.push(r);
    }
    store.insert_batch(&recs).await.unwrap();
    // The same records again (a spill replayed): stored once, counted once.
    store.insert_batch(&recs[..40]).await.unwrap();
    // A client reused an id: another call, counted.
    let mut reused = recs[5].clone();
    reused.call_uid = "uid-other".into();
    store.insert_batch(&[reused]).await.unwrap();

    let q = |only: Vec<(Dim, String)>, by: Dim| OverviewQuery {
        since_ms: at,
        until_ms: at + 120 * 7_000,
        bucket_ms: 300_000,
        only,
        by,
        top: 50,
    };
    fn rounded(mut o: Overview) -> Overview {
        let r = |c: &mut Counts| c.cost_usd = (c.cost_usd * 1e9).round() / 1e9;
        o.buckets.iter_mut().for_each(|b| r(&mut b.counts));
        o.groups.iter_mut().for_each(|g| r(&mut g.counts));
        r(&mut o.totals);
        o.from_rollups = true;
        o
    }
    let all = store.overview(&q(vec![], Dim::Feature)).await.unwrap();
    assert!(all.from_rollups);
    assert_eq!(all.totals.calls, 121);
    assert_eq!(all.buckets.len(), 3, "14 minutes in 5-minute buckets");
    assert_eq!(all.buckets.iter().map(|b| b.counts.calls).sum::<i64>(), 121);
    let expect = |f: &dyn Fn(i64) -> bool| (0..120).filter(|&i| f(i)).count() as i64;
    assert_eq!(
        all.totals.errors,
        // (the reused id's call, a copy of call 5, did not fail)
        expect(&|i| i % 10 == 0 || i % 13 == 2)
    );
    assert_eq!(all.totals.refusals, expect(&|i| i % 13 == 2));
    assert_eq!(all.totals.degraded, expect(&|i| i % 11 == 1));
    assert_eq!(
        all.totals.fallbacks,
        expect(&|i| i % 9 == 4 && i % 10 != 0 && i % 13 != 2 && i % 11 != 1)
    );
    assert_eq!(all.totals.unpriced, expect(&|i| i % 7 == 0));
    assert_eq!(all.groups.len(), 3);
    let median = all.totals.latency_quantile(0.5).unwrap();
    assert!((5_000.0..=7_500.0).contains(&median), "median {median}");

    let queries = [
        q(vec![], Dim::Feature),
        q(vec![], Dim::Model),
        q(vec![], Dim::Provider),
        q(vec![], Dim::Key),
        q(vec![(Dim::Feature, "f2".into())], Dim::Key),
        q(vec![(Dim::Key, "".into())], Dim::Model),
        q(
            vec![
                (Dim::Provider, "openai".into()),
                (Dim::Model, "m-large".into()),
            ],
            Dim::Feature,
        ),
    ];
    for query in &queries {
        let rolled = store.overview(query).await.unwrap();
        let counted = store.overview_from_records(query).await.unwrap();
        assert_eq!(rounded(rolled), rounded(counted), "{query:?}");
    }
    // By user: calls, errors and cost from the users' rollup.
    let users = store.overview(&q(vec![], Dim::User)).await.unwrap();
    let counted = store
        .overview_from_records(&q(vec![], Dim::User))
        .await
        .unwrap();
    assert_eq!(users.groups.len(), 4);
    for (a, b) in users.groups.iter().zip(&counted.groups) {
        assert_eq!(a.group, b.group);
        assert_eq!(
            (a.counts.calls, a.counts.errors),
            (b.counts.calls, b.counts.errors)
        );
        assert!((a.counts.cost_usd - b.counts.cost_usd).abs() < 1e-9);
    }
    // Only the largest groups are read, and the page is told there are more.
    for by in [Dim::Feature, Dim::User] {
        let top = store
            .overview(&OverviewQuery {
                top: 1,
                ..q(vec![], by)
            })
            .await
            .unwrap();
        assert_eq!(top.groups.len(), 1, "{by:?}");
        assert!(top.more_groups, "{by:?}");
        let all = store.overview(&q(vec![], by)).await.unwrap();
        assert_eq!(
            top.groups[0].group, all.groups[0].group,
            "the largest, {by:?}"
        );
    }
    // A filter on a user reads the user's records.
    let one = store
        .overview(&q(vec![(Dim::User, "u1".into())], Dim::Feature))
        .await
        .unwrap();
    assert!(!one.from_rollups);
    assert_eq!(one.totals.calls, 31, "30 calls and the reused id's");

    // The migration's SQL backfill rolls up the same numbers.
    let before: Vec<Overview> = {
        let mut v = Vec::new();
        for query in &queries {
            v.push(rounded(store.overview(query).await.unwrap()));
        }
        v
    };
    store.rebuild_rollups().await.unwrap();
    for (query, was) in queries.iter().zip(before) {
        assert_eq!(
            rounded(store.overview(query).await.unwrap()),
            was,
            "{query:?}"
        );
    }
    let after = store.overview(&q(vec![], Dim::User)).await.unwrap();
    assert_eq!(after.groups.len(), 4);
    assert_eq!(after.totals.calls, 121);
}

/// Deploy, split, shadow, rollback (twice), history and races.
async fn deployments(store: &Store) {
    use llmop_store::{Arm, ChangeBy, DeployError, DeploymentState, EventKind};
    let by = |reason: &'static str| ChangeBy {
        actor: Some("alice"),
        reason: Some(reason),
        ..Default::default()
    };
    // Nothing deployed: nothing to roll back; unknown versions refused.
    assert!(matches!(
        store.rollback("summ", "prod", by("x")).await,
        Err(DeployError::NothingToRollBack(_))
    ));
    assert!(matches!(
        store
            .deploy("summ", "prod", &DeploymentState::single(99), by("x"))
            .await,
        Err(DeployError::UnknownVersion { version: 99, .. })
    ));
    let bad_split = DeploymentState {
        arms: vec![
            Arm {
                version: 1,
                weight: 50,
            },
            Arm {
                version: 2,
                weight: 40,
            },
        ],
        shadow: None,
    };
    assert!(matches!(
        store.deploy("summ", "prod", &bad_split, by("x")).await,
        Err(DeployError::Invalid(m)) if m.contains("sum to 100")
    ));
    assert!(matches!(
        store
            .deploy("summ", "bad env!", &DeploymentState::single(1), by("x"))
            .await,
        Err(DeployError::Invalid(_))
    ));

    let e1 = store
        .deploy("summ", "prod", &DeploymentState::single(1), by("first"))
        .await
        .unwrap();
    assert_eq!(
        (e1.seq, e1.kind, e1.from.clone()),
        (1, EventKind::Deploy, None)
    );
    store
        .deploy("summ", "prod", &DeploymentState::single(2), by("second"))
        .await
        .unwrap();
    let split = DeploymentState {
        arms: vec![
            Arm {
                version: 2,
                weight: 90,
            },
            Arm {
                version: 3,
                weight: 10,
            },
        ],
        shadow: Some(4),
    };
    store
        .deploy("summ", "prod", &split, by("experiment"))
        .await
        .unwrap();
    store
        .deploy("summ", "staging", &DeploymentState::single(3), by("try"))
        .await
        .unwrap();
    let now = store.deployments().await.unwrap();
    assert_eq!(now.len(), 2);
    assert_eq!((now[0].env.as_str(), &now[0].state), ("prod", &split));
    assert_eq!(now[1].state, DeploymentState::single(3));

    // Rollback walks back one change at a time: split -> v2 -> v1 -> refused.
    let r1 = store
        .rollback("summ", "prod", by("bad split"))
        .await
        .unwrap();
    assert_eq!(r1.kind, EventKind::Rollback);
    assert_eq!(r1.from.as_ref(), Some(&split));
    assert_eq!(r1.to, DeploymentState::single(2));
    let r2 = store.rollback("summ", "prod", by("v2 too")).await.unwrap();
    assert_eq!(r2.to, DeploymentState::single(1));
    assert!(matches!(
        store.rollback("summ", "prod", by("again")).await,
        Err(DeployError::NothingToRollBack(_))
    ));
    // A deploy after rollbacks, then a rollback: back to what the deploy replaced.
    store
        .deploy("summ", "prod", &DeploymentState::single(3), by("fix"))
        .await
        .unwrap();
    let r3 = store
        .rollback("summ", "prod", by("fix broke"))
        .await
        .unwrap();
    assert_eq!(r3.to, DeploymentState::single(1));

    let history = store
        .deployment_history("summ", Some("prod"), 100)
        .await
        .unwrap();
    assert_eq!(history.len(), 7);
    assert_eq!(history[0].seq, 7);
    assert_eq!(history[0].reason.as_deref(), Some("fix broke"));
    assert_eq!(history[0].actor.as_deref(), Some("alice"));
    assert_eq!(
        store
            .deployment_history("summ", None, 100)
            .await
            .unwrap()
            .len(),
        8
    );

    // Concurrent deploys of one environment: every one applied in some order, no
    // sequence number taken twice, the row matching the last event.
    let racing = (0..16).map(|i| {
        let store = store.clone();
        async move {
            store
                .deploy(
                    "summ",
                    "race",
                    &DeploymentState::single(1 + i % 3),
                    ChangeBy::default(),
                )
                .await
                .unwrap()
                .seq
        }
    });
    let mut seqs = futures_util::future::join_all(racing).await;
    seqs.sort();
    assert_eq!(seqs, (1..=16).collect::<Vec<i64>>());
    let latest = &store
        .deployment_history("summ", Some("race"), 1)
        .await
        .unwrap()[0];
    let row = store
        .deployments()
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.env == "race")
        .unwrap();
    assert_eq!((row.seq, &row.state), (latest.seq, &latest.to));
    assert_eq!(
        store.feature_names().await.unwrap(),
        vec!["summ".to_string()]
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("records.db").display());
    run_suite(&url).await;
}

#[tokio::test]
async fn postgres_store() {
    let admin_url = std::env::var("LLMOP_TEST_PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("PostgreSQL must be reachable for the store suite (set LLMOP_TEST_PG_ADMIN_URL)");
    let db = format!(
        "llmop_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    );
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = admin_url.rsplit_once('/').map(|(b, _)| b).unwrap();
    let url = format!("{base}/{db}");
    let result = tokio::spawn(async move { run_suite(&url).await }).await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test]
async fn bad_urls_are_refused() {
    for url in ["mysql://x", "sqlite://", "llmop.db", ""] {
        assert!(
            matches!(Store::open(url).await, Err(StoreError::BadUrl(_))),
            "{url}"
        );
    }
}

/// A batch is inserted without asking which rows were new; one holding an id already
/// stored is written again, asking: every new record stored once, the stored one left
/// as it was, and the overview's rollups counting each call once.
#[tokio::test]
async fn a_batch_with_a_stored_id_keeps_every_record_once() {
    use llmop_store::overview::{Dim, Overview, OverviewQuery};
    async fn overview(store: &Store, at: i64) -> Overview {
        let q = OverviewQuery {
            since_ms: at - 60_000,
            until_ms: at + 60_000,
            bucket_ms: 60_000,
            only: vec![],
            by: Dim::Feature,
            top: 10,
        };
        store.overview(&q).await.unwrap()
    }
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("records.db").display());
    let store = Store::open(&url).await.unwrap();
    let at = 1_900_000_000_000;
    let first: Vec<Record> = (0..3)
        .map(|i| small(&format!("m{i}"), at + i, "f", "u", 200))
        .collect();
    store.insert_batch(&first).await.unwrap();
    // A retried batch: two of the first (the same calls, another status) and 70 new
    // (two statements: 64 rows, then the rest).
    let mut second: Vec<Record> = first[..2]
        .iter()
        .cloned()
        .map(|mut r| {
            r.status = 500;
            r
        })
        .collect();
    second.extend((0..70).map(|i| small(&format!("n{i}"), at + 10 + i, "f", "u", 200)));
    store.insert_batch(&second).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 73);
    assert_eq!(store.get("m0").await.unwrap().unwrap().status, 200);
    assert!(store.get("n69").await.unwrap().is_some());
    let o = overview(&store, at).await;
    assert!(o.from_rollups);
    assert_eq!((o.totals.calls, o.totals.errors), (73, 0));
    // The next batches ask from the start (a client reusing one id on every call costs
    // one wasted pass now and then): the same outcome.
    let third = vec![first[2].clone(), small("p0", at + 100, "f", "u", 200)];
    store.insert_batch(&third).await.unwrap();
    assert_eq!(store.count().await.unwrap(), 74);
    assert_eq!(overview(&store, at).await.totals.calls, 74);
    store.close().await;
}
