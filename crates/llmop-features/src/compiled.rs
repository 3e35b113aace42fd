//! A feature version ready to serve: templates compiled once, the output schema and
//! pattern compiled once, so that a call only binds, renders and parses.

use crate::{FeatureSpec, OnParseFailure, Parser, RenderError, Role, SpecError, VarType};
use serde_json::{Map, Value};

/// One registered version of a feature, compiled.
pub struct CompiledFeature {
    pub spec: FeatureSpec,
    pub version: i64,
    pub content_hash: String,
    env: minijinja::Environment<'static>,
    validator: Option<jsonschema::Validator>,
    pattern: Option<regex::Regex>,
}

impl std::fmt::Debug for CompiledFeature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFeature")
            .field("name", &self.spec.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What the templates rendered to, with the variables they were rendered from.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub variables: Map<String, Value>,
    pub messages: Vec<(Role, String)>,
}

impl Rendered {
    /// The rendered messages as one readable text (`[system]\n…\n\n[user]\n…`).
    pub fn prompt_text(&self) -> String {
        let mut out = String::new();
        for (i, (role, text)) in self.messages.iter().enumerate() {
            if i > 0 {
                out.push_str("\n\n");
            }
            out.push_str(match role {
                Role::System => "[system]\n",
                Role::User => "[user]\n",
                Role::Assistant => "[assistant]\n",
            });
            out.push_str(text);
        }
        out
    }
}

/// Why an output did not parse; shown to the model by the `repair` policy.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Most schema violations listed in one parse error.
const MAX_VIOLATIONS: usize = 5;

impl CompiledFeature {
    /// Compiles a spec that was validated when it was pushed. The store holds specs as
    /// JSON, so this is also where a spec read back from the store is checked again.
    pub fn new(
        spec: FeatureSpec,
        version: i64,
        content_hash: String,
    ) -> Result<CompiledFeature, Vec<SpecError>> {
        let errors = spec.validate();
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut env = crate::env();
        for (i, m) in spec.messages.iter().enumerate() {
            env.add_template_owned(i.to_string(), m.template.clone())
                .map_err(|e| {
                    vec![SpecError {
                        key: format!("messages[{i}].template"),
                        message: e.to_string(),
                    }]
                })?;
        }
        let validator = match (&spec.output.parser, &spec.output.schema) {
            (Parser::Json, Some(schema)) => {
                Some(jsonschema::validator_for(schema).map_err(|e| {
                    vec![SpecError {
                        key: "output.schema".into(),
                        message: e.to_string(),
                    }]
                })?)
            }
            _ => None,
        };
        let pattern = match (&spec.output.parser, &spec.output.pattern) {
            (Parser::Regex, Some(p)) => Some(regex::Regex::new(p).map_err(|e| {
                vec![SpecError {
                    key: "output.pattern".into(),
                    message: e.to_string(),
                }]
            })?),
            _ => None,
        };
        Ok(CompiledFeature {
            spec,
            version,
            content_hash,
            env,
            validator,
            pattern,
        })
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Binds the variables (declared ones only, defaults filled, types checked) and
    /// renders every message.
    pub fn render(&self, given: &Map<String, Value>) -> Result<Rendered, RenderError> {
        let variables = self.spec.bind(given)?;
        let mut messages = Vec::with_capacity(self.spec.messages.len());
        for (i, m) in self.spec.messages.iter().enumerate() {
            let template =
                self.env
                    .get_template(&i.to_string())
                    .map_err(|e| RenderError::Template {
                        index: i,
                        message: e.to_string(),
                    })?;
            let text = template
                .render(&variables)
                .map_err(|e| RenderError::Template {
                    index: i,
                    message: e.to_string(),
                })?;
            messages.push((m.role, text));
        }
        Ok(Rendered {
            variables,
            messages,
        })
    }

    /// Variables of a call made through the chat endpoints: declared keys of `metadata`
    /// (strings converted to the declared type where they parse as one, since OpenAI
    /// metadata values are strings), then the last user message: a JSON object supplies
    /// the declared keys it has, other text fills the one required variable still
    /// missing. Undeclared metadata keys are ignored: metadata carries other things too.
    pub fn variables_from_call(
        &self,
        metadata: &Map<String, Value>,
        last_user: Option<&str>,
    ) -> Map<String, Value> {
        let mut vars = Map::new();
        for (name, decl) in &self.spec.variables {
            if let Some(v) = metadata.get(name) {
                vars.insert(name.clone(), coerce(decl.kind, v));
            }
        }
        let Some(text) = last_user else { return vars };
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text.trim()) {
            if obj.keys().all(|k| self.spec.variables.contains_key(k)) {
                for (k, v) in obj {
                    vars.entry(k).or_insert(v);
                }
                return vars;
            }
        }
        let mut missing = self
            .spec
            .variables
            .iter()
            .filter(|(n, d)| d.default.is_none() && !vars.contains_key(*n))
            .map(|(n, _)| n);
        if let (Some(only), None) = (missing.next(), missing.next()) {
            let kind = self.spec.variables[only].kind;
            vars.insert(only.clone(), coerce(kind, &Value::String(text.to_string())));
        }
        vars
    }

    /// Whether outputs of this version are parsed into something other than text.
    pub fn parses(&self) -> bool {
        self.spec.output.parser != Parser::Text
    }

    pub fn on_parse_failure(&self) -> OnParseFailure {
        self.spec.output.on_parse_failure
    }

    /// Parses a model's output as the version says: text as is; JSON (a surrounding
    /// Markdown code fence is tolerated) checked against the schema; a regex's named
    /// groups as an object.
    pub fn parse_output(&self, text: &str) -> Result<Value, ParseError> {
        match self.spec.output.parser {
            Parser::Text => Ok(Value::String(text.to_string())),
            Parser::Json => {
                let body = strip_fence(text);
                let v: Value = serde_json::from_str(body)
                    .map_err(|e| ParseError(format!("the output is not JSON: {e}")))?;
                if let Some(validator) = &self.validator {
                    let problems: Vec<String> = validator
                        .iter_errors(&v)
                        .take(MAX_VIOLATIONS)
                        .map(|e| {
                            let at = e.instance_path().to_string();
                            if at.is_empty() {
                                e.to_string()
                            } else {
                                format!("at {at}: {e}")
                            }
                        })
                        .collect();
                    if !problems.is_empty() {
                        return Err(ParseError(format!(
                            "the output does not match the schema: {}",
                            problems.join("; ")
                        )));
                    }
                }
                Ok(v)
            }
            Parser::Regex => {
                let Some(re) = &self.pattern else {
                    return Err(ParseError("no pattern".into()));
                };
                let caps = re.captures(text).ok_or_else(|| {
                    ParseError(format!(
                        "the output does not match the pattern `{}`",
                        re.as_str()
                    ))
                })?;
                let mut out = Map::new();
                for name in re.capture_names().flatten() {
                    out.insert(
                        name.to_string(),
                        caps.name(name)
                            .map_or(Value::Null, |m| Value::String(m.as_str().to_string())),
                    );
                }
                Ok(Value::Object(out))
            }
        }
    }

    /// The message that asks the model to correct an output that did not parse: the
    /// problem and, for JSON, the schema.
    pub fn repair_message(&self, problem: &ParseError) -> String {
        let mut m = format!(
            "Your previous answer could not be used: {problem}. Answer again with only the corrected output"
        );
        match (
            self.spec.output.parser,
            &self.spec.output.schema,
            &self.spec.output.pattern,
        ) {
            (Parser::Json, Some(schema), _) => {
                m.push_str(", as JSON that matches this JSON Schema:\n");
                m.push_str(&serde_json::to_string_pretty(schema).unwrap_or_default());
            }
            (Parser::Json, None, _) => m.push_str(", as valid JSON."),
            (Parser::Regex, _, Some(p)) => m.push_str(&format!(
                ", in a form that matches the regular expression `{p}`."
            )),
            _ => m.push('.'),
        }
        m
    }

    /// The static answer of `on_parse_failure = "static"`, as output text and parsed
    /// value.
    pub fn static_response(&self) -> Option<(String, Value)> {
        let v = self.spec.output.static_response.clone()?;
        let text = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        Some((text, v))
    }
}

/// A string from metadata as the declared type, when it parses as one.
fn coerce(kind: VarType, v: &Value) -> Value {
    match (kind, v) {
        (VarType::String, _) | (_, Value::Null) => v.clone(),
        (_, Value::String(s)) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(parsed) if kind.accepts(&parsed) => parsed,
            _ => v.clone(),
        },
        _ => v.clone(),
    }
}

/// The body of a Markdown code fence around the whole text (```json … ```), or the
/// text itself.
fn strip_fence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let Some(body) = rest.strip_suffix("```") else {
        return t;
    };
    // Skip the info string (`json`) on the opening line.
    match body.find('\n') {
        Some(nl) => body[nl + 1..].trim(),
        None => body.trim(),
    }
}

/// Picks a split arm: index into `weights` (percentages summing to 100). With a
/// stickiness key (the user, else the session) the same key always lands in the same
/// bucket of 100 for this feature and environment, so a user sees one version, and
/// widening an arm (90/10 → 50/50) moves only the users of the buckets that changed
/// hands. Without one, `random` decides.
pub fn pick_arm(weights: &[u32], salt: &str, key: Option<&str>, random: u64) -> usize {
    if weights.len() <= 1 {
        return 0;
    }
    let bucket = match key {
        Some(k) => {
            use sha2::{Digest, Sha256};
            let mut h = Sha256::new();
            h.update(salt.as_bytes());
            h.update([0]);
            h.update(k.as_bytes());
            let d = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&d[..8]);
            u64::from_be_bytes(first) % 100
        }
        None => random % 100,
    } as u32;
    let mut acc = 0;
    for (i, w) in weights.iter().enumerate() {
        acc += w;
        if bucket < acc {
            return i;
        }
    }
    weights.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn compiled(extra: &str) -> CompiledFeature {
        let text = format!(
            r#"
name = "f"
model = "sim/echo"
[variables]
ticket = {{ type = "string" }}
n = {{ type = "integer", default = 3 }}
[[messages]]
role = "user"
template = "{{{{ ticket }}}} in {{{{ n }}}}"
{extra}
"#
        );
        let spec = FeatureSpec::parse(&text).unwrap();
        CompiledFeature::new(spec, 1, "h".into()).unwrap()
    }

    #[test]
    fn renders_from_compiled_templates() {
        let f = compiled("");
        let r = f
            .render(json!({"ticket": "t"}).as_object().unwrap())
            .unwrap();
        assert_eq!(r.messages, vec![(Role::User, "t in 3".to_string())]);
        assert_eq!(r.variables["n"], json!(3));
        assert_eq!(r.prompt_text(), "[user]\nt in 3");
        assert_eq!(
            f.render(&Map::new()).unwrap_err().variable(),
            Some("ticket")
        );
    }

    #[test]
    fn variables_come_from_metadata_then_the_last_user_message() {
        let f = compiled("");
        let md = json!({"n": "7", "other": "ignored"});
        let v = f.variables_from_call(md.as_object().unwrap(), Some("hello"));
        assert_eq!(v, *json!({"n": 7, "ticket": "hello"}).as_object().unwrap());
        let v = f.variables_from_call(&Map::new(), Some(r#"{"ticket": "x", "n": 2}"#));
        assert_eq!(v, *json!({"n": 2, "ticket": "x"}).as_object().unwrap());
        // Metadata wins over the message.
        let md = json!({"ticket": "from metadata"});
        let v = f.variables_from_call(md.as_object().unwrap(), Some("from message"));
        assert_eq!(v["ticket"], json!("from metadata"));
        // A non-numeric string for an integer stays a string: binding names it.
        let md = json!({"n": "many", "ticket": "t"});
        let v = f.variables_from_call(md.as_object().unwrap(), None);
        assert!(f.render(&v).unwrap_err().to_string().contains("`n`"));
    }

    #[test]
    fn json_outputs_are_checked_against_the_schema() {
        let f = compiled(
            r#"[output]
parser = "json"
schema = { type = "object", properties = { summary = { type = "string" } }, required = ["summary"] }"#,
        );
        assert_eq!(
            f.parse_output(r#"{"summary": "ok"}"#).unwrap(),
            json!({"summary": "ok"})
        );
        assert_eq!(
            f.parse_output("```json\n{\"summary\": \"fenced\"}\n```")
                .unwrap(),
            json!({"summary": "fenced"})
        );
        let e = f.parse_output("Sure! Here it is").unwrap_err();
        assert!(e.0.contains("not JSON"), "{e}");
        let e = f.parse_output(r#"{"summary": 3}"#).unwrap_err();
        assert!(e.0.contains("schema") && e.0.contains("/summary"), "{e}");
        let repair = f.repair_message(&e);
        assert!(repair.contains("\"required\""), "{repair}");
    }

    #[test]
    fn regex_outputs_become_named_groups() {
        let f = compiled(
            r#"[output]
parser = "regex"
pattern = 'Sentiment: (?P<label>\w+)(?: \((?P<score>[0-9.]+)\))?'"#,
        );
        assert_eq!(
            f.parse_output("Sentiment: positive (0.9)").unwrap(),
            json!({"label": "positive", "score": "0.9"})
        );
        assert_eq!(
            f.parse_output("Sentiment: meh").unwrap(),
            json!({"label": "meh", "score": null})
        );
        assert!(f.parse_output("no idea").is_err());
    }

    #[test]
    fn arms_are_sticky_and_proportional() {
        let w = [90, 10];
        assert_eq!(
            pick_arm(&w, "f\0prod", Some("user-1"), 0),
            pick_arm(&w, "f\0prod", Some("user-1"), 99)
        );
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            counts[pick_arm(&w, "f\0prod", Some(&format!("user-{i}")), 0)] += 1;
        }
        assert!((8_700..=9_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(pick_arm(&[100], "x", None, 5), 0);
    }

    proptest! {
        /// Widening an arm never moves a user away from it.
        #[test]
        fn widening_an_arm_keeps_its_users(key in "[a-z0-9]{1,12}", small in 1u32..99, extra in 0u32..50) {
            let big = (small + extra).min(99);
            let before = pick_arm(&[100 - small, small], "s", Some(&key), 0);
            let after = pick_arm(&[100 - big, big], "s", Some(&key), 0);
            prop_assert!(before == 0 || after == 1);
        }

        #[test]
        fn always_a_valid_arm(ws in proptest::collection::vec(1u32..50, 1..6), r in any::<u64>(), key in proptest::option::of("[ -~]{0,20}")) {
            let i = pick_arm(&ws, "s", key.as_deref(), r);
            prop_assert!(i < ws.len());
        }
    }
}
