//! What a feature call reads from outside: the model's output (through the JSON, schema
//! and regex parsers), the caller's metadata and last message (variables), an invoke
//! body, and a deploy's split. None of them may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

const JSON: &str = r#"
name = "f"
model = "p/m"
[variables]
text = { type = "string" }
n = { type = "integer", default = 1 }
flags = { type = "array", default = [] }
[[messages]]
role = "user"
template = "{{ text }} {{ n }} {% for f in flags %}{{ f }}{% endfor %}"
[output]
parser = "json"
schema = { type = "object", properties = { summary = { type = "string", maxLength = 50 }, tags = { type = "array", items = { enum = ["a", "b"] } } }, required = ["summary"] }
"#;

const REGEX: &str = r#"
name = "g"
model = "p/m"
[[messages]]
role = "user"
template = "x"
[output]
parser = "regex"
pattern = '(?s)Label: (?P<label>\w+)(?:.*Score: (?P<score>[0-9.]+))?'
"#;

fn compiled(text: &str) -> llmop_features::CompiledFeature {
    let spec = llmop_features::FeatureSpec::parse(text).expect("seed feature parses");
    llmop_features::CompiledFeature::new(spec, 1, "h".into()).expect("compiles")
}

fuzz_target!(|data: &[u8]| {
    static FEATURES: OnceLock<(llmop_features::CompiledFeature, llmop_features::CompiledFeature)> =
        OnceLock::new();
    let (json, regex) = FEATURES.get_or_init(|| (compiled(JSON), compiled(REGEX)));
    let Ok(text) = std::str::from_utf8(data) else { return };
    for f in [json, regex] {
        if let Err(e) = f.parse_output(text) {
            let _ = f.repair_message(&e);
        }
    }
    let metadata = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let vars = json.variables_from_call(&metadata, Some(text));
    if let Ok(r) = json.render(&vars) {
        let _ = r.prompt_text();
    }
    let _ = llmop_store::DeploymentState::from_parts(None, Some(text), None);
    let weights: Vec<u32> = data.iter().take(8).map(|b| u32::from(*b)).collect();
    let _ = llmop_features::pick_arm(&weights, "s", Some(text), data.len() as u64);
});
