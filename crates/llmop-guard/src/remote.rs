//! Remote checks' answers, read: llmop's own protocol and OpenAI's moderation API. The
//! gateway makes the HTTP call (this crate does no I/O); what comes back is outside
//! input, read here and fuzzed (`fuzz/fuzz_targets/guard_answers.rs`).

use crate::policy::ModelFinding;
use llmop_core::config::RemoteProtocol;

/// A service's answer (a JSON body) in its protocol; `only`: the categories or labels
/// that count (empty: the service's own `flagged`).
pub fn read_answer(
    protocol: RemoteProtocol,
    body: &[u8],
    only: &[String],
) -> Result<ModelFinding, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| "its answer is not JSON".to_string())?;
    match protocol {
        RemoteProtocol::Llmop => read_llmop(&v, only),
        RemoteProtocol::OpenaiModeration => read_moderation(&v, only),
    }
}

/// `{"flagged": bool, "labels": [..], "score": n}`.
fn read_llmop(v: &serde_json::Value, only: &[String]) -> Result<ModelFinding, String> {
    let flagged = v
        .get("flagged")
        .and_then(|f| f.as_bool())
        .ok_or("its answer has no boolean `flagged`")?;
    let labels: Vec<&str> = v
        .get("labels")
        .and_then(|l| l.as_array())
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let found = if only.is_empty() {
        flagged
    } else {
        labels.iter().any(|l| only.iter().any(|o| o == l))
    };
    let shown: Vec<String> = labels.iter().filter_map(|l| label(l)).collect();
    let mut evidence = shown.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    if shown.len() < labels.len() {
        evidence = format!(
            "{evidence} [{} labels not recorded]",
            labels.len() - shown.len()
        )
        .trim()
        .to_string();
    }
    // Scores are probabilities; a service's other numbers are shown clamped, so what
    // is recorded stays short.
    if let Some(s) = v
        .get("score")
        .and_then(|s| s.as_f64())
        .map(|s| s.clamp(0.0, 1.0))
    {
        evidence = format!("{evidence} ({s:.2})").trim().to_string();
    }
    Ok(ModelFinding { found, evidence })
}

/// OpenAI's moderation answer: `{"results": [{"flagged", "categories": {name: bool},
/// "category_scores": {name: n}}]}`, one result per input text.
fn read_moderation(v: &serde_json::Value, only: &[String]) -> Result<ModelFinding, String> {
    let results = v
        .get("results")
        .and_then(|r| r.as_array())
        .ok_or("its answer has no `results`")?;
    let mut found = false;
    let mut hits: Vec<(String, f64)> = Vec::new();
    let mut unshown = 0usize;
    for r in results {
        let flagged = r.get("flagged").and_then(|f| f.as_bool()).unwrap_or(false);
        let cats = r.get("categories").and_then(|c| c.as_object());
        let scores = r.get("category_scores").and_then(|c| c.as_object());
        let mut any_selected = false;
        for (name, on) in cats.into_iter().flatten() {
            if on.as_bool() != Some(true) {
                continue;
            }
            if only.is_empty() || only.iter().any(|o| o == name) {
                any_selected = true;
            }
            let score = scores
                .and_then(|s| s.get(name))
                .and_then(|s| s.as_f64())
                .unwrap_or(0.0)
                .clamp(0.0, 1.0);
            match label(name) {
                Some(n) if !hits.iter().any(|(h, _)| *h == n) => hits.push((n, score)),
                Some(_) => {}
                None => unshown += 1,
            }
        }
        found |= if only.is_empty() {
            flagged
        } else {
            any_selected
        };
    }
    hits.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut evidence = hits
        .iter()
        .take(8)
        .map(|(n, s)| format!("{n} ({s:.2})"))
        .collect::<Vec<_>>()
        .join(", ");
    if unshown > 0 {
        evidence = format!("{evidence} [{unshown} labels not recorded]")
            .trim()
            .to_string();
    }
    Ok(ModelFinding { found, evidence })
}

/// A label from outside as recorded, if it looks like one: 1 to 64 letters, spaces and
/// `_ - / .`. A service that echoes what it was sent (an email address, a key, a
/// number) would otherwise write the very values the rules keep out of records into
/// the verdict's evidence; such a "label" is counted, not shown.
fn label(s: &str) -> Option<String> {
    let ok = (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphabetic() || b" _-/.".contains(&b));
    ok.then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn remote_answers_are_read_in_their_protocol() {
        let v = json!({"flagged": true, "labels": ["hate", "spam"], "score": 0.93});
        let f = read_llmop(&v, &[]).unwrap();
        assert!(f.found);
        assert_eq!(f.evidence, "hate, spam (0.93)");
        assert!(!read_llmop(&v, &["violence".into()]).unwrap().found);
        assert!(read_llmop(&json!({"labels": []}), &[]).is_err());
        // A service echoing the text it was sent does not put it in the record.
        let echo = json!({"flagged": true, "labels": ["pii", "ann@example.com", "ghp_8f3KzQ1vW7xY2bN5mR9tL0aC4dE6gH1jK3pS"]});
        let f = read_llmop(&echo, &[]).unwrap();
        assert_eq!(f.evidence, "pii [2 labels not recorded]");
        let m = json!({"results": [{"flagged": true, "categories": {"violence": true, "4111 1111 1111 1111": true}, "category_scores": {"violence": 0.8}}]});
        assert_eq!(
            read_moderation(&m, &[]).unwrap().evidence,
            "violence (0.80) [1 labels not recorded]"
        );

        let m = json!({"id": "modr-1", "model": "omni-moderation-latest", "results": [
            {"flagged": false, "categories": {"violence": false}, "category_scores": {"violence": 0.01}},
            {"flagged": true, "categories": {"violence": true, "harassment": true, "hate": false},
             "category_scores": {"violence": 0.91, "harassment": 0.40, "hate": 0.02}}
        ]});
        let f = read_moderation(&m, &[]).unwrap();
        assert!(f.found);
        assert_eq!(f.evidence, "violence (0.91), harassment (0.40)");
        assert!(!read_moderation(&m, &["hate".into()]).unwrap().found);
        assert!(read_moderation(&m, &["harassment".into()]).unwrap().found);
        assert!(read_moderation(&json!({}), &[]).is_err());
    }
}
