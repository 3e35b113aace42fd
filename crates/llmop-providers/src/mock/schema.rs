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
/// Most values (objects, arrays, scalars) one answer generates. Arrays of objects of
/// arrays multiply, and a recursive `$ref` recurses to `MAX_DEPTH`: without a bound a
/// 348-byte schema made a 28 MB answer. Past the bound, objects keep only their required
/// properties and arrays their `minItems`, filled with the smallest values.
const MAX_VALUES: usize = 2_000;
/// Most bytes of strings one answer generates (a `minLength` of a billion included).
const MAX_STRING_BYTES: usize = 64 * 1024;
/// Longest string one value gets.
const MAX_STRING_LEN: usize = 4 * 1024;
/// The span of plausible numbers: within the schema's bounds, a value at most this far
/// from the nearest bound (or from 0 when unbounded).
const SPAN: i64 = 100;

pub fn generate(schema: &Value, rng: &mut ChaCha8Rng) -> Value {
    let mut g = Gen {
        root: schema,
        rng,
        values_left: MAX_VALUES,
        bytes_left: MAX_STRING_BYTES,
    };
    g.gen(schema, 0, "value")
}

struct Gen<'a, 'r> {
    root: &'a Value,
    rng: &'r mut ChaCha8Rng,
    values_left: usize,
    bytes_left: usize,
}

fn resolve<'a>(root: &'a Value, r: &str) -> Option<&'a Value> {
    let path = r.strip_prefix("#")?;
    if path.is_empty() {
        return Some(root);
    }
    root.pointer(path)
}

/// Integer bounds from `minimum`/`maximum` and the exclusive forms (numbers, as in
/// draft 2020-12; booleans, as in draft 4).
fn int_bounds(obj: &Map<String, Value>) -> (Option<i64>, Option<i64>) {
    let num = |k: &str| obj.get(k).and_then(Value::as_f64);
    let flag = |k: &str| obj.get(k).and_then(Value::as_bool).unwrap_or(false);
    let clamp = |f: f64| f.clamp(i64::MIN as f64, i64::MAX as f64);
    let mut lo = num("minimum").map(|m| clamp(m.ceil()) as i64);
    if flag("exclusiveMinimum") {
        lo = lo.map(|l| l.saturating_add(1));
    }
    if let Some(x) = num("exclusiveMinimum") {
        let x = clamp(x.floor()) as i64 + 1;
        lo = Some(lo.map_or(x, |l| l.max(x)));
    }
    let mut hi = num("maximum").map(|m| clamp(m.floor()) as i64);
    if flag("exclusiveMaximum") {
        hi = hi.map(|h| h.saturating_sub(1));
    }
    if let Some(x) = num("exclusiveMaximum") {
        let x = clamp(x.ceil()) as i64 - 1;
        hi = Some(hi.map_or(x, |h| h.min(x)));
    }
    (lo, hi)
}

/// A plausible range inside the bounds: near the lower bound, else near the upper one,
/// else 0..=100. Never the extremes of a huge range.
fn plausible(lo: Option<i64>, hi: Option<i64>) -> (i64, i64) {
    match (lo, hi) {
        (Some(l), Some(h)) if h < l => (l, l),
        (Some(l), Some(h)) => (l, h.min(l.saturating_add(SPAN))),
        (Some(l), None) => (l, l.saturating_add(SPAN)),
        (None, Some(h)) => (h.saturating_sub(SPAN).max(h.min(0)), h),
        (None, None) => (0, SPAN),
    }
}

impl Gen<'_, '_> {
    fn exhausted(&self) -> bool {
        self.values_left == 0
    }

    fn gen(&mut self, s: &Value, depth: usize, name: &str) -> Value {
        self.values_left = self.values_left.saturating_sub(1);
        if depth > MAX_DEPTH {
            return Value::Null;
        }
        let Some(obj) = s.as_object() else {
            // `true` / `{}`: anything goes.
            return json!(name);
        };
        if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
            return match resolve(self.root, r) {
                Some(t) => self.gen(t, depth + 1, name),
                None => Value::Null,
            };
        }
        if let Some(c) = obj.get("const") {
            return c.clone();
        }
        if let Some(e) = obj.get("enum").and_then(Value::as_array) {
            if !e.is_empty() {
                return e[self.rng.gen_range(0..e.len())].clone();
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(first) = obj.get(key).and_then(Value::as_array).and_then(|a| {
                a.iter()
                    .find(|b| b.get("type").and_then(Value::as_str) != Some("null"))
                    .or_else(|| a.first())
            }) {
                return self.gen(first, depth + 1, name);
            }
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            let mut merged = Map::new();
            for b in all {
                if let Value::Object(m) = self.gen(b, depth + 1, name) {
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
                let required: Vec<&str> = obj
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let Some(props) = obj.get("properties").and_then(Value::as_object) {
                    for (k, v) in props {
                        if self.exhausted() && !required.contains(&k.as_str()) {
                            continue;
                        }
                        let v = self.gen(v, depth + 1, k);
                        out.insert(k.clone(), v);
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
                let n = if self.exhausted() {
                    min
                } else if max > min {
                    self.rng.gen_range(min..=max)
                } else {
                    min
                }
                .min(8);
                let items = obj.get("items").cloned().unwrap_or(Value::Bool(true));
                Value::Array((0..n).map(|_| self.gen(&items, depth + 1, name)).collect())
            }
            "integer" => {
                let (lo, hi) = plausible_of(obj);
                json!(if hi > lo {
                    self.rng.gen_range(lo..=hi)
                } else {
                    lo
                })
            }
            "number" => {
                let f = |k: &str| obj.get(k).and_then(Value::as_f64).filter(|v| v.is_finite());
                let span = SPAN as f64;
                let (lo, hi) = match (
                    f("minimum").or(f("exclusiveMinimum")),
                    f("maximum").or(f("exclusiveMaximum")),
                ) {
                    (Some(l), Some(h)) if h <= l => (l, l),
                    (Some(l), Some(h)) => (l, h.min(l + span)),
                    (Some(l), None) => (l, l + span),
                    (None, Some(h)) => ((h - span).max(h.min(0.0)), h),
                    (None, None) => (0.0, span),
                };
                let v = if hi > lo {
                    self.rng.gen_range(lo..hi)
                } else {
                    lo
                };
                json!(((v * 100.0).round() / 100.0).clamp(lo, hi))
            }
            "boolean" => json!(self.rng.gen_bool(0.5)),
            "null" => Value::Null,
            _ => json!(match obj.get("format").and_then(Value::as_str) {
                Some("date") => "2026-01-15".to_string(),
                Some("date-time") => "2026-01-15T12:00:00Z".to_string(),
                Some("email") => "user@example.com".to_string(),
                Some("uri") | Some("url") => "https://example.com/".to_string(),
                Some("uuid") => "00000000-0000-4000-8000-000000000000".to_string(),
                _ => {
                    let min = obj.get("minLength").and_then(Value::as_u64).unwrap_or(0);
                    let min = (min.min(MAX_STRING_LEN as u64) as usize).min(self.bytes_left);
                    let max = obj
                        .get("maxLength")
                        .and_then(Value::as_u64)
                        .map(|m| m.min(MAX_STRING_LEN as u64) as usize);
                    let mut s = if self.exhausted() {
                        String::new()
                    } else {
                        format!("sample {name}")
                    };
                    let have = s.chars().count();
                    if have < min {
                        s.extend(std::iter::repeat_n('x', min - have));
                    }
                    if let Some(m) = max {
                        s = s.chars().take(m).collect();
                    }
                    self.bytes_left = self.bytes_left.saturating_sub(s.len());
                    s
                }
            }),
        }
    }
}

fn plausible_of(obj: &Map<String, Value>) -> (i64, i64) {
    let (lo, hi) = int_bounds(obj);
    plausible(lo, hi)
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

    #[test]
    fn recursive_arrays_stay_small() {
        // The 348-byte schema that made a 28 MB answer: a node whose children are an
        // array of nodes, each with arrays of strings.
        let schema = json!({
            "type": "object",
            "properties": {"root": {"$ref": "#/$defs/node"}},
            "$defs": {"node": {"type": "object", "properties": {
                "name": {"type": "string", "minLength": 1000000000},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 8, "maxItems": 8},
                "children": {"type": "array", "items": {"$ref": "#/$defs/node"}, "minItems": 8, "maxItems": 8}
            }, "required": ["name"]}}
        });
        let v = generate(&schema, &mut ChaCha8Rng::seed_from_u64(3));
        let bytes = v.to_string().len();
        assert!(bytes < 1 << 20, "{bytes} bytes");
        assert!(v["root"]["name"].is_string());
    }

    #[test]
    fn numbers_are_plausible_and_within_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (schema, lo, hi) in [
            (json!({"type": "integer"}), 0, 100),
            (
                json!({"type": "integer", "minimum": -9007199254740991i64, "maximum": 9007199254740991i64}),
                -9007199254740991i64,
                -9007199254740891i64,
            ),
            (json!({"type": "integer", "maximum": 5}), -95, 5),
            (
                json!({"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}),
                1,
                2,
            ),
            (
                json!({"type": "integer", "minimum": 10, "exclusiveMinimum": true}),
                11,
                111,
            ),
            (
                json!({"type": "number", "minimum": 0.5, "maximum": 0.75}),
                0,
                1,
            ),
        ] {
            for _ in 0..50 {
                let v = generate(&schema, &mut rng).as_f64().unwrap();
                assert!(v >= lo as f64 && v <= hi as f64, "{schema} gave {v}");
            }
        }
    }
}
