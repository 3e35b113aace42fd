//! Datasets: named lists of items, versioned by content hash.
//!
//! An item is what one evaluated call is made of: its variables (for a feature) or
//! messages (for a route), optionally the expected output (text, JSON or labels), tags,
//! and where it came from. Files are JSON Lines (one item per line) or CSV (a header
//! row; `id`, `expected`, `labels`, `tags`, `source` are item fields, every other column
//! is a variable).
//!
//! The content hash is SHA-256 of the items' canonical JSON (object keys sorted, items in
//! id order), so reordering lines or reformatting does not make a new version and any
//! change of content does. An item's own [`Item::input_hash`] covers only what the model
//! is asked (variables, messages): the answer cache keys on it, so fixing an item's
//! expected output does not throw its cached answers away.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub variables: Map<String, Value>,
    /// OpenAI-format messages, for items that evaluate a route rather than a feature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Value>>,
    /// The expected output: text, or any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// Human labels (judge calibration: the verdict a person gave).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Where the item came from (`file:tickets.jsonl`, `record:<request id>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// An item as a file may write it: the id is optional (then it is derived from the
/// content).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileItem {
    id: Option<Value>,
    #[serde(default)]
    variables: Map<String, Value>,
    messages: Option<Vec<Value>>,
    expected: Option<Value>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    source: Option<String>,
}

impl Item {
    /// A recorded feature call as an item: its variables, no expected output.
    pub fn from_record(r: &llmop_store::Record) -> Item {
        Item {
            id: r.request_id.clone(),
            variables: match &r.variables {
                Some(Value::Object(v)) => v.clone(),
                _ => Map::new(),
            },
            messages: None,
            expected: None,
            labels: vec![],
            tags: vec![],
            source: Some(format!("record:{}", r.request_id)),
        }
    }

    /// SHA-256 of what the model is asked (variables and messages), hex.
    pub fn input_hash(&self) -> String {
        hash_json(&serde_json::json!({
            "variables": Value::Object(self.variables.clone()),
            "messages": self.messages,
        }))
    }

    /// The expected output as text (a JSON value as its compact JSON), if any.
    pub fn expected_text(&self) -> Option<String> {
        self.expected.as_ref().map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.id.is_empty() || self.id.len() > 200 {
            return Err("`id` must be 1 to 200 characters".into());
        }
        if self.variables.is_empty() && self.messages.is_none() {
            return Err(
                "an item needs `variables` (for a feature) or `messages` (for a route)".into(),
            );
        }
        if let Some(m) = &self.messages {
            if m.is_empty() {
                return Err("`messages` is empty".into());
            }
            for (i, msg) in m.iter().enumerate() {
                let ok = msg.get("role").and_then(Value::as_str).is_some();
                if !ok {
                    return Err(format!("messages[{i}] has no `role`"));
                }
            }
        }
        Ok(())
    }
}

/// A JSON value with every object's keys sorted, recursively: one text per content.
pub fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let sorted: BTreeMap<&String, Value> =
                m.iter().map(|(k, v)| (k, canonical(v))).collect();
            Value::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// SHA-256 of a value's canonical JSON, hex.
pub fn hash_json(v: &Value) -> String {
    let text = canonical(v).to_string();
    hex(&Sha256::digest(text.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The content hash of a dataset: `sha256:` + SHA-256 of its items in id order.
pub fn content_hash(items: &[Item]) -> String {
    let mut sorted: Vec<&Item> = items.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let v = serde_json::to_value(&sorted).unwrap_or(Value::Null);
    format!("sha256:{}", hash_json(&v))
}

/// Reads a dataset file by its extension: `.jsonl` (or `.ndjson`, `.json` lines), `.csv`.
/// Errors name the line (and the field) of every problem, up to 20.
pub fn parse_file(name: &str, text: &str) -> Result<Vec<Item>, Vec<String>> {
    let items = if name.ends_with(".csv") {
        parse_csv(name, text)?
    } else {
        parse_jsonl(name, text)?
    };
    check_items(items)
}

fn file_label(name: &str) -> String {
    std::path::Path::new(name)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| name.to_string())
}

fn from_file_item(fi: FileItem, source: &str) -> Result<Item, String> {
    let mut item = Item {
        id: String::new(),
        variables: fi.variables,
        messages: fi.messages,
        expected: fi.expected,
        labels: fi.labels,
        tags: fi.tags,
        source: fi.source.or_else(|| Some(source.to_string())),
    };
    item.id = match fi.id {
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("`id` must be a string or a number".into()),
        // No id: derived from what the item asks, so it is stable across pushes.
        None => format!("item-{}", &item.input_hash()[..12]),
    };
    Ok(item)
}

/// JSON Lines: one item per non-empty line.
pub fn parse_jsonl(name: &str, text: &str) -> Result<Vec<Item>, Vec<String>> {
    let source = format!("file:{}", file_label(name));
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut de = serde_json::Deserializer::from_str(line);
        let parsed: Result<FileItem, _> = serde_path_to_error::deserialize(&mut de);
        match parsed {
            Ok(fi) => match from_file_item(fi, &source) {
                Ok(item) => items.push(item),
                Err(e) => errors.push(format!("{name}:{}: {e}", i + 1)),
            },
            Err(e) => {
                let path = e.path().to_string();
                let at = if path == "." {
                    String::new()
                } else {
                    format!("{path}: ")
                };
                errors.push(format!("{name}:{}: {at}{}", i + 1, e.inner()));
            }
        }
        if errors.len() >= 20 {
            break;
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// CSV with a header row. `labels` and `tags` are `;`-separated; `expected` that is valid
/// JSON object/array is kept as JSON, else as text. Variables are text; the runner
/// converts them to the feature's declared types.
pub fn parse_csv(name: &str, text: &str) -> Result<Vec<Item>, Vec<String>> {
    let source = format!("file:{}", file_label(name));
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = match rdr.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(vec![format!("{name}: {e}")]),
    };
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{name}:{line}: {e}"));
                continue;
            }
        };
        let mut fi = FileItem {
            id: None,
            variables: Map::new(),
            messages: None,
            expected: None,
            labels: vec![],
            tags: vec![],
            source: None,
        };
        let list = |s: &str| -> Vec<String> {
            s.split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect()
        };
        for (h, v) in headers.iter().zip(rec.iter()) {
            match h {
                "id" if !v.is_empty() => fi.id = Some(Value::String(v.to_string())),
                "id" => {}
                "expected" if v.is_empty() => {}
                "expected" => {
                    fi.expected = Some(match serde_json::from_str::<Value>(v) {
                        Ok(j @ (Value::Object(_) | Value::Array(_))) => j,
                        _ => Value::String(v.to_string()),
                    })
                }
                "labels" => fi.labels = list(v),
                "tags" => fi.tags = list(v),
                "source" if !v.is_empty() => fi.source = Some(v.to_string()),
                "source" => {}
                var => {
                    fi.variables
                        .insert(var.to_string(), Value::String(v.to_string()));
                }
            }
        }
        match from_file_item(fi, &source) {
            Ok(item) => items.push(item),
            Err(e) => errors.push(format!("{name}:{line}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// Every item valid, ids unique, at least one item.
pub fn check_items(items: Vec<Item>) -> Result<Vec<Item>, Vec<String>> {
    let mut errors = Vec::new();
    let mut seen = BTreeSet::new();
    for item in &items {
        if let Err(e) = item.check() {
            errors.push(format!("item `{}`: {e}", item.id));
        }
        if !seen.insert(item.id.as_str()) {
            errors.push(format!("item id `{}` appears more than once", item.id));
        }
    }
    if items.is_empty() {
        errors.push("the dataset has no items".into());
    }
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(errors)
    }
}

/// What changed between two versions of a dataset, by item id.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
    pub unchanged: usize,
}

pub fn diff(a: &[Item], b: &[Item]) -> Diff {
    let a: BTreeMap<&str, &Item> = a.iter().map(|i| (i.id.as_str(), i)).collect();
    let b: BTreeMap<&str, &Item> = b.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut d = Diff::default();
    for (id, item) in &b {
        match a.get(id) {
            None => d.added.push(id.to_string()),
            Some(old) if old != item => d.changed.push(id.to_string()),
            Some(_) => d.unchanged += 1,
        }
    }
    for id in a.keys() {
        if !b.contains_key(id) {
            d.removed.push(id.to_string());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jsonl_items_with_and_without_ids() {
        let text = r#"{"id":"a","variables":{"q":"2+2"},"expected":"4","tags":["math"]}

{"variables":{"q":"capital of France"},"expected":{"answer":"Paris"}}
"#;
        let items = parse_file("evals/datasets/qa.jsonl", text).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id, "a");
        assert_eq!(items[0].source.as_deref(), Some("file:qa.jsonl"));
        assert!(items[1].id.starts_with("item-"));
        assert_eq!(items[1].expected_text().unwrap(), r#"{"answer":"Paris"}"#);
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let text = "{\"id\":\"a\",\"variables\":{\"q\":1}}\n{\"id\":\"b\",\"variabls\":{}}\n{\"id\":\"a\",\"variables\":{\"q\":2}}\n{\"id\":\"c\"}\n";
        let errs = parse_file("d.jsonl", text).unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("d.jsonl:2:"), "{all}");
        assert!(all.contains("variabls"), "{all}");
        // Line 3 parses; the duplicate id and the empty item are refused afterwards.
        let text = "{\"id\":\"a\",\"variables\":{\"q\":1}}\n{\"id\":\"a\",\"variables\":{\"q\":2}}\n{\"id\":\"c\"}\n";
        let all = parse_file("d.jsonl", text).unwrap_err().join("\n");
        assert!(all.contains("`a` appears more than once"), "{all}");
        assert!(all.contains("item `c`: an item needs"), "{all}");
        assert!(parse_file("d.jsonl", "\n\n").is_err());
    }

    #[test]
    fn csv_columns_become_variables() {
        let text = "id,ticket,max_words,expected,tags\nt1,\"My order, #12, never came\",30,\"{\"\"summary\"\":\"\"late\"\"}\",billing;urgent\nt2,Refund please,20,refund,\n";
        let items = parse_file("tickets.csv", text).unwrap();
        assert_eq!(items[0].variables["ticket"], "My order, #12, never came");
        assert_eq!(items[0].variables["max_words"], "30");
        assert_eq!(items[0].expected.as_ref().unwrap()["summary"], "late");
        assert_eq!(items[0].tags, vec!["billing", "urgent"]);
        assert_eq!(items[1].expected, Some(Value::String("refund".into())));
        assert!(items[1].tags.is_empty());
    }

    #[test]
    fn hash_ignores_order_and_formatting_but_not_content() {
        let a = parse_file("a.jsonl", "{\"id\":\"1\",\"variables\":{\"x\":1,\"y\":2}}\n{\"id\":\"2\",\"variables\":{\"x\":3}}").unwrap();
        let b = parse_file("b.jsonl", "{\"id\":\"2\",\"variables\":{\"x\":3}}\n{ \"variables\": {\"y\":2,\"x\":1}, \"id\":\"1\" }").unwrap();
        // Sources differ (file names): hash the items without them to compare content.
        let strip = |v: Vec<Item>| -> Vec<Item> {
            v.into_iter()
                .map(|mut i| {
                    i.source = None;
                    i
                })
                .collect()
        };
        assert_eq!(content_hash(&strip(a.clone())), content_hash(&strip(b)));
        let mut c = strip(a.clone());
        c[0].expected = Some(Value::String("3".into()));
        assert_ne!(content_hash(&strip(a.clone())), content_hash(&c));
        // The input hash ignores the expected output.
        assert_eq!(a[0].input_hash(), c[0].input_hash());
    }

    #[test]
    fn diff_by_id() {
        let a = parse_file(
            "a.jsonl",
            "{\"id\":\"1\",\"variables\":{\"x\":1}}\n{\"id\":\"2\",\"variables\":{\"x\":2}}",
        )
        .unwrap();
        let b = parse_file(
            "a.jsonl",
            "{\"id\":\"2\",\"variables\":{\"x\":20}}\n{\"id\":\"3\",\"variables\":{\"x\":3}}",
        )
        .unwrap();
        let d = diff(&a, &b);
        assert_eq!(d.added, vec!["3"]);
        assert_eq!(d.removed, vec!["1"]);
        assert_eq!(d.changed, vec!["2"]);
    }

    proptest! {
        /// Any text: a list of problems or items, never a panic.
        #[test]
        fn never_panics(text in ".{0,400}") {
            let _ = parse_file("x.jsonl", &text);
            let _ = parse_file("x.csv", &text);
        }

        #[test]
        fn canonical_is_idempotent_and_order_free(keys in proptest::collection::vec("[a-z]{1,4}", 0..8)) {
            let mut fwd = Map::new();
            for (i, k) in keys.iter().enumerate() { fwd.insert(k.clone(), Value::from(i)); }
            let mut rev = Map::new();
            for k in keys.iter().rev() { rev.insert(k.clone(), fwd[k].clone()); }
            let (f, r) = (Value::Object(fwd), Value::Object(rev));
            prop_assert_eq!(hash_json(&f), hash_json(&r));
            prop_assert_eq!(canonical(&canonical(&f)), canonical(&f));
        }
    }
}
