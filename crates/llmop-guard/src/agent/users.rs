//! The end user's scopes: from a signed token (a JWT verified with the configured keys,
//! `jsonwebtoken`) or from a header the gateway is told to trust.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use llmop_core::config::AgentUsersConfig;
use serde::Serialize;
use std::collections::BTreeSet;
use std::str::FromStr;

/// The scopes an end user holds for this call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UserScopes {
    /// Where they came from: `token`, `header`, or `none`.
    pub source: &'static str,
    /// The token's `sub`, if it had one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    pub scopes: BTreeSet<String>,
}

impl UserScopes {
    pub fn none() -> UserScopes {
        UserScopes {
            source: "none",
            ..Default::default()
        }
    }

    pub fn from_list(scopes: Vec<String>, source: &'static str) -> UserScopes {
        UserScopes {
            source,
            subject: None,
            scopes: scopes.into_iter().collect(),
        }
    }

    pub fn has(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }

    pub fn known(&self) -> bool {
        self.source != "none"
    }
}

/// Why a user token was refused. The message never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("the end-user token is not valid: {0}")]
    Invalid(String),
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

/// The verification keys and rules of `[agents.users]`.
pub struct UserKeys {
    keys: Vec<Key>,
    pub token_header: String,
    pub scopes_header: Option<String>,
    pub trusted_keys: Vec<String>,
    pub required: bool,
    claim: String,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl UserKeys {
    pub fn new(cfg: &AgentUsersConfig, dir: &std::path::Path) -> Result<UserKeys, String> {
        let mut keys = Vec::new();
        for (i, k) in cfg.keys.iter().enumerate() {
            let at = format!("agents.users.keys[{i}]");
            let alg = Algorithm::from_str(&k.alg).map_err(|_| format!("{at}.alg: unknown"))?;
            let key = if k.alg.starts_with("HS") {
                let var = k.secret_env.as_deref().unwrap_or_default();
                let secret = std::env::var(var)
                    .map_err(|_| format!("{at}.secret_env: the variable `{var}` is not set"))?;
                if secret.len() < 32 {
                    return Err(format!(
                        "{at}.secret_env: the secret in `{var}` is shorter than 32 bytes"
                    ));
                }
                DecodingKey::from_secret(secret.as_bytes())
            } else {
                let file = k.public_key_file.clone().unwrap_or_default();
                let path = if file.is_relative() {
                    dir.join(&file)
                } else {
                    file
                };
                let pem = std::fs::read(&path)
                    .map_err(|e| format!("{at}.public_key_file: {}: {e}", path.display()))?;
                let parsed = match alg {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(&pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
                    _ => DecodingKey::from_rsa_pem(&pem),
                };
                parsed.map_err(|e| format!("{at}.public_key_file: not a usable key: {e}"))?
            };
            keys.push(Key {
                kid: k.kid.clone(),
                alg,
                key,
            });
        }
        Ok(UserKeys {
            keys,
            token_header: cfg.token_header.clone(),
            scopes_header: cfg.scopes_header.clone(),
            trusted_keys: cfg.trusted_keys.clone(),
            required: cfg.required,
            claim: cfg.scopes_claim.clone(),
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway: cfg.leeway_s,
        })
    }

    /// Verifies a token and reads its scopes: the signature with a configured key (by
    /// `kid` if the token names one, else every key of its algorithm), `exp` (required),
    /// `nbf`, and the issuer and audience if configured.
    pub fn verify(&self, token: &str) -> Result<UserScopes, UserError> {
        let bad = |m: &str| UserError::Invalid(m.to_string());
        if self.keys.is_empty() {
            return Err(bad(
                "no keys are configured to verify it ([agents.users] keys)",
            ));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| bad("malformed"))?;
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.alg == header.alg)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() {
            return Err(bad("no configured key matches its algorithm and kid"));
        }
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(a) => validation.set_audience(&[a]),
            None => validation.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            validation.set_issuer(&[i]);
        }
        let mut last = bad("bad signature");
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &k.key, &validation) {
                Ok(data) => return Ok(self.scopes_of(&data.claims)),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::ExpiredSignature => bad("expired"),
                        K::ImmatureSignature => bad("not valid yet (nbf)"),
                        K::InvalidIssuer => bad("wrong issuer"),
                        K::InvalidAudience => bad("wrong audience"),
                        K::MissingRequiredClaim(c) => UserError::Invalid(format!("no `{c}` claim")),
                        K::InvalidSignature => bad("bad signature"),
                        _ => bad("malformed"),
                    };
                    if !matches!(e.kind(), K::InvalidSignature) {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    fn scopes_of(&self, claims: &serde_json::Value) -> UserScopes {
        let scopes = match claims.get(&self.claim) {
            Some(serde_json::Value::String(s)) => split(s),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str())
                .map(str::to_string)
                .collect(),
            _ => BTreeSet::new(),
        };
        UserScopes {
            source: "token",
            subject: claims
                .get("sub")
                .and_then(|s| s.as_str())
                .map(|s| s.chars().take(128).collect()),
            scopes,
        }
    }

    /// Scopes from the trusted header's value.
    pub fn from_header(value: &str) -> UserScopes {
        UserScopes {
            source: "header",
            subject: None,
            scopes: split(value),
        }
    }
}

fn split(s: &str) -> BTreeSet<String> {
    s.split([' ', ','])
        .filter(|x| !x.is_empty())
        .take(256)
        .map(|x| x.chars().take(128).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    const SECRET: &str = "a-test-secret-that-is-long-enough-0123456789";

    fn keys() -> UserKeys {
        std::env::set_var("LLMOP_TEST_USER_SECRET_UNIT", SECRET);
        let cfg: AgentUsersConfig = toml::from_str(
            r#"issuer = "https://id.example"
               keys = [{ alg = "HS256", secret_env = "LLMOP_TEST_USER_SECRET_UNIT" }]"#,
        )
        .unwrap();
        UserKeys::new(&cfg, std::path::Path::new(".")).unwrap()
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn a_valid_token_gives_its_scopes() {
        let k = keys();
        let t = token(
            serde_json::json!({"sub":"u1","iss":"https://id.example","exp": now() + 60, "scope":"email:read email:send"}),
            SECRET,
        );
        let u = k.verify(&t).unwrap();
        assert!(u.has("email:send") && u.has("email:read"));
        assert_eq!(u.subject.as_deref(), Some("u1"));
        assert_eq!(u.source, "token");
    }

    #[test]
    fn forged_expired_and_foreign_tokens_are_refused() {
        let k = keys();
        let claims =
            |exp: u64, iss: &str| serde_json::json!({"iss": iss, "exp": exp, "scope":"email:send"});
        let forged = token(
            claims(now() + 60, "https://id.example"),
            "another-secret-that-is-long-enough-000000",
        );
        assert_eq!(
            k.verify(&forged),
            Err(UserError::Invalid("bad signature".into()))
        );
        let expired = token(claims(now() - 3600, "https://id.example"), SECRET);
        assert_eq!(
            k.verify(&expired),
            Err(UserError::Invalid("expired".into()))
        );
        let foreign = token(claims(now() + 60, "https://evil.example"), SECRET);
        assert_eq!(
            k.verify(&foreign),
            Err(UserError::Invalid("wrong issuer".into()))
        );
        let no_exp = token(serde_json::json!({"iss":"https://id.example"}), SECRET);
        assert!(k.verify(&no_exp).is_err());
        assert_eq!(
            k.verify("not.a.jwt"),
            Err(UserError::Invalid("malformed".into()))
        );
        // alg=none is never accepted.
        let none = format!(
            "{}.{}.",
            base64_url(r#"{"alg":"none","typ":"JWT"}"#),
            base64_url(&claims(now() + 60, "https://id.example").to_string())
        );
        assert!(k.verify(&none).is_err());
    }

    fn base64_url(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn header_scopes_split_on_spaces_and_commas() {
        let u = UserKeys::from_header("a, b c,,d");
        assert_eq!(u.scopes.len(), 4);
        assert_eq!(u.source, "header");
    }
}
