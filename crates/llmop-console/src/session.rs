//! The console's session: a signed cookie, and the CSRF token bound to it.
//!
//! Stateless, so every replica that shares the admin token accepts the same session:
//! the cookie is `<payload>.<mac>` in URL-safe base64, the payload `v1|<role>|<expiry
//! s>|<nonce>`, the MAC an HMAC-SHA-256 under a key derived from the admin token (a
//! random key per process when there is none, where the console is open anyway).
//! Rotating the admin token ends every session. The CSRF token is the HMAC of the
//! session's nonce under the same key: a page from this session carries it in every
//! form, and a change without it (or with another session's) is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads every page and acts (deploy, rollback, decide).
    Admin,
    /// Reads every page; acts on nothing.
    Viewer,
}

impl Role {
    fn tag(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// A verified session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub role: Role,
    pub expires_s: u64,
    nonce: String,
}

/// Signs and verifies sessions.
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    /// The key is derived from the admin token, so replicas sharing it share sessions;
    /// without one, a random key for this process.
    pub fn new(admin_token: Option<&str>) -> Signer {
        let key = match admin_token {
            Some(t) => {
                let mut h = Sha256::new();
                h.update(b"llmop-console-session-v1\0");
                h.update(t.as_bytes());
                h.finalize().into()
            }
            None => rand::random(),
        };
        Signer { key }
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        // An HMAC takes a key of any length: this cannot fail.
        let mut m = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(data);
        m
    }

    /// A new session's cookie value.
    pub fn issue(&self, role: Role, now_s: u64, ttl_s: u64) -> (String, Session) {
        let nonce: [u8; 16] = rand::random();
        let s = Session {
            role,
            expires_s: now_s.saturating_add(ttl_s),
            nonce: B64.encode(nonce),
        };
        let payload = format!("v1|{}|{}|{}", role.tag(), s.expires_s, s.nonce);
        let tag = self.mac(payload.as_bytes()).finalize().into_bytes();
        (format!("{}.{}", B64.encode(payload), B64.encode(tag)), s)
    }

    /// The session a cookie value carries, if it is ours, intact and not expired.
    pub fn verify(&self, cookie: &str, now_s: u64) -> Option<Session> {
        let (p, t) = cookie.split_once('.')?;
        let payload = B64.decode(p).ok()?;
        let tag = B64.decode(t).ok()?;
        self.mac(&payload).verify_slice(&tag).ok()?;
        let payload = String::from_utf8(payload).ok()?;
        let mut parts = payload.split('|');
        if parts.next()? != "v1" {
            return None;
        }
        let role = match parts.next()? {
            "admin" => Role::Admin,
            "viewer" => Role::Viewer,
            _ => return None,
        };
        let expires_s: u64 = parts.next()?.parse().ok()?;
        let nonce = parts.next()?.to_string();
        if parts.next().is_some() || expires_s <= now_s {
            return None;
        }
        Some(Session {
            role,
            expires_s,
            nonce,
        })
    }

    /// The CSRF token of a session: what its forms carry.
    pub fn csrf(&self, s: &Session) -> String {
        let tag = self
            .mac(format!("csrf|{}", s.nonce).as_bytes())
            .finalize()
            .into_bytes();
        B64.encode(tag)
    }

    /// Whether `token` is this session's CSRF token (compared in constant time).
    pub fn csrf_ok(&self, s: &Session, token: &str) -> bool {
        let Ok(tag) = B64.decode(token) else {
            return false;
        };
        self.mac(format!("csrf|{}", s.nonce).as_bytes())
            .verify_slice(&tag)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_session_round_trips_and_expires() {
        let s = Signer::new(Some("admin-token"));
        let (cookie, sess) = s.issue(Role::Viewer, 1000, 60);
        assert_eq!(s.verify(&cookie, 1000), Some(sess.clone()));
        assert_eq!(s.verify(&cookie, 1059).map(|x| x.role), Some(Role::Viewer));
        assert_eq!(s.verify(&cookie, 1060), None);
        // Another admin token (rotated): every session ends.
        assert_eq!(Signer::new(Some("rotated")).verify(&cookie, 1000), None);
        // Replicas sharing the token accept it.
        assert!(Signer::new(Some("admin-token"))
            .verify(&cookie, 1000)
            .is_some());
    }

    #[test]
    fn a_viewer_cannot_make_itself_admin() {
        let s = Signer::new(Some("t"));
        let (cookie, _) = s.issue(Role::Viewer, 0, 600);
        let (p, tag) = cookie.split_once('.').unwrap();
        let payload = String::from_utf8(B64.decode(p).unwrap()).unwrap();
        let forged = B64.encode(payload.replace("viewer", "admin"));
        assert_eq!(s.verify(&format!("{forged}.{tag}"), 1), None);
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let s = Signer::new(Some("t"));
        let (_, a) = s.issue(Role::Admin, 0, 600);
        let (_, b) = s.issue(Role::Admin, 0, 600);
        assert!(s.csrf_ok(&a, &s.csrf(&a)));
        assert!(!s.csrf_ok(&a, &s.csrf(&b)));
        assert!(!s.csrf_ok(&a, ""));
        assert!(!s.csrf_ok(&a, "not base64 !"));
    }

    proptest! {
        /// Whatever a client sends as the cookie, verification answers without panic,
        /// and nothing but an issued cookie verifies.
        #[test]
        fn no_forged_cookie_verifies(c in ".{0,200}") {
            let s = Signer::new(Some("t"));
            prop_assert_eq!(s.verify(&c, 0), None);
        }

        /// Any one changed character of an issued cookie breaks it.
        #[test]
        fn a_changed_cookie_does_not_verify(i in 0usize..200, ch in "[A-Za-z0-9_.-]") {
            let s = Signer::new(Some("t"));
            let (cookie, _) = s.issue(Role::Admin, 0, 600);
            let i = i % cookie.len();
            let mut b = cookie.clone().into_bytes();
            let c = ch.as_bytes()[0];
            prop_assume!(b[i] != c);
            b[i] = c;
            let changed = String::from_utf8(b).unwrap();
            // Base64 without padding has slack bits in its last character: a change
            // there can decode to the same bytes, which is the same cookie.
            let same = changed.split_once('.').and_then(|(p, t)| Some((B64.decode(p).ok()?, B64.decode(t).ok()?)))
                == cookie.split_once('.').and_then(|(p, t)| Some((B64.decode(p).ok()?, B64.decode(t).ok()?)));
            prop_assert!(same || s.verify(&changed, 1).is_none());
        }
    }
}
