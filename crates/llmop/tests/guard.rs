//! `llmop guard eval`: the detectors measured on a labeled set, as a person and a CI job
//! see it: a table or JSON, exit 0 at or above the given minimums, 1 below, 3 for a set
//! that cannot be read.

mod support;

use serde_json::Value;
use support::{llmop, output_text};

fn shipped() -> String {
    format!(
        "{}/../llmop-guard/data/labeled.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn guard_eval_measures_and_gates() {
    let set = shipped();
    let o = llmop(&[
        "guard",
        "eval",
        &set,
        "--locales",
        "us,gb,nl,es",
        "--min",
        "pii=0.95,0.95",
        "--min",
        "secret=0.95,0.95",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", output_text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(report["items"].as_u64().unwrap() >= 1000);
    assert!(report["categories"]["pii"]["tp"].as_u64().unwrap() >= 400);
    assert!(
        report["rules"]["secret.private_key"]["tp"]
            .as_u64()
            .unwrap()
            >= 5
    );

    // A set where the email detector misses what was expected of it: below its minimum.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.jsonl");
    std::fs::write(
        &small,
        concat!(
            r#"{"text": "write to ann@example.com", "expect": [{"rule": "pii.email", "value": "ann@example.com"}]}"#,
            "\n",
            r#"{"text": "write to ann at example dot com", "expect": [{"rule": "pii.email", "value": "ann at example dot com"}]}"#,
            "\n",
        ),
    )
    .unwrap();
    let o = llmop(&[
        "guard",
        "eval",
        small.to_str().unwrap(),
        "--min",
        "pii.email=0.9,0.9",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", output_text(&o));
    let text = output_text(&o);
    assert!(
        text.contains("pii.email") && text.contains("50.0%"),
        "{text}"
    );
    assert!(text.contains("below the minimum: pii.email"), "{text}");

    std::fs::write(&small, "{not json\n").unwrap();
    let o = llmop(&["guard", "eval", small.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", output_text(&o));
    assert!(output_text(&o).contains("line 1"), "{}", output_text(&o));
}
