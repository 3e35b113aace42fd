//! Credentials, from the documented shapes of real ones: each rule has keywords (a
//! literal every match contains) and a pattern; one Aho-Corasick pass over the text
//! finds which keywords occur, and only those rules' patterns run. Text without any
//! keyword (most text) costs one linear scan.

use crate::keywords::Words;
use crate::{Category, Finding};
use base64::Engine;
use regex::Regex;
use std::sync::OnceLock;

struct Rule {
    name: &'static str,
    /// `secret.<name>`, the findings' rule.
    qualified: &'static str,
    /// Lowercase literals; a rule runs when one occurs (case-insensitively).
    keywords: &'static [&'static str],
    pattern: Regex,
    /// The capture group that is the secret (0: the whole match).
    group: usize,
    check: Option<fn(&str) -> bool>,
}

/// (name, keywords, pattern, group, check). Shapes from the issuers' documentation.
type RuleDef = (
    &'static str,
    &'static [&'static str],
    &'static str,
    usize,
    Option<fn(&str) -> bool>,
);

const RULES: &[RuleDef] = &[
    // AWS access key ids: a 4-letter prefix by key type and 16 base-32 characters.
    (
        "aws_access_key_id",
        &["akia", "asia", "abia", "acca"],
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16}\b",
        0,
        Some(not_example),
    ),
    // An AWS secret key is 40 base64 characters: only next to its name.
    (
        "aws_secret_access_key",
        &["aws"],
        r#"(?i)aws.{0,24}?(?:secret|private)?.{0,8}?(?:access)?.{0,4}?key.{0,6}?["'=:\s]{1,4}([A-Za-z0-9/+]{40})(?:[^A-Za-z0-9/+]|$)"#,
        1,
        Some(mixed),
    ),
    // GitHub: classic tokens (prefix by kind, 36 characters) and fine-grained PATs.
    (
        "github_token",
        &["ghp_", "gho_", "ghu_", "ghs_", "ghr_"],
        r"\bgh[pousr]_[A-Za-z0-9]{36}\b",
        0,
        None,
    ),
    (
        "github_token",
        &["github_pat_"],
        r"\bgithub_pat_[A-Za-z0-9]{22}_[A-Za-z0-9]{59}\b",
        0,
        None,
    ),
    (
        "gitlab_token",
        &["glpat-"],
        r"\bglpat-[A-Za-z0-9_\-]{20,}",
        0,
        None,
    ),
    (
        "stripe_key",
        &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{20,247}\b",
        0,
        None,
    ),
    (
        "stripe_webhook_secret",
        &["whsec_"],
        r"\bwhsec_[A-Za-z0-9+/=]{32,}",
        0,
        None,
    ),
    // Anthropic before OpenAI: both start with `sk-`.
    (
        "anthropic_key",
        &["sk-ant-"],
        r"\bsk-ant-(?:api|admin|oat)\d{2}-[A-Za-z0-9_\-]{80,120}",
        0,
        None,
    ),
    // OpenAI: legacy and project keys carry the `T3BlbkFJ` marker; project, service
    // account and admin keys have their own prefixes.
    (
        "openai_key",
        &["t3blbkfj"],
        r"\bsk-[A-Za-z0-9_\-]{16,}T3BlbkFJ[A-Za-z0-9_\-]{16,}",
        0,
        None,
    ),
    (
        "openai_key",
        &["sk-proj-", "sk-svcacct-", "sk-admin-"],
        r"\bsk-(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,200}",
        0,
        Some(mixed),
    ),
    (
        "google_api_key",
        &["aiza"],
        r"\b(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)",
        1,
        None,
    ),
    (
        "slack_token",
        &["xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-", "xoxe-"],
        r"\bxox[abprse]-[0-9A-Za-z\-]{10,250}",
        0,
        None,
    ),
    (
        "slack_webhook",
        &["hooks.slack.com"],
        r"https://hooks\.slack\.com/services/T[A-Z0-9]{6,}/B[A-Z0-9]{6,}/[A-Za-z0-9]{20,}",
        0,
        None,
    ),
    ("npm_token", &["npm_"], r"\bnpm_[A-Za-z0-9]{36}\b", 0, None),
    (
        "huggingface_token",
        &["hf_"],
        r"\bhf_[A-Za-z0-9]{34,40}\b",
        0,
        Some(mixed),
    ),
    (
        "sendgrid_key",
        &["sg."],
        r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
        0,
        None,
    ),
    ("twilio_key", &["sk"], r"\bSK[0-9a-f]{32}\b", 0, None),
    (
        "azure_storage_key",
        &["accountkey="],
        r"(?i)AccountKey=([A-Za-z0-9+/]{86}==)",
        1,
        None,
    ),
    // A private key block (or its header alone: a truncated key is still a key); the
    // body up to its END line is added by `key_block_end`.
    (
        "private_key",
        &["private key"],
        r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY(?: BLOCK)?-----",
        0,
        None,
    ),
    // A JWT whose header decodes to JSON naming its algorithm.
    (
        "jwt",
        &["eyj"],
        r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
        0,
        Some(jwt_header),
    ),
    // Connection strings with a password in them.
    (
        "connection_string",
        &["://"],
        r#"(?i)\b(?:postgres(?:ql)?|mysql|mariadb|mongodb(?:\+srv)?|rediss?|amqps?|mssql|sqlserver|clickhouse)://[^\s:/@]{1,64}:([^\s@/]{1,128})@[^\s/"'<>]+(?:/[^\s"'<>]*)?"#,
        0,
        Some(real_password),
    ),
];

/// A 40-character secret has both cases or a digit and a letter: a word list or a path
/// of that length is not a key.
fn mixed(s: &str) -> bool {
    let lower = s.bytes().any(|b| b.is_ascii_lowercase());
    let upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let digit = s.bytes().any(|b| b.is_ascii_digit());
    (lower as u8 + upper as u8 + digit as u8) >= 2 && !s.contains("EXAMPLE")
}

/// The end of a private key block whose header ends at `header_end`: after its
/// `-----END … PRIVATE KEY-----` line when one follows within 16 KiB, else the header
/// alone (a truncated key is still a key). Found by hand: a regex spanning 16 KiB of
/// any character compiles past the regex crate's size limit.
fn key_block_end(text: &str, header_end: usize) -> usize {
    let rest = &text[header_end..];
    let window = &rest[..floor_boundary(rest, 16 * 1024)];
    let Some(at) = window.find("-----END ") else {
        return header_end;
    };
    let after = &window[at + 9..];
    match after.find("-----") {
        Some(close)
            if after[..close].ends_with("PRIVATE KEY")
                || after[..close].ends_with("PRIVATE KEY BLOCK") =>
        {
            header_end + at + 9 + close + 5
        }
        _ => header_end,
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    if i >= s.len() {
        return s.len();
    }
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// AWS documents its examples with `EXAMPLE` in them.
fn not_example(s: &str) -> bool {
    !s.contains("EXAMPLE")
}

fn jwt_header(s: &str) -> bool {
    let header = s.split('.').next().unwrap_or("");
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .is_some_and(|v| v.get("alg").is_some())
}

/// Placeholders in documentation (`user:password@`, `:${PASSWORD}@`, `:****@`) are not
/// secrets.
fn real_password(s: &str) -> bool {
    let Some(rest) = s.split_once("://").map(|(_, r)| r) else {
        return false;
    };
    let Some(pw) = rest
        .rsplit_once('@')
        .and_then(|(cred, _)| cred.split_once(':'))
        .map(|(_, p)| p)
    else {
        return false;
    };
    let lower = pw.to_ascii_lowercase();
    !(pw.starts_with(['$', '<', '{', '%'])
        || pw.chars().all(|c| c == '*' || c == 'x' || c == 'X')
        || matches!(
            lower.as_str(),
            "password"
                | "pass"
                | "passwd"
                | "pwd"
                | "secret"
                | "changeme"
                | "yourpassword"
                | "mypassword"
        ))
}

/// The rules' names (`github_token`), each once.
pub fn rule_names() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    RULES.iter().map(|r| r.0).filter(move |n| {
        let new = !seen.contains(n);
        seen.push(n);
        new
    })
}

pub struct Secrets {
    rules: Vec<Rule>,
    /// The keywords, in the order `prefilter` numbers them.
    keywords: Vec<&'static str>,
    prefilter: Words,
    /// Keyword index → the rules it enables, one bit per rule.
    keyword_rules: Vec<u64>,
}

impl Secrets {
    /// The rule set, compiled once per process.
    pub fn get() -> &'static Secrets {
        static S: OnceLock<Secrets> = OnceLock::new();
        S.get_or_init(Secrets::compile)
    }

    fn compile() -> Secrets {
        let mut rules = Vec::new();
        let mut keywords: Vec<&'static str> = Vec::new();
        let mut keyword_rules: Vec<u64> = Vec::new();
        // A rule is a bit of a `u64`; a test checks that the rules fit.
        debug_assert!(RULES.len() <= 64);
        for (i, (name, kws, pattern, group, check)) in RULES.iter().enumerate() {
            rules.push(Rule {
                name,
                // Made once per process (the rule set is a process-wide static), so a
                // finding names its rule without a copy.
                qualified: Box::leak(format!("secret.{name}").into_boxed_str()),
                keywords: kws,
                // Constant patterns: a bad one fails every test.
                pattern: Regex::new(pattern).expect("a constant pattern"),
                group: *group,
                check: *check,
            });
            for k in *kws {
                match keywords.iter().position(|x| x == k) {
                    Some(at) => keyword_rules[at] |= 1 << i,
                    None => {
                        keywords.push(k);
                        keyword_rules.push(1 << i);
                    }
                }
            }
        }
        let prefilter = Words::new(&keywords, true).expect("constant keywords");
        Secrets {
            rules,
            keywords,
            prefilter,
            keyword_rules,
        }
    }

    /// The keywords (lowercase; found case-insensitively), numbered as [`Secrets::enable`]
    /// takes them.
    pub(crate) fn keywords(&self) -> &[&'static str] {
        &self.keywords
    }

    /// The rules keyword `k` enables, one bit per rule.
    pub(crate) fn enable(&self, k: usize) -> u64 {
        self.keyword_rules[k]
    }

    /// The rules that may match `text`: those with a keyword in it.
    fn candidates(&self, text: &str) -> u64 {
        let mut on = 0u64;
        self.prefilter.find(text.as_bytes(), |k| {
            on |= self.keyword_rules[k];
            false
        });
        on
    }

    pub fn scan(&self, text: &str) -> Vec<Finding> {
        self.scan_candidates(text, self.candidates(text))
    }

    /// [`Secrets::scan`] with the keyword pass done by the caller: `on` holds the
    /// rules [`Secrets::enable`] gave for the keywords in `text`.
    pub(crate) fn scan_candidates(&self, text: &str, on: u64) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        for i in (0..self.rules.len()).filter(|i| on & (1 << i) != 0) {
            let rule = &self.rules[i];
            debug_assert!(!rule.keywords.is_empty());
            // This rule's matches, in order, then kept where no earlier rule's are.
            let mut mine: Vec<Finding> = Vec::new();
            for c in rule.pattern.captures_iter(text) {
                let Some(m) = c.get(rule.group) else { continue };
                let whole = c.get(0).map_or(m.as_str(), |w| w.as_str());
                if rule.check.is_some_and(|f| !f(whole)) {
                    continue;
                }
                let mut span = m.start()..m.end();
                if rule.name == "private_key" {
                    span.end = key_block_end(text, span.end);
                }
                mine.push(Finding::new(rule.qualified, Category::Secret, span));
            }
            crate::take_all(&mut out, mine);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test credentials are assembled at run time so that no scanner mistakes this
    /// file for a leak.
    fn fake(prefix: &str, alphabet: &str, n: usize) -> String {
        let a: Vec<char> = alphabet.chars().collect();
        let mut s = prefix.to_string();
        let mut x: u64 = 0x9E3779B97F4A7C15;
        for _ in 0..n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            s.push(a[(x % a.len() as u64) as usize]);
        }
        s
    }

    const ALNUM: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

    fn found(text: &str) -> Vec<(String, String)> {
        Secrets::get()
            .scan(text)
            .into_iter()
            .map(|f| (f.rule.into_owned(), text[f.span].to_string()))
            .collect()
    }

    #[test]
    fn documented_shapes_are_found() {
        let jwt_header = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let jwt_body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"1234567890","name":"Jo"}"#);
        let cases = [
            (
                "secret.aws_access_key_id",
                fake("AKIA", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16),
            ),
            ("secret.github_token", fake("ghp_", ALNUM, 36)),
            ("secret.gitlab_token", fake("glpat-", ALNUM, 20)),
            ("secret.stripe_key", fake("sk_live_", ALNUM, 24)),
            ("secret.anthropic_key", fake("sk-ant-api03-", ALNUM, 95)),
            ("secret.openai_key", fake("sk-proj-", ALNUM, 120)),
            ("secret.google_api_key", fake("AIza", ALNUM, 35)),
            ("secret.slack_token", fake("xoxb-", "0123456789", 24)),
            ("secret.npm_token", fake("npm_", ALNUM, 36)),
            (
                "secret.jwt",
                format!("{jwt_header}.{jwt_body}.{}", fake("", ALNUM, 43)),
            ),
            (
                "secret.connection_string",
                format!(
                    "postgres://app:{}@db.internal:5432/app",
                    fake("", ALNUM, 16)
                ),
            ),
        ];
        for (rule, secret) in &cases {
            let text = format!("here it is: {secret} -- keep it safe");
            let got = found(&text);
            assert_eq!(got, vec![(rule.to_string(), secret.clone())], "{text}");
        }
        let aws = format!("aws_secret_access_key = {}", fake("", ALNUM, 40));
        assert_eq!(found(&aws)[0].0, "secret.aws_secret_access_key");
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
        assert_eq!(found(pem), vec![("secret.private_key".into(), pem.into())]);
        assert_eq!(
            found("-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn")[0].0,
            "secret.private_key"
        );
    }

    #[test]
    fn look_alikes_are_not_secrets() {
        for text in [
            "postgres://user:password@localhost/db",
            "postgres://app:${DB_PASSWORD}@db/app",
            "mysql://root:****@127.0.0.1/x",
            "the ghp_ prefix marks GitHub tokens",
            "eyJhbGciOi.eyJzdWIiOiIx.c2lnbmF0dXJl is not a JWT (bad header)",
            "sk-proj-short",
            "AKIAIOSFODNN7EXAMPLE is AWS's documented example",
            "a sha256 of 3f786850e387550fdab836ed7e6dc881de23001b3f786850",
        ] {
            assert_eq!(found(text), vec![], "{text}");
        }
    }

    #[test]
    fn text_without_keywords_runs_no_rule() {
        assert_eq!(
            Secrets::get()
                .candidates("hello, how are you today?")
                .count_ones(),
            0
        );
        assert_eq!(Secrets::get().candidates("GHP_").count_ones(), 1);
    }

    #[test]
    fn every_rule_is_a_bit_of_the_candidate_mask() {
        assert!(RULES.len() <= 64);
        // Each rule's first keyword turns on that rule (and perhaps others sharing it).
        for (i, (_, kws, ..)) in RULES.iter().enumerate() {
            if let Some(k) = kws.first() {
                assert!(Secrets::get().candidates(&k.to_ascii_uppercase()) & (1 << i) != 0);
            }
        }
    }
}
