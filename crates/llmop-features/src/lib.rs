//! llmop-features: the feature file and what can be known from it alone.
//!
//! A feature (`features/<name>.toml`, reviewed like code) bundles message templates,
//! declared variables, a route or `provider/model`, request parameters and an output
//! parser into one unit that is registered as immutable, numbered versions. This crate
//! parses and validates the file, computes its content hash (what makes pushing the same
//! content twice return the same version), renders its messages from variables, and
//! diffs two versions. Registering, deploying and serving versions live in the store and
//! the gateway.
//!
//! Invariants: pure (no I/O besides what the caller hands in); a spec that passed
//! [`FeatureSpec::parse`] renders every template without a syntax error, and refers only
//! to declared variables.

mod compiled;

pub use compiled::{pick_arm, CompiledFeature, ParseError, Rendered};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A route name; or set `model` to `provider/model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub params: Params,
    pub messages: Vec<MessageTemplate>,
    #[serde(default)]
    pub output: Output,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_response: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(rename = "type")]
    pub kind: VarType,
    /// Required unless it has a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarType {
    String,
    Integer,
    Number,
    Boolean,
    Array,
    Object,
}

impl VarType {
    fn accepts(self, v: &Value) -> bool {
        match self {
            VarType::String => v.is_string(),
            VarType::Integer => v.is_i64() || v.is_u64(),
            VarType::Number => v.is_number(),
            VarType::Boolean => v.is_boolean(),
            VarType::Array => v.is_array(),
            VarType::Object => v.is_object(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            VarType::String => "string",
            VarType::Integer => "integer",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::Array => "array",
            VarType::Object => "object",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTemplate {
    pub role: Role,
    /// A minijinja template; undefined variables are errors.
    pub template: String,
    /// A long static part (a policy, a document): with provider prompt caching on, a
    /// cache breakpoint closes this message (docs/caching.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cache: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    #[serde(default)]
    pub parser: Parser,
    /// JSON Schema of the output (`parser = "json"`); optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// A regex with named groups (`parser = "regex"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    #[serde(default)]
    pub on_parse_failure: OnParseFailure,
    /// The answer when `on_parse_failure = "static"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_response: Option<Value>,
}

impl Default for Output {
    fn default() -> Self {
        Output {
            parser: Parser::Text,
            schema: None,
            pattern: None,
            on_parse_failure: OnParseFailure::default(),
            static_response: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parser {
    #[default]
    Text,
    Json,
    Regex,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnParseFailure {
    /// One more call that shows the model its invalid output and the schema.
    #[default]
    Repair,
    NextTarget,
    Static,
    /// Surface a 422 to the client.
    Error,
}

/// A problem in a feature file, naming where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct SpecError {
    pub key: String,
    pub message: String,
}

/// A template could not be rendered from the given variables.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RenderError {
    #[error("missing variable `{0}`")]
    Missing(String),
    #[error("variable `{name}` must be {expected}")]
    WrongType {
        name: String,
        expected: &'static str,
    },
    #[error("unknown variable `{0}`: the feature does not declare it")]
    Unknown(String),
    #[error("template of message {index}: {message}")]
    Template { index: usize, message: String },
}

impl RenderError {
    /// The variable the error is about, if any.
    pub fn variable(&self) -> Option<&str> {
        match self {
            RenderError::Missing(v) | RenderError::Unknown(v) => Some(v),
            RenderError::WrongType { name, .. } => Some(name),
            RenderError::Template { .. } => None,
        }
    }
}

fn env() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

impl FeatureSpec {
    /// Parses and validates a feature file's text. Every problem is reported.
    pub fn parse(text: &str) -> Result<FeatureSpec, Vec<SpecError>> {
        let de = toml::Deserializer::new(text);
        let spec: FeatureSpec = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            vec![SpecError {
                key: if key == "." { String::new() } else { key },
                message: e.into_inner().message().to_string(),
            }]
        })?;
        let errors = spec.validate();
        if errors.is_empty() {
            Ok(spec)
        } else {
            Err(errors)
        }
    }

    fn validate(&self) -> Vec<SpecError> {
        let mut out = Vec::new();
        let mut err = |key: &str, message: String| {
            out.push(SpecError {
                key: key.to_string(),
                message,
            })
        };
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.len() <= 64
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        };
        if !valid_name(&self.name) {
            err(
                "name",
                "1-64 characters of a-z, 0-9, `-` and `_`".to_string(),
            );
        }
        match (&self.route, &self.model) {
            (Some(_), Some(_)) => err("route", "set `route` or `model`, not both".into()),
            (None, None) => err(
                "route",
                "set `route` (a route name) or `model` (provider/model)".into(),
            ),
            (None, Some(m)) if !m.contains('/') => {
                err("model", format!("`{m}` is not provider/model"))
            }
            _ => {}
        }
        for (name, v) in &self.variables {
            if let Some(d) = &v.default {
                if !v.kind.accepts(d) {
                    err(
                        &format!("variables.{name}.default"),
                        format!("is not a {}", v.kind.as_str()),
                    );
                }
            }
        }
        if self.messages.is_empty() {
            err("messages", "at least one message".into());
        }
        let env = env();
        for (i, m) in self.messages.iter().enumerate() {
            match env.template_from_str(&m.template) {
                Ok(t) => {
                    for var in t.undeclared_variables(false) {
                        if !self.variables.contains_key(&var) {
                            err(
                                &format!("messages[{i}].template"),
                                format!("uses `{var}`, which is not declared under [variables]"),
                            );
                        }
                    }
                }
                Err(e) => err(&format!("messages[{i}].template"), e.to_string()),
            }
        }
        let o = &self.output;
        match o.parser {
            Parser::Json => {
                if let Some(schema) = &o.schema {
                    if let Err(e) = jsonschema::validator_for(schema) {
                        err("output.schema", format!("not a valid JSON Schema: {e}"));
                    }
                }
            }
            Parser::Regex => match &o.pattern {
                None => err(
                    "output.pattern",
                    "`parser = \"regex\"` needs a pattern".into(),
                ),
                Some(p) => match regex::Regex::new(p) {
                    Ok(r) if r.capture_names().flatten().next().is_none() => err(
                        "output.pattern",
                        "needs at least one named group, e.g. (?P<answer>…)".into(),
                    ),
                    Ok(_) => {}
                    Err(e) => err("output.pattern", e.to_string()),
                },
            },
            Parser::Text => {}
        }
        if o.parser == Parser::Text && o.schema.is_some() {
            err("output.schema", "a schema needs `parser = \"json\"`".into());
        }
        if o.on_parse_failure == OnParseFailure::Static && o.static_response.is_none() {
            err(
                "output.static_response",
                "`on_parse_failure = \"static\"` needs a static_response".into(),
            );
        }
        if let Some(t) = self.params.temperature {
            if !(0.0..=2.0).contains(&t) {
                err("params.temperature", "must be between 0 and 2".into());
            }
        }
        out
    }

    /// The content hash: SHA-256 of the spec's canonical JSON (fields in a fixed order,
    /// maps sorted), so formatting and comments do not change it; content does.
    pub fn content_hash(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let mut hex = String::with_capacity(7 + 64);
        hex.push_str("sha256:");
        for b in digest {
            hex.push_str(&format!("{b:02x}"));
        }
        hex
    }

    /// The variables a call supplies, checked against the declarations, with defaults
    /// filled in.
    pub fn bind(&self, given: &Map<String, Value>) -> Result<Map<String, Value>, RenderError> {
        if let Some(unknown) = given.keys().find(|k| !self.variables.contains_key(*k)) {
            return Err(RenderError::Unknown(unknown.clone()));
        }
        let mut out = Map::new();
        for (name, decl) in &self.variables {
            let v = match given.get(name).or(decl.default.as_ref()) {
                Some(v) => v.clone(),
                None => return Err(RenderError::Missing(name.clone())),
            };
            if !decl.kind.accepts(&v) {
                return Err(RenderError::WrongType {
                    name: name.clone(),
                    expected: decl.kind.as_str(),
                });
            }
            out.insert(name.clone(), v);
        }
        Ok(out)
    }

    /// Renders every message from the variables.
    pub fn render(&self, given: &Map<String, Value>) -> Result<Vec<(Role, String)>, RenderError> {
        let vars = self.bind(given)?;
        let env = env();
        self.messages
            .iter()
            .enumerate()
            .map(|(i, m)| {
                env.render_str(&m.template, &vars)
                    .map(|text| (m.role, text))
                    .map_err(|e| RenderError::Template {
                        index: i,
                        message: e.to_string(),
                    })
            })
            .collect()
    }

    /// The spec as TOML, for humans (diffs, `feature show`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}

/// A readable unified diff of two versions of a feature.
pub fn diff(a: &FeatureSpec, b: &FeatureSpec, a_label: &str, b_label: &str) -> String {
    let (ta, tb) = (a.to_toml(), b.to_toml());
    similar::TextDiff::from_lines(&ta, &tb)
        .unified_diff()
        .context_radius(3)
        .header(a_label, b_label)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC: &str = r#"
name = "summarize-ticket"
route = "smart"

[variables]
ticket = { type = "string" }
max_words = { type = "integer", default = 50 }

[params]
temperature = 0.2

[[messages]]
role = "system"
template = "Summarize support tickets in at most {{ max_words }} words."

[[messages]]
role = "user"
template = "{{ ticket }}"

[output]
parser = "json"
schema = { type = "object", properties = { summary = { type = "string" } }, required = ["summary"] }
on_parse_failure = "repair"
"#;

    #[test]
    fn parses_renders_and_hashes() {
        let s = FeatureSpec::parse(SPEC).unwrap();
        let vars = json!({"ticket": "My order never came."});
        let msgs = s.render(vars.as_object().unwrap()).unwrap();
        assert_eq!(msgs[0].1, "Summarize support tickets in at most 50 words.");
        assert_eq!(msgs[1], (Role::User, "My order never came.".to_string()));
        // Formatting does not change the hash; content does.
        let reformatted = SPEC.replace("temperature = 0.2", "temperature    =    0.2 # tuned");
        assert_eq!(
            FeatureSpec::parse(&reformatted).unwrap().content_hash(),
            s.content_hash()
        );
        let changed = SPEC.replace("0.2", "0.3");
        assert_ne!(
            FeatureSpec::parse(&changed).unwrap().content_hash(),
            s.content_hash()
        );
        assert!(s.content_hash().starts_with("sha256:"));
    }

    #[test]
    fn missing_and_mistyped_variables_name_themselves() {
        let s = FeatureSpec::parse(SPEC).unwrap();
        let e = s.render(&Map::new()).unwrap_err();
        assert_eq!(e.variable(), Some("ticket"));
        let e = s
            .render(
                json!({"ticket": "x", "max_words": "many"})
                    .as_object()
                    .unwrap(),
            )
            .unwrap_err();
        assert_eq!(e.variable(), Some("max_words"));
        let e = s
            .render(json!({"ticket": "x", "tone": "warm"}).as_object().unwrap())
            .unwrap_err();
        assert_eq!(e, RenderError::Unknown("tone".into()));
    }

    #[test]
    fn validation_reports_every_problem() {
        let bad = r#"
name = "Bad Name"
model = "gpt-4o"
[[messages]]
role = "user"
template = "{{ undeclared }} and {% if %}"
[output]
parser = "regex"
pattern = "no groups"
on_parse_failure = "static"
"#;
        let errs = FeatureSpec::parse(bad).unwrap_err();
        let keys: Vec<_> = errs.iter().map(|e| e.key.as_str()).collect();
        for k in [
            "name",
            "model",
            "messages[0].template",
            "output.pattern",
            "output.static_response",
        ] {
            assert!(keys.contains(&k), "{k} not in {keys:?}");
        }
        let errs = FeatureSpec::parse("name = \"x\"\nroute = \"r\"\nmesages = []\n").unwrap_err();
        assert!(errs[0].message.contains("unknown field"), "{errs:?}");
        let undeclared = "name = \"x\"\nroute = \"r\"\n[[messages]]\nrole = \"user\"\ntemplate = \"{{ who }}\"\n";
        let errs = FeatureSpec::parse(undeclared).unwrap_err();
        assert!(errs[0].message.contains("`who`"), "{errs:?}");
    }

    #[test]
    fn diff_shows_what_changed() {
        let a = FeatureSpec::parse(SPEC).unwrap();
        let b = FeatureSpec::parse(&SPEC.replace(
            "at most {{ max_words }} words",
            "{{ max_words }} words or fewer",
        ))
        .unwrap();
        let d = diff(&a, &b, "summarize-ticket v1", "summarize-ticket v2");
        assert!(d.contains("--- summarize-ticket v1"), "{d}");
        assert!(
            d.contains(
                "-template = \"Summarize support tickets in at most {{ max_words }} words.\""
            ),
            "{d}"
        );
        assert!(
            d.contains(
                "+template = \"Summarize support tickets in {{ max_words }} words or fewer.\""
            ),
            "{d}"
        );
        assert_eq!(diff(&a, &a, "a", "b"), "");
    }
}
