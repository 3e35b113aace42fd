//! `[providers.<name>]`: the upstreams and how to reach them.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    Anthropic,
    Gemini,
    Mock,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Mock => "mock",
        }
    }

    pub fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("https://api.openai.com/v1"),
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
            ProviderKind::Mock => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiApi {
    #[default]
    Chat,
    Responses,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    /// Which OpenAI API an `openai`-kind provider speaks: `chat` (Chat Completions, the
    /// default, and what compatible servers offer) or `responses` (the Responses API,
    /// for models offered only there).
    #[serde(default)]
    pub api: OpenAiApi,
    pub base_url: Option<String>,
    /// Name of the environment variable that holds the API key.
    pub api_key_env: Option<String>,
    /// Path of a file that holds the API key (e.g. a mounted secret).
    pub api_key_file: Option<PathBuf>,
    /// A PEM file of extra root certificates to trust for this provider (a private CA
    /// in front of an internal model server). The system's public roots stay trusted.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Largest upstream answer body read (whole answers, error bodies); past it the
    /// call fails with `upstream_protocol_error` (502) instead of filling memory.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
    /// Largest single server-sent event from the upstream (bytes buffered without an
    /// event's end); past it the stream fails with `upstream_protocol_error`. A stream
    /// may be long; one event may not.
    #[serde(default = "default_max_event_bytes")]
    pub max_event_bytes: usize,
    /// Models listed by `GET /v1/models` as `<provider>/<model>`.
    #[serde(default)]
    pub models: Vec<String>,
    /// Embedding models listed by `GET /v1/models` (capability `embeddings`).
    #[serde(default)]
    pub embedding_models: Vec<String>,
    // Knobs of the built-in `mock` provider.
    pub latency_ms: Option<u64>,
    pub tokens_per_second: Option<f64>,
    pub error_rate: Option<f64>,
    pub error_status: Option<u16>,
    pub timeout_rate: Option<f64>,
    pub reply: Option<String>,
    pub seed: Option<u64>,
    /// Rule-based replies of the mock provider, tried in order before `reply`: the
    /// first rule whose `when` regex matches the conversation's text answers with its
    /// `reply` (`$1`, `${name}` expand to its groups). Stages judges, regressions and
    /// flipped items deterministically, in tests and in the tour.
    #[serde(default)]
    pub rules: Vec<MockRule>,
}

/// One rule of the mock provider: `when` (a regex over the conversation's text, every
/// message's text joined by newlines, roles as `[system]`, `[user]`, `[assistant]`
/// lines) → `reply`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockRule {
    pub when: String,
    pub reply: String,
}

impl ProviderConfig {
    pub fn base_url(&self) -> Option<&str> {
        self.base_url
            .as_deref()
            .or_else(|| self.kind.default_base_url())
    }

    /// Reads the API key from the environment or the key file. Never from the config
    /// text itself.
    pub fn api_key(&self) -> Result<Option<Secret>, String> {
        if let Some(var) = &self.api_key_env {
            return match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                _ => Err(format!("environment variable `{var}` is not set")),
            };
        }
        if let Some(path) = &self.api_key_file {
            return std::fs::read_to_string(path)
                .map(|v| Some(Secret::new(v.trim())))
                .map_err(|e| format!("cannot read key file `{}`: {e}", path.display()));
        }
        Ok(None)
    }
}

/// Every provider: names, URLs, keys, mock knobs.
pub(super) fn validate(c: &Config, out: &mut Problems) {
    let k = key;
    for (name, p) in &c.providers {
        let at = |field: &str| k(&["providers", name, field]);
        if name.is_empty() || name.contains('/') {
            out.push((
                k(&["providers", name]),
                "provider names must be non-empty and contain no `/`".into(),
            ));
        }
        if let Some(u) = &p.base_url {
            match url::Url::parse(u) {
                Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                _ => out.push((at("base_url"), format!("`{u}` is not an http(s) URL"))),
            }
        }
        if p.api == OpenAiApi::Responses && p.kind != ProviderKind::Openai {
            out.push((
                at("api"),
                "api = \"responses\" applies to kind = \"openai\" only".into(),
            ));
        }
        if p.api_key_env.is_some() && p.api_key_file.is_some() {
            out.push((
                at("api_key_file"),
                "set either api_key_env or api_key_file, not both".into(),
            ));
        }
        let mock_knobs = [
            ("latency_ms", p.latency_ms.is_some()),
            ("tokens_per_second", p.tokens_per_second.is_some()),
            ("error_rate", p.error_rate.is_some()),
            ("error_status", p.error_status.is_some()),
            ("timeout_rate", p.timeout_rate.is_some()),
            ("reply", p.reply.is_some()),
            ("seed", p.seed.is_some()),
            ("rules", !p.rules.is_empty()),
        ];
        if p.kind == ProviderKind::Mock {
            for (field, set) in [
                ("base_url", p.base_url.is_some()),
                ("ca_file", p.ca_file.is_some()),
                ("api_key_env", p.api_key_env.is_some()),
                ("api_key_file", p.api_key_file.is_some()),
            ] {
                if set {
                    out.push((
                        at(field),
                        "the mock provider takes no `{field}`".replace("{field}", field),
                    ));
                }
            }
        } else {
            for (field, set) in mock_knobs {
                if set {
                    out.push((
                        at(field),
                        format!("`{field}` applies only to providers of kind = \"mock\""),
                    ));
                }
            }
        }
        for (field, v) in [
            ("error_rate", p.error_rate),
            ("timeout_rate", p.timeout_rate),
        ] {
            if let Some(v) = v {
                if !(0.0..=1.0).contains(&v) {
                    out.push((at(field), format!("{v} is not a rate between 0 and 1")));
                }
            }
        }
        for (i, r) in p.rules.iter().enumerate() {
            if let Err(e) = regex::Regex::new(&r.when) {
                out.push((
                    vec![
                        KeySeg::Key("providers".into()),
                        KeySeg::Key(name.clone()),
                        KeySeg::Key("rules".into()),
                        KeySeg::Idx(i),
                        KeySeg::Key("when".into()),
                    ],
                    format!("not a valid regex: {e}"),
                ));
            }
        }
        if let Some(s) = p.error_status {
            if !(400..=599).contains(&s) {
                out.push((
                    at("error_status"),
                    format!("{s} is not an HTTP error status (400-599)"),
                ));
            }
        }
        if let Some(t) = p.tokens_per_second {
            if t.is_nan() || t <= 0.0 {
                out.push((at("tokens_per_second"), "must be greater than 0".into()));
            }
        }
    }
}
