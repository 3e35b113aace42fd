//! Budgets as data: what a `[[budgets]]` scope and window mean, which counter a call
//! falls in, and when a window ends. Pure; the counting lives in the gateway.

use crate::config::BudgetConfig;
use crate::context::RequestContext;

/// Problems with one budget that its types cannot rule out, by field (config
/// validation and the admin API). A scope or window that does not parse is refused when
/// the budget is read.
pub fn check(b: &BudgetConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (field, v) in [("soft_usd", b.soft_usd), ("hard_usd", b.hard_usd)] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            out.push((field, "must be 0 or more (USD)".into()));
        }
    }
    if b.scope != Scope::Session && (b.max_calls.is_some() || b.max_duration_s.is_some()) {
        out.push((
            "max_calls",
            "max_calls and max_duration_s apply to `session:*` budgets".into(),
        ));
    }
    if b.soft_usd.is_none()
        && b.hard_usd.is_none()
        && b.max_calls.is_none()
        && b.max_duration_s.is_none()
    {
        out.push((
            "scope",
            "a budget needs soft_usd, hard_usd, max_calls or max_duration_s".into(),
        ));
    }
    out
}

/// What a budget counts over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Global,
    /// `key:<id>`, or every key separately (`key:*`).
    Key(Option<String>),
    User(Option<String>),
    Feature(Option<String>),
    Tag(String, String),
    /// Every session separately (`session:*`).
    Session,
    /// Each request on its own (a per-request cap).
    Request,
}

/// The canonical text of a scope: what `parse` reads back to the same scope.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let all = |v: &Option<String>| v.as_deref().unwrap_or("*").to_string();
        match self {
            Scope::Global => f.write_str("global"),
            Scope::Key(k) => write!(f, "key:{}", all(k)),
            Scope::User(u) => write!(f, "user:{}", all(u)),
            Scope::Feature(x) => write!(f, "feature:{}", all(x)),
            Scope::Tag(k, v) => write!(f, "tag:{k}={v}"),
            Scope::Session => f.write_str("session:*"),
            Scope::Request => f.write_str("request"),
        }
    }
}

/// Read from its text (`"key:*"`), refused with `parse`'s message.
impl<'de> serde::Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        let text = String::deserialize(d)?;
        Scope::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Read from its name (`"day"`).
impl<'de> serde::Deserialize<'de> for Window {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Window, D::Error> {
        let text = String::deserialize(d)?;
        Window::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("`{text}`: request, minute, hour, day or month"))
        })
    }
}

impl serde::Serialize for Window {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        let one = |v: &str| (v != "*").then(|| v.to_string());
        Ok(match s.split_once(':') {
            None if s == "global" => Scope::Global,
            None if s == "request" => Scope::Request,
            Some(("key", v)) if !v.is_empty() => Scope::Key(one(v)),
            Some(("user", v)) if !v.is_empty() => Scope::User(one(v)),
            Some(("feature", v)) if !v.is_empty() => Scope::Feature(one(v)),
            Some(("session", "*")) => Scope::Session,
            Some(("tag", kv)) => match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Scope::Tag(k.to_string(), v.to_string()),
                _ => return Err(format!("`{s}`: a tag scope is tag:<key>=<value>")),
            },
            _ => {
                return Err(format!(
                    "`{s}`: use global, key:<id|*>, user:<id|*>, feature:<name|*>, tag:<k>=<v>, session:* or request"
                ))
            }
        })
    }

    /// The counter this call falls in under this scope (`None`: the budget does not
    /// apply to the call).
    pub fn subject(&self, ctx: &RequestContext, key_id: Option<&str>) -> Option<String> {
        let matches = |want: &Option<String>, have: Option<&str>| -> Option<String> {
            let have = have?;
            match want {
                Some(w) if w != have => None,
                _ => Some(have.to_string()),
            }
        };
        match self {
            Scope::Global => Some("global".into()),
            Scope::Key(k) => matches(k, key_id).map(|v| format!("key:{v}")),
            Scope::User(u) => matches(u, ctx.user.as_deref()).map(|v| format!("user:{v}")),
            Scope::Feature(f) => matches(f, ctx.feature.as_deref()).map(|v| format!("feature:{v}")),
            Scope::Tag(k, v) => (ctx.tags.get(k) == Some(v)).then(|| format!("tag:{k}={v}")),
            Scope::Session => ctx.session.as_ref().map(|s| format!("session:{s}")),
            Scope::Request => Some("request".into()),
        }
    }
}

/// A budget's window: calendar periods in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Request,
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn parse(s: &str) -> Option<Window> {
        Some(match s {
            "request" => Window::Request,
            "minute" => Window::Minute,
            "hour" => Window::Hour,
            "day" => Window::Day,
            "month" => Window::Month,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Request => "request",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// `[start, end)` of the window holding `now_ms` (Unix ms, UTC).
    pub fn bounds(self, now_ms: i64) -> (i64, i64) {
        let fixed = |len: i64| {
            let start = now_ms.div_euclid(len) * len;
            (start, start + len)
        };
        match self {
            Window::Request => (now_ms, now_ms),
            Window::Minute => fixed(60_000),
            Window::Hour => fixed(3_600_000),
            Window::Day => fixed(86_400_000),
            Window::Month => {
                let t = time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000))
                    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
                let first = t.date().replace_day(1).unwrap_or(t.date());
                let next = match first.month() {
                    time::Month::December => first
                        .replace_year(first.year() + 1)
                        .and_then(|d| d.replace_month(time::Month::January)),
                    m => first.replace_month(m.next()),
                }
                .unwrap_or(first);
                let ms = |d: time::Date| d.midnight().assume_utc().unix_timestamp() * 1000;
                (ms(first), ms(next))
            }
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn scopes_read_back_from_their_text_and_from_config() {
        for text in [
            "global",
            "request",
            "key:*",
            "key:k1",
            "user:*",
            "user:ann",
            "feature:f",
            "tag:team=a=b",
            "session:*",
        ] {
            let s = Scope::parse(text).unwrap();
            assert_eq!(s.to_string(), text);
            let from_json: Scope = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(from_json, s);
        }
        let e = serde_json::from_value::<Scope>(serde_json::json!("users:*")).unwrap_err();
        assert!(e.to_string().contains("use global, key:"), "{e}");
        let w: Window = serde_json::from_value(serde_json::json!("hour")).unwrap();
        assert_eq!(w, Window::Hour);
        assert!(serde_json::from_value::<Window>(serde_json::json!("week")).is_err());
    }

    use super::*;

    #[test]
    fn scopes_parse_and_pick_their_counter() {
        let mut ctx = RequestContext {
            user: Some("u1".into()),
            feature: Some("summ".into()),
            ..RequestContext::default()
        };
        ctx.tags.insert("team".into(), "support".into());
        let subject = |s: &str| Scope::parse(s).unwrap().subject(&ctx, Some("k1"));
        assert_eq!(subject("global").as_deref(), Some("global"));
        assert_eq!(subject("user:*").as_deref(), Some("user:u1"));
        assert_eq!(subject("user:u2"), None);
        assert_eq!(subject("feature:summ").as_deref(), Some("feature:summ"));
        assert_eq!(subject("key:*").as_deref(), Some("key:k1"));
        assert_eq!(
            subject("tag:team=support").as_deref(),
            Some("tag:team=support")
        );
        assert_eq!(subject("tag:team=sales"), None);
        assert_eq!(subject("session:*"), None);
        for bad in ["users:*", "tag:x", "session:s1", "key:", ""] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_are_calendar_periods_in_utc() {
        // 2026-11-23T08:15:30.5Z
        let now = 1_795_421_730_500;
        assert_eq!(
            Window::Minute.bounds(now),
            (1_795_421_700_000, 1_795_421_760_000)
        );
        let (d0, d1) = Window::Day.bounds(now);
        assert_eq!((d0 % 86_400_000, d1 - d0), (0, 86_400_000));
        let (m0, m1) = Window::Month.bounds(now);
        // 2026-11-01T00:00Z .. 2026-12-01T00:00Z
        assert_eq!((m0, m1), (1_793_491_200_000, 1_796_083_200_000));
        // December rolls over to January.
        let (_, end) = Window::Month.bounds(1_796_083_200_000 + 5);
        assert_eq!(end, 1_798_761_600_000);
    }
}
