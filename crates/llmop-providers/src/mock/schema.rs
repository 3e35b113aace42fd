//! A JSON value that conforms to a JSON Schema, for the mock provider's structured
//! outputs and tool arguments. Covers what models are asked for in practice: objects
//! (all properties filled), arrays, scalars with enum/const/format/bounds, `anyOf`/`oneOf`
//! (first branch), `allOf` (merged objects) and local `$ref`s.
//!
//! Written by hand because schema crates validate, and fake-data crates do not read
//! JSON Schema.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

const MAX_DEPTH: usize = 12;

pub fn generate(schema: &Value, rng: &mut ChaCha8Rng) -> Value {
    gen(schema, schema, rng, 0, "value")
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let path = r.strip_prefix("#")?;
    if path.is_empty() {
        return Some(root);
    }
    root.pointer(path)
}

fn gen(s: &Value, root: &Value, rng: &mut ChaCha8Rng, depth: usize, name: &str) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let Some(obj) = s.as_object() else {
        // `true` / `{}`: anything goes.
        return json!(name);
    };
    if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
        return match resolve(root, r) {
            Some(t) => gen(t, root, rng, depth + 1, name),
            None => Value::Null,
        };
    }
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(e) = obj.get("enum").and_then(Value::as_array) {
        if !e.is_empty() {
            return e[rng.gen_range(0..e.len())].clone();
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(first) = obj.get(key).and_then(Value::as_array).and_then(|a| {
            a.iter()
                .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                .or_else(|| a.first())
        }) {
            return gen(first, root, rng, depth + 1, name);
        }
    }
    if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for b in all {
            if let Value::Object(m) = gen(b, root, rng, depth + 1, name) {
                merged.extend(m);
            }
        }
        return Value::Object(merged);
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.as_str(),
        // ["string", "null"]: the first non-null type.
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if obj.contains_key("properties") => "object",
        _ if obj.contains_key("items") => "array",
        _ => "string",
    };
    match ty {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), gen(v, root, rng, depth + 1, k));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let min = obj.get("minItems").and_then(Value::as_u64).unwrap_or(1);
            let max = obj
                .get("maxItems")
                .and_then(Value::as_u64)
                .unwrap_or(min.max(2));
            let n = if max > min {
                rng.gen_range(min..=max)
            } else {
                min
            }
            .min(8);
            let items = obj.get("items").cloned().unwrap_or(Value::Bool(true));
            Value::Array(
                (0..n)
                    .map(|_| gen(&items, root, rng, depth + 1, name))
                    .collect(),
            )
        }
        "integer" => {
            let lo = obj.get("minimum").and_then(Value::as_i64).unwrap_or(0);
            let hi = obj
                .get("maximum")
                .and_then(Value::as_i64)
                .unwrap_or(lo.saturating_add(100));
            json!(if hi > lo { rng.gen_range(lo..=hi) } else { lo })
        }
        "number" => {
            let lo = obj.get("minimum").and_then(Value::as_f64).unwrap_or(0.0);
            let hi = obj
                .get("maximum")
                .and_then(Value::as_f64)
                .unwrap_or(lo + 100.0);
            let v = if hi > lo { rng.gen_range(lo..hi) } else { lo };
            json!((v * 100.0).round() / 100.0)
        }
        "boolean" => json!(rng.gen_bool(0.5)),
        "null" => Value::Null,
        _ => json!(match obj.get("format").and_then(Value::as_str) {
            Some("date") => "2026-01-15".to_string(),
            Some("date-time") => "2026-01-15T12:00:00Z".to_string(),
            Some("email") => "user@example.com".to_string(),
            Some("uri") | Some("url") => "https://example.com/".to_string(),
            Some("uuid") => "00000000-0000-4000-8000-000000000000".to_string(),
            _ => {
                let base = format!("sample {name}");
                let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
                let max = obj
                    .get("maxLength")
                    .and_then(Value::as_u64)
                    .map(|m| m as usize);
                let mut s = base;
                while s.chars().count() < min {
                    s.push('x');
                }
                if let Some(m) = max {
                    s = s.chars().take(m).collect();
                }
                s
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn fills_a_realistic_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "age": {"type": "integer", "minimum": 18, "maximum": 30},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
                "kind": {"enum": ["a", "b"]},
                "when": {"type": "string", "format": "date"},
                "nick": {"type": ["string", "null"]},
                "addr": {"$ref": "#/$defs/addr"}
            },
            "required": ["name"],
            "$defs": {"addr": {"type": "object", "properties": {"city": {"type": "string"}}}}
        });
        let v = generate(&schema, &mut ChaCha8Rng::seed_from_u64(1));
        let age = v["age"].as_i64().unwrap();
        assert!((18..=30).contains(&age));
        assert_eq!(v["tags"].as_array().unwrap().len(), 2);
        assert!(v["kind"] == "a" || v["kind"] == "b");
        assert_eq!(v["when"], "2026-01-15");
        assert!(v["nick"].is_string());
        assert_eq!(v["addr"]["city"], "sample city");
        // Same seed, same value.
        assert_eq!(v, generate(&schema, &mut ChaCha8Rng::seed_from_u64(1)));
    }

    #[test]
    fn survives_recursive_refs() {
        let schema = json!({"$ref": "#"});
        let _ = generate(&schema, &mut ChaCha8Rng::seed_from_u64(1));
    }
}
