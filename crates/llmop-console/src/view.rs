//! Templates and the small formatting the pages share.

use minijinja::{Environment, Value};

/// The templates, compiled in. Names ending in `.html` are escaped for HTML
/// (minijinja's default), so no recorded text can become markup.
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    for (name, src) in [
        ("base.html", include_str!("../templates/base.html")),
        ("login.html", include_str!("../templates/login.html")),
        ("overview.html", include_str!("../templates/overview.html")),
        ("requests.html", include_str!("../templates/requests.html")),
        ("call.html", include_str!("../templates/call.html")),
        ("replay.html", include_str!("../templates/replay.html")),
        ("session.html", include_str!("../templates/session.html")),
        ("features.html", include_str!("../templates/features.html")),
        ("feature.html", include_str!("../templates/feature.html")),
        ("circuits.html", include_str!("../templates/circuits.html")),
        ("budgets.html", include_str!("../templates/budgets.html")),
    ] {
        // The templates are part of the binary and tested: a broken one is a build
        // defect, reported on first render rather than here.
        if let Err(e) = env.add_template(name, src) {
            tracing::error!(template = name, error = %e, "console template does not compile");
        }
    }
    env.add_filter("ts", ts);
    env.add_filter("usd", usd);
    env.add_filter("pretty", pretty);
    env.add_filter("seg", seg);
    env
}

/// Unix ms as UTC, to the second.
fn ts(ms: i64) -> String {
    let t =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An amount in USD, with the precision small amounts need.
fn usd(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(0.0) => "$0".into(),
        Some(x) if x.abs() < 0.01 => format!("${x:.6}"),
        Some(x) => format!("${x:.4}"),
    }
}

/// Any value as indented JSON (escaped by the template like any text).
fn pretty(v: Value) -> String {
    serde_json::to_value(&v)
        .ok()
        .and_then(|j| serde_json::to_string_pretty(&j).ok())
        .unwrap_or_default()
}

/// A value as one URL path segment (an id may hold `/`, `?` or `#`).
fn seg(v: String) -> String {
    seg_of(&v)
}

pub fn seg_of(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// How deep a console path is below the console's root (`/ui/requests` is 0,
/// `/ui/requests/x` is 1), from the path the console's router sees.
pub fn depth_of(path: &str) -> usize {
    path.trim_start_matches('/').matches('/').count()
}

/// The relative way back to the console's root from a page `depth` deep.
pub fn base(depth: usize) -> String {
    "../".repeat(depth)
}

/// Where the login should send the person back to: the page asked for, relative to
/// the console's root.
pub fn back_target(uri: &axum::http::Uri) -> String {
    let path = uri.path().trim_start_matches('/');
    match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    }
}

/// A `next` the login may redirect to: a page of the console, never another site.
pub fn safe_next(next: &str) -> String {
    // The query may hold anything a filter holds; the path is one of ours.
    let path = next.split('?').next().unwrap_or_default();
    let ok = !path.is_empty()
        && !path.starts_with('.')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '~' | '%'))
        && !path.starts_with('/')
        && !path.contains("//")
        && next.chars().all(|c| !c.is_control());
    if ok {
        next.to_string()
    } else {
        "overview".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_relative_to_the_page() {
        assert_eq!(depth_of("/requests"), 0);
        assert_eq!(depth_of("/requests/abc"), 1);
        assert_eq!(base(1), "../");
        assert_eq!(base(0), "");
    }

    #[test]
    fn the_login_never_redirects_off_the_console() {
        for bad in [
            "https://evil.example",
            "//evil.example",
            "/admin",
            "\\\\x",
            "../x",
            "java\u{0}script:x",
            "",
        ] {
            assert_eq!(safe_next(bad), "overview", "{bad}");
        }
        assert_eq!(safe_next("requests/abc?x=1"), "requests/abc?x=1");
        assert_eq!(
            safe_next("requests?since=2026-12-01T00:00:00Z"),
            "requests?since=2026-12-01T00:00:00Z"
        );
    }

    #[test]
    fn ids_are_one_path_segment() {
        assert_eq!(seg("a/b?c#d e".into()), "a%2Fb%3Fc%23d%20e");
    }

    #[test]
    fn every_template_compiles() {
        let env = environment();
        for n in [
            "base.html",
            "login.html",
            "overview.html",
            "requests.html",
            "call.html",
            "replay.html",
            "session.html",
            "features.html",
            "feature.html",
            "circuits.html",
            "budgets.html",
        ] {
            assert!(env.get_template(n).is_ok(), "{n}");
        }
    }
}
