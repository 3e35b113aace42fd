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
    /// The W3C `traceparent` the client sent (a valid one; an invalid one is ignored,
    /// as the spec asks): the call's span joins that trace.
    pub traceparent: Option<TraceParent>,
}

/// A W3C trace context parent: the trace a call belongs to and the span that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub sampled: bool,
}

impl TraceParent {
    /// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`. A later version may
    /// carry more fields after the flags (`-…`), which are ignored; version `ff`, ids of
    /// all zeros, upper-case hex and wrong lengths are invalid (`None`).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let s = s.trim();
        let mut parts = s.splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let lower_hex = |x: &str, n: usize| {
            x.len() == n
                && x.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !lower_hex(version, 2) || version == "ff" || (version == "00" && rest.is_some()) {
            return None;
        }
        if !lower_hex(trace, 32) || !lower_hex(parent, 16) || !lower_hex(flags, 2) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        hex_into(trace, &mut trace_id)?;
        hex_into(parent, &mut parent_id)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        Some(TraceParent {
            trace_id,
            parent_id,
            sampled: flags & 1 == 1,
        })
    }

    /// The header form (version 00).
    pub fn to_header(&self) -> String {
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent_id),
            u8::from(self.sampled)
        )
    }
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
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

/// When a request id llmop made ([`new_request_id`]) was made, Unix ms; `None` for an
/// id a client chose.
pub fn request_id_made_at_ms(id: &str) -> Option<i64> {
    let u = uuid::Uuid::parse_str(id).ok()?;
    if u.get_version_num() != 7 {
        return None;
    }
    let (secs, nanos) = u.get_timestamp()?.to_unix();
    Some(secs as i64 * 1000 + i64::from(nanos / 1_000_000))
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
    fn made_at_reads_llmop_ids_only() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let t = request_id_made_at_ms(&new_request_id()).unwrap();
        assert!((now - t).abs() < 5_000, "{now} {t}");
        assert_eq!(request_id_made_at_ms("tour-1"), None);
        assert_eq!(
            request_id_made_at_ms(&uuid::Uuid::new_v4().to_string()),
            None
        );
    }

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

#[cfg(test)]
mod traceparent_tests {
    use super::TraceParent;

    #[test]
    fn traceparents_are_parsed_as_the_spec_says() {
        let t = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.parent_id[7], 0xb7);
        assert!(t.sampled);
        assert_eq!(
            t.to_header(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        // A later version with more fields: the known ones are read.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
                .is_some()
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba9é2b7-01",
        ] {
            assert!(TraceParent::parse(bad).is_none(), "{bad}");
        }
    }
}
