//! Agent safety decisions, pure: which tools an end user may see, and what happens to
//! each tool call a model proposes, given the session's taint, the user's scopes and
//! the tool's declared capabilities and argument constraints (`[agents]`).
//!
//! The gateway keeps the taint (per session, monotonic, from its own view of the tool
//! calls it relayed) and the approvals; this module only decides, so every rule is a
//! unit test.

mod users;

pub use users::{UserError, UserKeys, UserScopes};

use llmop_core::config::{AgentAction, AgentsConfig, ArgConstraintConfig, Capability, DenyAs};
use llmop_core::{ChatRequest, Part, ToolCall};
use serde::Serialize;
use std::collections::HashMap;

/// A set of capabilities, as bits (`Capability::bit`): a session's taint, a tool's
/// capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(into = "Vec<&'static str>")]
pub struct Caps(pub u32);

impl Caps {
    pub fn has(self, c: Capability) -> bool {
        self.0 & c.bit() != 0
    }
    pub fn contains_all(self, other: Caps) -> bool {
        self.0 & other.0 == other.0
    }
    pub fn names(self) -> Vec<&'static str> {
        Capability::ALL
            .iter()
            .filter(|c| self.has(**c))
            .map(|c| c.as_str())
            .collect()
    }
    fn of(list: &[Capability]) -> Caps {
        Caps(list.iter().fold(0, |acc, c| acc | c.bit()))
    }
}

impl From<Caps> for Vec<&'static str> {
    fn from(c: Caps) -> Self {
        c.names()
    }
}

struct Tool {
    caps: Caps,
    scopes: Vec<String>,
    args: Vec<ArgRule>,
}

struct ArgRule {
    path: Vec<String>,
    shown: String,
    domain_in: Vec<String>,
    one_of: Vec<serde_json::Value>,
    pattern: Option<regex::Regex>,
    max_len: Option<usize>,
    required: bool,
}

struct Rule {
    name: String,
    when: Caps,
    tools_with: Caps,
    tools: Vec<String>,
    action: AgentAction,
    routes: Vec<String>,
    features: Vec<String>,
    keys: Vec<String>,
}

/// Which call a decision is for (the rules' applicability).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scope<'a> {
    pub route: Option<&'a str>,
    pub feature: Option<&'a str>,
    pub key: Option<&'a str>,
}

/// The compiled `[agents]` section.
pub struct AgentPolicy {
    tools: HashMap<String, Tool>,
    rules: Vec<Rule>,
    pub deny_as: DenyAs,
    pub users: UserKeys,
}

/// What happens to one proposed tool call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    RequiresApproval,
    /// A `shadow` rule would have denied it; it went through.
    WouldDeny,
    /// Held earlier, approved by a person, served on the client's retry.
    Approved,
}

/// One decision, as recorded: never the arguments' values.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    pub tool: String,
    pub call_id: String,
    pub outcome: Outcome,
    /// The rule that decided (`user_scopes`, `args`, a policy's name); none for a
    /// plain allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub reason: String,
    /// The session's taint the decision saw.
    pub taint: Caps,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_id: Option<String>,
}

/// A tool taken out of a request before the model saw it.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub tool: String,
    pub reason: String,
}

impl AgentPolicy {
    /// Compiles the section. Errors name the key to fix (`llmop check` shows them).
    pub fn new(cfg: &AgentsConfig, dir: &std::path::Path) -> Result<AgentPolicy, String> {
        let mut tools = HashMap::new();
        for (name, t) in &cfg.tools {
            let args = t
                .args
                .iter()
                .map(|a| arg_rule(name, a))
                .collect::<Result<Vec<_>, _>>()?;
            tools.insert(
                name.clone(),
                Tool {
                    caps: Caps::of(&t.capabilities),
                    scopes: t.scopes.clone(),
                    args,
                },
            );
        }
        let rules = cfg
            .policies
            .iter()
            .map(|p| Rule {
                name: p.name.clone(),
                when: Caps::of(&p.when_tainted),
                tools_with: Caps::of(&p.tools_with),
                tools: p.tools.clone(),
                action: p.action,
                routes: p.routes.clone(),
                features: p.features.clone(),
                keys: p.keys.clone(),
            })
            .collect();
        Ok(AgentPolicy {
            tools,
            rules,
            deny_as: cfg.deny_as,
            users: UserKeys::new(&cfg.users, dir)?,
        })
    }

    /// Whether the policy has anything to say about a request: it carries tools or
    /// tool calls, and some tool is declared.
    pub fn governs(&self, req: &ChatRequest) -> bool {
        !self.tools.is_empty()
            && (!req.tools.is_empty()
                || req
                    .messages
                    .iter()
                    .any(|m| m.parts.iter().any(|p| matches!(p, Part::ToolCall(_)))))
    }

    /// Whether any declared tool needs an end-user scope.
    pub fn needs_scopes(&self) -> bool {
        self.tools.values().any(|t| !t.scopes.is_empty())
    }

    /// A tool's declared capabilities (none for an undeclared tool).
    pub fn caps_of(&self, tool: &str) -> Caps {
        self.tools.get(tool).map_or(Caps::default(), |t| t.caps)
    }

    /// The taint a request's own history shows: the capabilities of every tool called
    /// in it. The session's stored taint is joined to it (the client may have cut its
    /// history; the gateway's own account of the session does not forget).
    pub fn history_taint(&self, req: &ChatRequest) -> Caps {
        let mut caps = 0;
        for m in &req.messages {
            for p in &m.parts {
                if let Part::ToolCall(c) = p {
                    caps |= self.caps_of(&c.name).0;
                }
            }
        }
        Caps(caps)
    }

    /// Whether more taint than `known` could change a decision in this scope: some rule
    /// applies here whose condition `known` does not meet yet. Taint only grows and a
    /// rule's condition is "the session has all of these", so when every applicable
    /// rule is met already (or none applies), what another replica added cannot matter.
    pub fn more_taint_matters(&self, known: Caps, scope: Scope<'_>) -> bool {
        self.rules
            .iter()
            .any(|r| applies(r, scope) && !known.contains_all(r.when))
    }

    /// Takes out of the request the tools the user lacks a scope for; the model never
    /// sees them.
    pub fn filter_tools(&self, req: &mut ChatRequest, user: &UserScopes) -> Vec<Removed> {
        let mut removed = Vec::new();
        req.tools
            .retain(|t| match self.missing_scope(&t.name, user) {
                Some(s) => {
                    removed.push(Removed {
                        tool: t.name.clone(),
                        reason: format!("the end user lacks the scope `{s}`"),
                    });
                    false
                }
                None => true,
            });
        if !removed.is_empty() {
            if let Some(llmop_core::ToolChoice::Named(n)) = &req.tool_choice {
                if removed.iter().any(|r| &r.tool == n) {
                    req.tool_choice = Some(llmop_core::ToolChoice::Auto);
                }
            }
            if req.tools.is_empty() {
                req.tool_choice = None;
            }
        }
        removed
    }

    fn missing_scope<'a>(&'a self, tool: &str, user: &UserScopes) -> Option<&'a str> {
        let t = self.tools.get(tool)?;
        t.scopes.iter().find(|s| !user.has(s)).map(String::as_str)
    }

    /// Decides one proposed call. `taint` is the session's taint before it; an allowed
    /// call's capabilities are the caller's to add (`caps_of`).
    pub fn decide(
        &self,
        call: &ToolCall,
        taint: Caps,
        user: &UserScopes,
        scope: Scope<'_>,
    ) -> Decision {
        let decision = |outcome, rule: Option<&str>, reason: String| Decision {
            tool: call.name.clone(),
            call_id: call.id.clone(),
            outcome,
            rule: rule.map(str::to_string),
            reason,
            taint,
            approval_id: None,
        };
        if let Some(s) = self.missing_scope(&call.name, user) {
            return decision(
                Outcome::Deny,
                Some("user_scopes"),
                format!(
                    "the end user lacks the scope `{s}` that `{}` needs",
                    call.name
                ),
            );
        }
        if let Some(t) = self.tools.get(&call.name) {
            if !t.args.is_empty() {
                if let Err(why) = check_args(&t.args, &call.arguments) {
                    return decision(Outcome::Deny, Some("args"), why);
                }
            }
        }
        let caps = self.caps_of(&call.name);
        let mut shadowed: Option<Decision> = None;
        for r in &self.rules {
            let covers = caps.0 & r.tools_with.0 != 0 || r.tools.iter().any(|t| t == &call.name);
            if !covers || !taint.contains_all(r.when) || !applies(r, scope) {
                continue;
            }
            let reason = if r.when.0 == 0 {
                format!("every call to `{}` is covered", call.name)
            } else {
                format!(
                    "the session has {} and `{}` {}",
                    describe(r.when),
                    call.name,
                    describe_tool(caps)
                )
            };
            match r.action {
                AgentAction::Deny => return decision(Outcome::Deny, Some(&r.name), reason),
                AgentAction::RequiresApproval => {
                    return decision(Outcome::RequiresApproval, Some(&r.name), reason)
                }
                AgentAction::Shadow => {
                    if shadowed.is_none() {
                        shadowed = Some(decision(Outcome::WouldDeny, Some(&r.name), reason));
                    }
                }
            }
        }
        shadowed.unwrap_or_else(|| decision(Outcome::Allow, None, "no rule applies".into()))
    }

    /// The text an agent reads in place of a denied call.
    pub fn refusal(d: &Decision) -> String {
        format!(
            "[llmop] The call to `{}` was not made: {} (policy `{}`). Do not retry it; tell the user what you could not do.",
            d.tool,
            d.reason,
            d.rule.as_deref().unwrap_or("agents")
        )
    }
}

fn applies(r: &Rule, s: Scope<'_>) -> bool {
    fn one(list: &[String], v: Option<&str>) -> bool {
        list.is_empty() || v.is_some_and(|v| list.iter().any(|x| x == v))
    }
    one(&r.routes, s.route) && one(&r.features, s.feature) && one(&r.keys, s.key)
}

fn describe(c: Caps) -> String {
    let words: Vec<&str> = Capability::ALL
        .iter()
        .filter(|x| c.has(**x))
        .map(|x| match x {
            Capability::ReadsUntrusted => "read untrusted content",
            Capability::ReadsPrivate => "read private data",
            Capability::SendsExternal => "sent data out",
            Capability::ChangesState => "changed state",
        })
        .collect();
    words.join(" and ")
}

fn describe_tool(c: Caps) -> String {
    let words: Vec<&str> = Capability::ALL
        .iter()
        .filter(|x| c.has(**x))
        .map(|x| match x {
            Capability::ReadsUntrusted => "reads untrusted content",
            Capability::ReadsPrivate => "reads private data",
            Capability::SendsExternal => "sends data out",
            Capability::ChangesState => "changes state",
        })
        .collect();
    if words.is_empty() {
        "is named by the policy".into()
    } else {
        words.join(" and ")
    }
}

fn arg_rule(tool: &str, a: &ArgConstraintConfig) -> Result<ArgRule, String> {
    let pattern = match &a.pattern {
        Some(p) => Some(
            regex::Regex::new(&format!("^(?:{p})$"))
                .map_err(|e| format!("agents.tools.{tool}.args: pattern: {e}"))?,
        ),
        None => None,
    };
    Ok(ArgRule {
        path: a.path.split('.').map(str::to_string).collect(),
        shown: a.path.clone(),
        domain_in: a
            .domain_in
            .iter()
            .map(|d| d.trim().trim_start_matches('.').to_ascii_lowercase())
            .collect(),
        one_of: a.one_of.clone(),
        pattern,
        max_len: a.max_len,
        required: a.required,
    })
}

/// Checks a call's arguments against its tool's constraints. The reason names the
/// argument and the rule, never the value (it may be what an attacker exfiltrates).
fn check_args(rules: &[ArgRule], arguments: &str) -> Result<(), String> {
    let args: serde_json::Value = if arguments.trim().is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_str(arguments)
            .map_err(|_| "the call's arguments are not valid JSON".to_string())?
    };
    for r in rules {
        let mut at = Some(&args);
        for seg in &r.path {
            at = at.and_then(|v| v.get(seg));
        }
        let Some(v) = at.filter(|v| !v.is_null()) else {
            if r.required {
                return Err(format!("argument `{}` is required", r.shown));
            }
            continue;
        };
        let values: Vec<&serde_json::Value> = match v {
            serde_json::Value::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        for v in values {
            check_value(r, v)?;
        }
    }
    Ok(())
}

fn check_value(r: &ArgRule, v: &serde_json::Value) -> Result<(), String> {
    if !r.one_of.is_empty() && !r.one_of.contains(v) {
        return Err(format!(
            "argument `{}` is not one of the allowed values",
            r.shown
        ));
    }
    let s = v.as_str();
    if let Some(max) = r.max_len {
        if s.is_some_and(|s| s.chars().count() > max) {
            return Err(format!(
                "argument `{}` is longer than {max} characters",
                r.shown
            ));
        }
    }
    if let Some(p) = &r.pattern {
        if !s.is_some_and(|s| p.is_match(s)) {
            return Err(format!("argument `{}` does not match its pattern", r.shown));
        }
    }
    if !r.domain_in.is_empty() {
        let ok = s
            .and_then(domain_of)
            .is_some_and(|d| r.domain_in.iter().any(|allowed| in_domain(&d, allowed)));
        if !ok {
            return Err(format!(
                "argument `{}` is outside the allowed domains ({})",
                r.shown,
                r.domain_in.join(", ")
            ));
        }
    }
    Ok(())
}

/// The domain of an email address (`Name <a@b.example>` too) or a URL, or the value
/// itself if it looks like a bare domain.
fn domain_of(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if let Some((_, rest)) = s.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next()?;
        let host = authority.rsplit('@').next()?;
        // Strip a port, but not from an IPv6 literal.
        if host.starts_with('[') {
            host.split(']').next()?.trim_start_matches('[')
        } else {
            host.split(':').next()?
        }
        .to_string()
    } else if let Some(at) = s.rfind('@') {
        s[at + 1..].trim_end_matches('>').trim().to_string()
    } else {
        s.to_string()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':');
    ok.then_some(host)
}

fn in_domain(host: &str, allowed: &str) -> bool {
    host == allowed
        || (host.len() > allowed.len()
            && host.ends_with(allowed)
            && host.as_bytes()[host.len() - allowed.len() - 1] == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;
    use llmop_core::config::{AgentPolicyConfig, AgentToolConfig};

    fn policy(action: AgentAction) -> AgentPolicy {
        let mut cfg = AgentsConfig::default();
        cfg.tools.insert(
            "fetch_url".into(),
            AgentToolConfig {
                capabilities: vec![Capability::ReadsUntrusted],
                ..Default::default()
            },
        );
        cfg.tools.insert(
            "read_inbox".into(),
            AgentToolConfig {
                capabilities: vec![Capability::ReadsPrivate],
                ..Default::default()
            },
        );
        cfg.tools.insert(
            "send_email".into(),
            AgentToolConfig {
                capabilities: vec![Capability::SendsExternal],
                scopes: vec!["email:send".into()],
                args: vec![ArgConstraintConfig {
                    path: "to".into(),
                    domain_in: vec!["example.com".into()],
                    ..Default::default()
                }],
            },
        );
        cfg.policies.push(AgentPolicyConfig {
            name: "rule_of_two".into(),
            when_tainted: vec![Capability::ReadsUntrusted, Capability::ReadsPrivate],
            tools_with: vec![Capability::SendsExternal],
            tools: vec![],
            action,
            routes: vec![],
            features: vec![],
            keys: vec![],
        });
        AgentPolicy::new(&cfg, std::path::Path::new(".")).unwrap()
    }

    fn call(name: &str, args: &str) -> ToolCall {
        ToolCall {
            id: "c1".into(),
            name: name.into(),
            arguments: args.into(),
        }
    }

    fn user(scopes: &[&str]) -> UserScopes {
        UserScopes::from_list(scopes.iter().map(|s| s.to_string()).collect(), "header")
    }

    #[test]
    fn the_rule_of_two_arms_only_with_both_taints() {
        let p = policy(AgentAction::Deny);
        let send = call("send_email", r#"{"to":"bob@example.com"}"#);
        let u = user(&["email:send"]);
        let untrusted = Caps(Capability::ReadsUntrusted.bit());
        let both = Caps(Capability::ReadsUntrusted.bit() | Capability::ReadsPrivate.bit());
        assert_eq!(
            p.decide(&send, Caps(0), &u, Scope::default()).outcome,
            Outcome::Allow
        );
        assert_eq!(
            p.decide(&send, untrusted, &u, Scope::default()).outcome,
            Outcome::Allow
        );
        let d = p.decide(&send, both, &u, Scope::default());
        assert_eq!(d.outcome, Outcome::Deny);
        assert_eq!(d.rule.as_deref(), Some("rule_of_two"));
        assert!(
            d.reason
                .contains("read untrusted content and read private data"),
            "{}",
            d.reason
        );
        // Other tools are not covered.
        let read = call("read_inbox", "{}");
        assert_eq!(
            p.decide(&read, both, &u, Scope::default()).outcome,
            Outcome::Allow
        );
        let held = policy(AgentAction::RequiresApproval).decide(&send, both, &u, Scope::default());
        assert_eq!(held.outcome, Outcome::RequiresApproval);
        let shadow = policy(AgentAction::Shadow).decide(&send, both, &u, Scope::default());
        assert_eq!(shadow.outcome, Outcome::WouldDeny);
    }

    /// The store is skipped only when it cannot matter: for every known taint under
    /// which more taint "does not matter", every call's outcome is the same with any
    /// taint added.
    #[test]
    fn more_taint_matters_only_while_some_rule_is_unmet() {
        let p = policy(AgentAction::Deny);
        let both = Capability::ReadsUntrusted.bit() | Capability::ReadsPrivate.bit();
        assert!(p.more_taint_matters(Caps(0), Scope::default()));
        assert!(p.more_taint_matters(Caps(Capability::ReadsUntrusted.bit()), Scope::default()));
        assert!(!p.more_taint_matters(Caps(both), Scope::default()));
        let u = user(&["email:send"]);
        let calls = [
            call("send_email", r#"{"to":"bob@example.com"}"#),
            call("read_inbox", "{}"),
            call("fetch_url", "{}"),
        ];
        for known in 0..32u32 {
            if p.more_taint_matters(Caps(known), Scope::default()) {
                continue;
            }
            for extra in 0..32u32 {
                for c in &calls {
                    assert_eq!(
                        p.decide(c, Caps(known), &u, Scope::default()).outcome,
                        p.decide(c, Caps(known | extra), &u, Scope::default())
                            .outcome,
                        "{known} {extra} {}",
                        c.name
                    );
                }
            }
        }
        // A rule scoped elsewhere never needs the store here.
        let mut cfg = AgentsConfig::default();
        cfg.tools.insert(
            "send_email".into(),
            AgentToolConfig {
                capabilities: vec![Capability::SendsExternal],
                ..Default::default()
            },
        );
        cfg.policies.push(AgentPolicyConfig {
            name: "only_there".into(),
            when_tainted: vec![Capability::ReadsUntrusted],
            tools_with: vec![Capability::SendsExternal],
            tools: vec![],
            action: AgentAction::Deny,
            routes: vec!["there".into()],
            features: vec![],
            keys: vec![],
        });
        let p = AgentPolicy::new(&cfg, std::path::Path::new(".")).unwrap();
        let here = Scope {
            route: Some("here"),
            ..Scope::default()
        };
        let there = Scope {
            route: Some("there"),
            ..Scope::default()
        };
        assert!(!p.more_taint_matters(Caps(0), here));
        assert!(p.more_taint_matters(Caps(0), there));
    }

    #[test]
    fn a_user_without_the_scope_neither_sees_nor_calls_the_tool() {
        let p = policy(AgentAction::Deny);
        let mut req = ChatRequest::new("m", vec![], llmop_core::WireFormat::OpenAi);
        for n in ["fetch_url", "send_email", "undeclared"] {
            req.tools.push(llmop_core::Tool {
                name: n.into(),
                description: None,
                parameters: serde_json::json!({"type":"object"}),
                strict: None,
            });
        }
        req.tool_choice = Some(llmop_core::ToolChoice::Named("send_email".into()));
        let removed = p.filter_tools(&mut req, &user(&["other"]));
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].tool, "send_email");
        assert!(removed[0].reason.contains("email:send"));
        let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fetch_url", "undeclared"]);
        assert_eq!(req.tool_choice, Some(llmop_core::ToolChoice::Auto));
        let d = p.decide(
            &call("send_email", r#"{"to":"bob@example.com"}"#),
            Caps(0),
            &UserScopes::none(),
            Scope::default(),
        );
        assert_eq!(
            (d.outcome, d.rule.as_deref()),
            (Outcome::Deny, Some("user_scopes"))
        );
    }

    #[test]
    fn argument_constraints_check_domains_without_echoing_values() {
        let p = policy(AgentAction::Deny);
        let u = user(&["email:send"]);
        let ok = |args: &str| p.decide(&call("send_email", args), Caps(0), &u, Scope::default());
        assert_eq!(ok(r#"{"to":"bob@example.com"}"#).outcome, Outcome::Allow);
        assert_eq!(
            ok(r#"{"to":"Bob <bob@mail.example.com>"}"#).outcome,
            Outcome::Allow
        );
        assert_eq!(
            ok(r#"{"to":["a@example.com","b@example.com"]}"#).outcome,
            Outcome::Allow
        );
        for bad in [
            r#"{"to":"mallory@evil.example"}"#,
            r#"{"to":"x@notexample.com"}"#,
            r#"{"to":"x@example.com.evil.example"}"#,
            r#"{"to":["a@example.com","m@evil.example"]}"#,
            r#"not json"#,
        ] {
            let d = ok(bad);
            assert_eq!(d.outcome, Outcome::Deny, "{bad}");
            assert!(
                !d.reason.contains("mallory") && !d.reason.contains("evil"),
                "{}",
                d.reason
            );
        }
        // Absent and not required: allowed.
        assert_eq!(ok("{}").outcome, Outcome::Allow);
    }

    #[test]
    fn history_taint_reads_the_calls_in_the_conversation() {
        let p = policy(AgentAction::Deny);
        let req = ChatRequest::new(
            "m",
            vec![llmop_core::Message {
                role: llmop_core::Role::Assistant,
                parts: vec![
                    Part::ToolCall(call("fetch_url", "{}")),
                    Part::ToolCall(call("read_inbox", "{}")),
                ],
                name: None,
            }],
            llmop_core::WireFormat::OpenAi,
        );
        let t = p.history_taint(&req);
        assert!(t.has(Capability::ReadsUntrusted) && t.has(Capability::ReadsPrivate));
        assert_eq!(t.names(), ["reads_untrusted", "reads_private"]);
    }

    proptest::proptest! {
        /// Arguments and addresses come from a model: no value makes a decision panic,
        /// and a reason never carries the value.
        #[test]
        fn any_arguments_are_decided_without_panic_or_echo(to in "[a-z0-9]{1,12}@[a-z0-9.\\-]{1,20}", raw in ".{0,120}") {
            let p = policy(AgentAction::Deny);
            let u = user(&["email:send"]);
            let args = serde_json::json!({"to": to}).to_string();
            let d = p.decide(&call("send_email", &args), Caps(0), &u, Scope::default());
            if d.outcome == Outcome::Deny {
                proptest::prop_assert!(!d.reason.contains(to.as_str()));
            }
            let _ = p.decide(&call("send_email", &raw), Caps(u32::MAX), &u, Scope::default());
            let _ = domain_of(&raw);
        }
    }

    #[test]
    fn domains_are_read_from_addresses_and_urls() {
        assert_eq!(
            domain_of("a@B.Example.com").as_deref(),
            Some("b.example.com")
        );
        assert_eq!(
            domain_of("https://user@host.example:8443/x?y").as_deref(),
            Some("host.example")
        );
        assert_eq!(
            domain_of("Bob <bob@example.com>").as_deref(),
            Some("example.com")
        );
        assert_eq!(domain_of("not a domain"), None);
        assert!(in_domain("mail.example.com", "example.com"));
        assert!(!in_domain("badexample.com", "example.com"));
    }
}
