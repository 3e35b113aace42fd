//! `llmop feature push|versions|diff` against a real store: immutable numbered versions,
//! identical content returns the existing version, readable diffs, clear errors.

mod support;

use serde_json::Value;
use support::{llmop, output_text as text};

#[test]
fn push_versions_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("llmop.db").display());
    let shipped = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../features/summarize-ticket.toml"
    );
    let v1 = std::fs::read_to_string(shipped).unwrap();
    let file = dir.path().join("summarize-ticket.toml");
    std::fs::write(&file, &v1).unwrap();
    let f = file.to_str().unwrap();

    let o = llmop(&["feature", "push", f, "--store", &store, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (p["version"].as_i64(), p["created"].as_bool()),
        (Some(1), Some(true))
    );
    let hash = p["content_hash"].as_str().unwrap().to_string();

    // Same content (comments and spacing aside): the same version.
    std::fs::write(
        &file,
        format!(
            "# reviewed in PR 12\n{}",
            v1.replace("temperature = 0.2", "temperature =   0.2")
        ),
    )
    .unwrap();
    let o = llmop(&["feature", "push", f, "--store", &store, "--json"]);
    let p: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (p["version"].as_i64(), p["created"].as_bool()),
        (Some(1), Some(false))
    );
    assert_eq!(p["content_hash"], hash.as_str());

    // A changed prompt: version 2.
    std::fs::write(
        &file,
        v1.replace(
            "in at most {{ max_words }} words",
            "in {{ max_words }} words or fewer",
        ),
    )
    .unwrap();
    let o = llmop(&["feature", "push", f, "--store", &store]);
    assert!(
        text(&o).contains("summarize-ticket v2 registered"),
        "{}",
        text(&o)
    );

    let o = llmop(&["feature", "versions", "summarize-ticket", "--store", &store]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("route default") && t.contains(" 1 ") && t.contains(" 2 "),
        "{t}"
    );
    let o = llmop(&[
        "feature",
        "versions",
        "summarize-ticket",
        "--store",
        &store,
        "--json",
    ]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);

    let o = llmop(&[
        "feature",
        "diff",
        "summarize-ticket",
        "1",
        "2",
        "--store",
        &store,
    ]);
    let t = text(&o);
    assert!(
        t.contains("--- summarize-ticket v1") && t.contains("+++ summarize-ticket v2"),
        "{t}"
    );
    assert!(
        t.contains("-template = \"You summarize customer support tickets in at most"),
        "{t}"
    );
    assert!(t.contains("+template = \"You summarize customer support tickets in {{ max_words }} words or fewer"), "{t}");
    let o = llmop(&[
        "feature",
        "diff",
        "summarize-ticket",
        "1",
        "9",
        "--store",
        &store,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no version 9"));
}

#[test]
fn an_invalid_feature_file_is_refused_with_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("llmop.db").display());
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "name = \"bad\"\nroute = \"r\"\n[[messages]]\nrole = \"user\"\ntemplate = \"{{ who }}\"\n[output]\nparser = \"regex\"\npattern = \"(\"\n",
    )
    .unwrap();
    let o = llmop(&["feature", "push", file.to_str().unwrap(), "--store", &store]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("bad.toml: messages[0].template: uses `who`"),
        "{t}"
    );
    assert!(t.contains("bad.toml: output.pattern"), "{t}");
}

#[test]
fn deploy_refuses_a_version_the_configured_gateway_cannot_serve() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("llmop.db").display());
    let config = "[providers.sim]\nkind = \"mock\"\n";
    let feature = |model: &str| {
        format!("name = \"greet\"\nmodel = \"{model}\"\n[[messages]]\nrole = \"user\"\ntemplate = \"hello\"\n")
    };
    for (i, model) in ["nowhere/echo", "sim/echo"].iter().enumerate() {
        let file = dir.path().join(format!("v{i}.toml"));
        std::fs::write(&file, feature(model)).unwrap();
        let o = support::llmop_with_config(
            &["feature", "push", file.to_str().unwrap(), "--store", &store],
            config,
        );
        assert!(o.status.success(), "{}", text(&o));
    }
    // The same check as the admin API's: the config has no provider `nowhere`.
    let o = support::llmop_with_config(
        &["deploy", "greet", "1", "--env", "prod", "--store", &store],
        config,
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(
        t.contains("v1 targets `nowhere/echo`") && t.contains("cannot serve"),
        "{t}"
    );
    // What it can serve deploys.
    let o = support::llmop_with_config(
        &["deploy", "greet", "2", "--env", "prod", "--store", &store],
        config,
    );
    assert!(o.status.success(), "{}", text(&o));
}
