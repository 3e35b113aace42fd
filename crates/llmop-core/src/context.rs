//! Per-request metadata: who is calling, in which environment, under which request id.

use std::collections::BTreeMap;

/// Longest client-supplied request id we accept; longer ones are replaced.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Metadata the gateway attaches to one call. Built from headers before the body is
/// parsed, so even a rejected request has an id.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub request_id: String,
    pub env: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub feature: Option<String>,
    pub tags: BTreeMap<String, String>,
    /// The request id of the call this one replays (`llmop replay`).
    pub replay_of: Option<String>,
    /// `x-llmop-timeout-ms`: the client's own deadline, which can only shorten the
    /// route's.
    pub timeout_ms: Option<u64>,
}

/// A client's request id is echoed only if it is short and made of visible ASCII
/// without separators that could break a header or a log line.
pub fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The key of a stored record: a request id, or `<request id>~<call uid>` for a call
/// whose client reused an id (the store re-keys it so that no call is lost).
pub fn valid_record_id(id: &str) -> bool {
    match id.split_once('~') {
        Some((base, uid)) => valid_request_id(base) && uuid::Uuid::parse_str(uid).is_ok(),
        None => valid_request_id(id),
    }
}

/// A new time-ordered request id (UUIDv7), so ids sort by arrival.
pub fn new_request_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Longest metadata value (env, user, session, feature, the whole tag list), however it
/// arrives: an `x-llmop-*` header, the OpenAI `user` field, Anthropic's
/// `metadata.user_id`, or an invoke body.
pub const MAX_META_LEN: usize = 256;

/// A metadata value from a request body, held to the rules of the headers: at most
/// [`MAX_META_LEN`] bytes and no control characters. Trimmed; empty is `None`.
pub fn check_meta(value: &str) -> Result<Option<String>, String> {
    let v = value.trim();
    if v.len() > MAX_META_LEN {
        return Err(format!("is longer than {MAX_META_LEN} bytes"));
    }
    if v.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok((!v.is_empty()).then(|| v.to_string()))
}

/// Tags from a request body, held to the rules of `x-llmop-tags`: together (as
/// `k=v,k2=v2`) at most [`MAX_META_LEN`] bytes, keys not empty, no `,` or `=` in keys,
/// no `,` in values, no control characters.
pub fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    let total: usize = tags.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if total > MAX_META_LEN + 1 {
        return Err(format!("are longer than {MAX_META_LEN} bytes together"));
    }
    for (k, v) in tags {
        if k.trim().is_empty() {
            return Err("have an empty key".into());
        }
        if k.contains([',', '=']) || v.contains(',') {
            return Err(format!("tag `{k}`: keys hold no `,` or `=`, values no `,`"));
        }
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(format!("tag `{k}` holds a control character"));
        }
    }
    Ok(())
}

/// Parses `x-llmop-tags: k=v,k2=v2`. Blank items are skipped; an item without `=` or
/// with an empty key is an error naming it.
pub fn parse_tags(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut tags = BTreeMap::new();
    for item in raw.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("tag `{item}` is not of the form key=value"))?;
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("tag `{item}` has an empty key"));
        }
        tags.insert(k.to_string(), v.trim().to_string());
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        assert!(valid_request_id("req_123-abc.def:9"));
        assert!(!valid_request_id(""));
        assert!(!valid_request_id("has space"));
        assert!(!valid_request_id("new\nline"));
        assert!(!valid_request_id(&"a".repeat(129)));
        let id = new_request_id();
        assert!(valid_request_id(&id));
        let rekeyed = format!("{}~{id}", "a".repeat(128));
        assert!(valid_record_id(&rekeyed) && !valid_request_id(&rekeyed));
        assert!(!valid_record_id("a~not-a-uuid"));
        assert!(valid_record_id("plain-id"));
        assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    }

    #[test]
    fn tags() {
        let t = parse_tags("team=search, tier=pro,,").unwrap();
        assert_eq!(t.get("team").map(String::as_str), Some("search"));
        assert_eq!(t.get("tier").map(String::as_str), Some("pro"));
        assert!(parse_tags("novalue").is_err());
        assert!(parse_tags("=x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn tag_parser_never_panics(s in ".*") {
            let _ = parse_tags(&s);
        }
    }
}
