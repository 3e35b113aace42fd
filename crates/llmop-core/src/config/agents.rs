//! `[agents]`: what the gateway knows about an agent's tools (their capabilities, the
//! end-user scopes they need, constraints on their arguments), the session-taint
//! policies applied to each tool call a model proposes, and where an end user's scopes
//! come from (a signed token or a trusted header). The decisions themselves are
//! `llmop-guard::agent`'s; docs/agents.md explains the model.

use super::{key, Config, KeySeg, Problems};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsConfig {
    /// Tools by name, as the client declares them in its requests.
    #[serde(default)]
    pub tools: BTreeMap<String, AgentToolConfig>,
    /// Rules on proposed tool calls, by the session's taint and the tool's capabilities.
    #[serde(default)]
    pub policies: Vec<AgentPolicyConfig>,
    /// Where the end user's scopes come from.
    #[serde(default)]
    pub users: AgentUsersConfig,
    /// How a denied tool call reaches the client.
    #[serde(default)]
    pub deny_as: DenyAs,
    /// How long a held tool call waits for a decision, and an approved one for its
    /// retry (seconds).
    #[serde(default = "default_approval_ttl")]
    pub approval_ttl_s: u64,
    /// The most a stream's held tool calls (and what follows them) may add up to
    /// before the stream is cut, fail closed: a stream that proposes tool calls is
    /// held from its first call to its end, so an upstream that never stops must not
    /// make the gateway keep it all (bytes).
    #[serde(default = "default_max_held_bytes")]
    pub max_held_bytes: usize,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        AgentsConfig {
            tools: BTreeMap::new(),
            policies: Vec::new(),
            users: AgentUsersConfig::default(),
            deny_as: DenyAs::default(),
            approval_ttl_s: default_approval_ttl(),
            max_held_bytes: default_max_held_bytes(),
        }
    }
}

fn default_approval_ttl() -> u64 {
    3600
}

fn default_max_held_bytes() -> usize {
    1 << 20
}

/// What a tool can do, as far as the session's safety is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Reads content an attacker may write (web pages, incoming email, tickets).
    ReadsUntrusted,
    /// Reads the user's private data (mailbox, files, records).
    ReadsPrivate,
    /// Sends data out of the system (email, HTTP requests, posts).
    SendsExternal,
    /// Changes state (writes, deletes, payments).
    ChangesState,
}

impl Capability {
    pub const ALL: [Capability; 4] = [
        Capability::ReadsUntrusted,
        Capability::ReadsPrivate,
        Capability::SendsExternal,
        Capability::ChangesState,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::ReadsUntrusted => "reads_untrusted",
            Capability::ReadsPrivate => "reads_private",
            Capability::SendsExternal => "sends_external",
            Capability::ChangesState => "changes_state",
        }
    }

    /// One bit per capability (a session's taint is a set of them).
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentToolConfig {
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// End-user scopes the tool needs (all of them). A user without them never sees
    /// the tool, and a call to it is refused.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Constraints on the arguments of a call to it.
    #[serde(default)]
    pub args: Vec<ArgConstraintConfig>,
}

/// A constraint on one argument of a tool call. `path` is a dotted path into the
/// arguments object (`to`, `message.recipients`); an array at the path is checked
/// element by element.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArgConstraintConfig {
    pub path: String,
    /// Email addresses or URLs must be in one of these domains (or their subdomains).
    #[serde(default)]
    pub domain_in: Vec<String>,
    /// The value must be one of these.
    #[serde(default)]
    pub one_of: Vec<serde_json::Value>,
    /// A string value must match this regular expression (whole value).
    #[serde(default)]
    pub pattern: Option<String>,
    /// A string value may have at most this many characters.
    #[serde(default)]
    pub max_len: Option<usize>,
    /// Whether the argument must be present.
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentAction {
    /// The tool call is refused.
    Deny,
    /// The tool call is held until a person approves or denies it.
    RequiresApproval,
    /// Recorded as "would have denied" only.
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyAs {
    /// The tool call is replaced by a text the agent can read (the answer ends as if
    /// the model had said it); the client's format stays valid.
    #[default]
    Refusal,
    /// The call fails with 403 `tool_call_denied` (a stream ends with that error).
    Error,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentPolicyConfig {
    /// Named in records, errors and metrics.
    pub name: String,
    /// The session's taint that arms the rule: every capability listed must have been
    /// read in the session (`reads_untrusted`, `reads_private`; `changes_state` and
    /// `sends_external` count once such a tool was called). Empty: always armed.
    #[serde(default)]
    pub when_tainted: Vec<Capability>,
    /// The proposed tools the rule covers: any of these capabilities.
    #[serde(default)]
    pub tools_with: Vec<Capability>,
    /// Or these tools by name.
    #[serde(default)]
    pub tools: Vec<String>,
    pub action: AgentAction,
    /// Calls the rule applies to: through these routes, of these features, by these
    /// key ids. Empty: all.
    #[serde(default)]
    pub routes: Vec<String>,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentUsersConfig {
    /// The header carrying the end user's signed token (a JWT).
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// A header the gateway trusts to carry the end user's scopes (space or comma
    /// separated), e.g. set by the app's own backend. Off unless named; when named,
    /// only keys listed in `trusted_keys` may use it (any key when that is empty).
    #[serde(default)]
    pub scopes_header: Option<String>,
    #[serde(default)]
    pub trusted_keys: Vec<String>,
    /// The token's claim holding the scopes: a space-separated string or an array.
    #[serde(default = "default_scopes_claim")]
    pub scopes_claim: String,
    /// The `iss` a token must carry, if set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The `aud` a token must carry, if set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_s: u64,
    /// A call with tools must carry the user's scopes (token or trusted header).
    #[serde(default)]
    pub required: bool,
    /// The keys a token may be signed with.
    #[serde(default)]
    pub keys: Vec<UserKeyConfig>,
}

impl Default for AgentUsersConfig {
    fn default() -> Self {
        AgentUsersConfig {
            token_header: default_token_header(),
            scopes_header: None,
            trusted_keys: Vec::new(),
            scopes_claim: default_scopes_claim(),
            issuer: None,
            audience: None,
            leeway_s: default_leeway(),
            required: false,
            keys: Vec::new(),
        }
    }
}

fn default_token_header() -> String {
    "x-llmop-user-token".into()
}
fn default_scopes_claim() -> String {
    "scope".into()
}
fn default_leeway() -> u64 {
    30
}

/// A key end-user tokens are verified with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserKeyConfig {
    /// Matches the token header's `kid`, if set.
    #[serde(default)]
    pub kid: Option<String>,
    /// `HS256`, `HS384`, `HS512`, `RS256`, `RS384`, `RS512`, `PS256`, `PS384`, `PS512`,
    /// `ES256`, `ES384` or `EdDSA`.
    pub alg: String,
    /// For HS*: the environment variable holding the shared secret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// For the others: a PEM file with the public key (relative to the config file).
    #[serde(default)]
    pub public_key_file: Option<std::path::PathBuf>,
}

pub const USER_KEY_ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

pub(super) fn validate(c: &Config, out: &mut Problems) {
    let a = &c.agents;
    if a.max_held_bytes == 0 {
        out.push((
            key(&["agents", "max_held_bytes"]),
            "must be at least 1".into(),
        ));
    }
    for (name, t) in &a.tools {
        for (i, arg) in t.args.iter().enumerate() {
            let at = |f: &str| {
                let mut k = key(&["agents", "tools", name, "args"]);
                k.push(KeySeg::Idx(i));
                k.push(KeySeg::Key(f.into()));
                k
            };
            if arg.path.is_empty() {
                out.push((at("path"), "name the argument (a dotted path)".into()));
            }
            if let Some(p) = &arg.pattern {
                if let Err(e) = regex::Regex::new(p) {
                    out.push((
                        at("pattern"),
                        format!("not a valid regular expression: {e}"),
                    ));
                }
            }
            if arg.domain_in.iter().any(|d| d.trim().is_empty()) {
                out.push((at("domain_in"), "a domain may not be empty".into()));
            }
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in a.policies.iter().enumerate() {
        let at = |f: &str| {
            let mut k = key(&["agents", "policies"]);
            k.push(KeySeg::Idx(i));
            k.push(KeySeg::Key(f.into()));
            k
        };
        if p.name.is_empty() || !names.insert(p.name.clone()) {
            out.push((at("name"), "each policy needs its own name".into()));
        }
        if p.tools_with.is_empty() && p.tools.is_empty() {
            out.push((
                at("tools_with"),
                "name the tools the policy covers (`tools_with` capabilities or `tools`)".into(),
            ));
        }
        for t in &p.tools {
            if !a.tools.contains_key(t) {
                out.push((
                    at("tools"),
                    format!("`{t}` is not declared in [agents.tools]"),
                ));
            }
        }
    }
    let u = &a.users;
    for (i, k) in u.keys.iter().enumerate() {
        let at = |f: &str| {
            let mut kk = key(&["agents", "users", "keys"]);
            kk.push(KeySeg::Idx(i));
            kk.push(KeySeg::Key(f.into()));
            kk
        };
        if !USER_KEY_ALGS.contains(&k.alg.as_str()) {
            out.push((
                at("alg"),
                format!("must be one of {}", USER_KEY_ALGS.join(", ")),
            ));
            continue;
        }
        if k.alg.starts_with("HS") {
            if k.secret_env.is_none() {
                out.push((at("secret_env"), "an HS* key needs `secret_env`".into()));
            }
        } else if k.public_key_file.is_none() {
            out.push((
                at("public_key_file"),
                "this algorithm needs `public_key_file` (PEM)".into(),
            ));
        }
    }
    if u.token_header.is_empty()
        || http_header_invalid(&u.token_header)
        || u.scopes_header.as_deref().is_some_and(http_header_invalid)
    {
        out.push((
            key(&["agents", "users"]),
            "header names must be lower-case ASCII letters, digits and `-`".into(),
        ));
    }
    if a.approval_ttl_s == 0 {
        out.push((
            key(&["agents", "approval_ttl_s"]),
            "must be at least 1".into(),
        ));
    }
}

fn http_header_invalid(h: &str) -> bool {
    h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_without_agents_is_valid() {
        let c = AgentsConfig::default();
        assert_eq!(c.approval_ttl_s, 3600);
    }

    #[test]
    fn capabilities_have_distinct_bits() {
        let mut seen = 0u32;
        for c in Capability::ALL {
            assert_eq!(seen & c.bit(), 0);
            seen |= c.bit();
        }
    }
}
