//! Budgets as data: what a `[[budgets]]` scope and window mean, which counter a call
//! falls in, and when a window ends. Pure; the counting lives in the gateway.

use crate::config::BudgetConfig;
use crate::context::RequestContext;

/// Problems with one budget, by field (config validation and the admin API).
pub fn check(b: &BudgetConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Err(m) = Scope::parse(&b.scope) {
        out.push(("scope", m));
    }
    let window = b.window.as_deref().unwrap_or("day");
    if Window::parse(window).is_none() {
        out.push((
            "window",
            format!("`{window}`: request, minute, hour, day or month"),
        ));
    }
    for (field, v) in [("soft_usd", b.soft_usd), ("hard_usd", b.hard_usd)] {
        if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
            out.push((field, "must be 0 or more (USD)".into()));
        }
    }
    if b.scope != "session:*" && (b.max_calls.is_some() || b.max_duration_s.is_some()) {
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
