//! The web console over HTTP, as a browser would use it: every page behind a session
//! once the gateway is closed, the login (admin and read-only tokens), finding a call
//! by any id and reading its story, filters in the URL, CSV and JSONL exports, an
//! agent session's calls, CSRF on every change, no secret on any page, and recorded
//! text shown as text, never as markup.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::Gateway;

const ADMIN: &str = "console-admin-token-0123456789abcdef";
const VIEWER: &str = "console-viewer-token-0123456789abcdef";

fn config() -> String {
    r#"
[server]
admin_token_env = "ADMIN_TOKEN"

[console]
viewer_token_env = "VIEWER_TOKEN"

[providers.sim]
kind = "mock"
models = ["small", "large"]
rules = [{ when = "explode", reply = "boom" }]

[routes.chat]
targets = [{ provider = "sim", model = "small" }]
[routes.big]
targets = [{ provider = "sim", model = "large" }]
"#
    .to_string()
}

fn start() -> Gateway {
    Gateway::start_with_env(
        &config(),
        &[("ADMIN_TOKEN", ADMIN), ("VIEWER_TOKEN", VIEWER)],
    )
}

/// A browser that does not follow redirects (the tests read them).
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn chat(gw: &Gateway, route: &str, id: &str, text: &str, session: Option<&str>) {
    let mut r = support::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", id)
        .header("x-llmop-user", "ada");
    if let Some(s) = session {
        r = r.header("x-llmop-session", s);
    }
    let resp = r
        .json(&json!({"model": route, "messages": [{"role": "user", "content": text}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

/// The session cookie an open gateway's console issued with `r` (`name=value`).
fn issued(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap();
    set.split(';').next().unwrap().to_string()
}

/// A GET without any cookie.
async fn bare(gw: &Gateway, path: &str) -> reqwest::Response {
    browser()
        .get(format!("{}/ui/{path}", gw.url))
        .send()
        .await
        .unwrap()
}

/// Logs in; the session cookie.
async fn login(gw: &Gateway, token: &str) -> String {
    let r = browser()
        .post(format!("{}/ui/login", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}&next=requests"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "requests");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    set.split(';').next().unwrap().to_string()
}

async fn page(gw: &Gateway, cookie: &str, path: &str) -> (u16, String, Option<String>) {
    let r = browser()
        .get(format!("{}/ui/{path}", gw.url))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    seen(r).await
}

/// What a browser sees of an answer: status, body, where it redirects.
async fn seen(r: reqwest::Response) -> (u16, String, Option<String>) {
    let status = r.status().as_u16();
    let loc = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string());
    (status, r.text().await.unwrap(), loc)
}

/// Waits (bounded) until the call's record is committed and its page shows.
async fn story(gw: &Gateway, cookie: &str, id: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let (s, body, _) = page(gw, cookie, &format!("requests/{id}")).await;
        if s == 200 {
            return body;
        }
        assert_eq!(s, 404, "{body}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no record of {id}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..].split('"').next().unwrap().to_string()
}

fn no_secrets(body: &str) {
    for s in [ADMIN, VIEWER] {
        assert!(!body.contains(s), "a secret was rendered");
    }
}

#[tokio::test]
async fn nothing_is_reachable_without_a_session() {
    let gw = start();
    for path in [
        "overview",
        "overview?by=user&range=7d",
        "requests",
        "requests?feature=x",
        "requests/abc",
        "sessions/s1",
        "requests.csv",
        "requests.jsonl",
        "",
    ] {
        let r = bare(&gw, path).await;
        assert_eq!(r.status(), 303, "{path}");
        let loc = r.headers()["location"].to_str().unwrap();
        assert!(loc.contains("login"), "{path}: {loc}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("<table"), "{path}");
    }
    // A page two deep sends the browser back up, relative (works behind a prefix).
    let r = bare(&gw, "requests/abc").await;
    assert_eq!(r.headers()["location"], "../login?next=requests%2Fabc");
    // A change without a session, a forged cookie, a wrong token.
    let r = browser()
        .post(format!("{}/ui/logout", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (s, _, _) = page(
        &gw,
        "llmop_console=djF8YWRtaW58OTk5OTk5OTk5OXx4.AAAA",
        "requests",
    )
    .await;
    assert_eq!(s, 303);
    let r = browser()
        .post(format!("{}/ui/login", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong&next=requests")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("set-cookie").is_none());
    // The login never sends the browser off the console.
    let r = browser()
        .post(format!("{}/ui/login", gw.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}&next=https%3A%2F%2Fevil.example%2F"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "overview");
    // Hardened headers on every page.
    let r = bare(&gw, "login").await;
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(r.headers()["cache-control"], "no-store");
    // No referrer to other sites, but the console's own origin on its form posts: under
    // `no-referrer` a browser posts them with `Origin: null`, which an open gateway
    // refuses.
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
}

#[tokio::test]
async fn find_a_call_by_the_id_a_client_got_and_read_its_story() {
    let gw = start();
    let run = format!("{:x}", std::process::id());
    let id = format!("cust-{run}-42");
    chat(
        &gw,
        "chat",
        &id,
        "Where is my order <script>alert(1)</script>?",
        Some(&format!("sess-{run}")),
    )
    .await;
    chat(
        &gw,
        "big",
        &format!("cust-{run}-43"),
        "second",
        Some(&format!("sess-{run}")),
    )
    .await;
    chat(&gw, "chat", &format!("cust-{run}-44"), "third", None).await;
    let cookie = login(&gw, ADMIN).await;
    // Records are written after the answer, in batches: wait until all three
    // are stored before searching, or a search can see only some of them.
    for later in [43, 44] {
        story(&gw, &cookie, &format!("cust-{run}-{later}")).await;
    }
    let body = story(&gw, &cookie, &id).await;
    assert!(body.contains(&id));
    assert!(body.contains("sim / small"), "provider and model");
    assert!(body.contains("Attempts"));
    // Recorded text is text: never markup.
    assert!(
        body.contains("Where is my order &lt;script&gt;alert(1)"),
        "{body}"
    );
    assert!(!body.contains("<script>alert(1)"));
    no_secrets(&body);
    // The search box takes the id the client quoted: straight to its story.
    let (s, _, loc) = page(&gw, &cookie, &format!("requests?q={id}")).await;
    assert_eq!(s, 303);
    assert_eq!(loc.as_deref(), Some(format!("requests/{id}").as_str()));
    // and a session id: its calls.
    let (s, list, _) = page(&gw, &cookie, &format!("requests?q=sess-{run}")).await;
    assert_eq!(s, 200);
    assert!(list.contains(&format!("cust-{run}-43")) && list.contains(&id));
    assert!(!list.contains(&format!("cust-{run}-44")));
    no_secrets(&list);
    // Filters live in the URL.
    let (_, list, _) = page(&gw, &cookie, "requests?model=large").await;
    assert!(list.contains(&format!("cust-{run}-43")));
    assert!(!list.contains(&id));
    let (s, list, _) = page(&gw, &cookie, "requests?version=abc").await;
    assert_eq!(s, 400);
    assert!(list.contains("version must be a whole number"), "{list}");
    // Keyset paging: one per page, three pages, every call once.
    let mut seen = Vec::new();
    let mut next = Some("requests?limit=1&user=ada".to_string());
    while let Some(p) = next.take() {
        let (s, html, _) = page(&gw, &cookie, &p).await;
        assert_eq!(s, 200, "{p}");
        for i in 42..45 {
            let want = format!(">cust-{run}-{i}<");
            if html.contains(&want) {
                seen.push(i);
            }
        }
        next = html.find("rel=\"next\" href=\"").map(|at| {
            html[at + 17..]
                .split('"')
                .next()
                .unwrap()
                .replace("&amp;", "&")
        });
        assert!(seen.len() <= 3);
    }
    seen.sort();
    assert_eq!(seen, vec![42, 43, 44]);
    // An agent session's calls in order, with the running cost.
    let (s, sess, _) = page(&gw, &cookie, &format!("sessions/sess-{run}")).await;
    assert_eq!(s, 200);
    let (a, b) = (
        sess.find(&id).unwrap(),
        sess.find(&format!("cust-{run}-43")).unwrap(),
    );
    assert!(a < b, "oldest first");
    assert!(sess.contains("Running cost"));
    // A viewer reads every page too.
    let viewer = login(&gw, VIEWER).await;
    let (s, body, _) = page(&gw, &viewer, &format!("requests/{id}")).await;
    assert_eq!(s, 200);
    assert!(body.contains("viewer"));
    no_secrets(&body);
}

#[tokio::test]
async fn exports_stream_the_filtered_view() {
    let gw = start();
    let run = format!("x{:x}", std::process::id());
    for i in 0..7 {
        chat(
            &gw,
            if i % 2 == 0 { "chat" } else { "big" },
            &format!("{run}-{i}"),
            "=1+2",
            None,
        )
        .await;
    }
    let cookie = login(&gw, ADMIN).await;
    story(&gw, &cookie, &format!("{run}-6")).await;
    let (s, csv, _) = page(&gw, &cookie, "requests.csv?model=small&user=ada").await;
    assert_eq!(s, 200);
    let mut rd = csv::Reader::from_reader(csv.as_bytes());
    let headers = rd.headers().unwrap().clone();
    assert_eq!(&headers[0], "request_id");
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    let model = headers.iter().position(|h| h == "model").unwrap();
    assert!(rows.iter().all(|r| &r[model] == "small"));
    no_secrets(&csv);
    let (s, jsonl, _) = page(&gw, &cookie, "requests.jsonl?model=large").await;
    assert_eq!(s, 200);
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l["model"] == "large"));
    no_secrets(&jsonl);
}

#[tokio::test]
async fn logging_out_needs_the_sessions_csrf_token() {
    let gw = start();
    let cookie = login(&gw, ADMIN).await;
    let (_, html, _) = page(&gw, &cookie, "requests").await;
    let csrf = csrf_of(&html);
    let other = login(&gw, ADMIN).await;
    let (_, other_html, _) = page(&gw, &other, "requests").await;
    let post = |c: String, body: String| {
        let url = format!("{}/ui/logout", gw.url);
        async move {
            browser()
                .post(url)
                .header("cookie", c)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(post(cookie.clone(), String::new()).await.status(), 403);
    // Another session's token is not this one's.
    assert_eq!(
        post(cookie.clone(), format!("csrf={}", csrf_of(&other_html)))
            .await
            .status(),
        403
    );
    let r = post(cookie.clone(), format!("csrf={}", urlencode(&csrf))).await;
    assert_eq!(r.status(), 303);
    let set = r.headers()["set-cookie"].to_str().unwrap();
    assert!(set.contains("Max-Age=0"), "{set}");
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn an_open_gateway_opens_the_console_too() {
    let gw = Gateway::start(
        r#"
[providers.sim]
kind = "mock"
models = ["small"]
[routes.chat]
targets = [{ provider = "sim", model = "small" }]
"#,
    );
    let r = bare(&gw, "requests").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("set-cookie").is_some());
    // `/ui` itself and `/ui/`: each redirect resolves to `/ui/overview`.
    let r = browser()
        .get(format!("{}/ui", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "ui/overview");
    let r = bare(&gw, "").await;
    assert_eq!(r.headers()["location"], "overview");
}

fn greet(tag: &str) -> String {
    format!(
        r#"name = "greet"
model = "sim/echo"
[variables]
who = {{ type = "string" }}
[[messages]]
role = "user"
template = "{tag} hello {{{{ who }}}}"
"#
    )
}

/// What the next call of `greet` in prod answers with.
async fn greet_now(gw: &Gateway) -> String {
    let r = support::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-llmop-env", "prod")
        .json(&json!({"model": "feature/greet", "metadata": {"who": "ada"}, "messages": []}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{v}"))
        .to_string()
}

async fn form_post(
    gw: &Gateway,
    cookie: &str,
    path: &str,
    body: &[(&str, &str)],
) -> (u16, String, Option<String>) {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in body {
        s.append_pair(k, v);
    }
    let r = browser()
        .post(format!("{}/ui/{path}", gw.url))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(s.finish())
        .send()
        .await
        .unwrap();
    seen(r).await
}

/// Deploy and roll back from the console: the very next call is served by the version
/// deployed; every change carries the session's CSRF token and a reason, and lands in
/// the audited history as the console's.
#[tokio::test]
async fn deploy_and_roll_back_a_feature_from_the_console() {
    let gw = Gateway::start("[providers.sim]\nkind = \"mock\"\n");
    assert_eq!(gw.push_feature(&greet("V1")).await, 1);
    assert_eq!(gw.push_feature(&greet("V2")).await, 2);
    // An open gateway's console issues a session on the first visit.
    let r = bare(&gw, "features").await;
    let cookie = issued(&r);
    let list = r.text().await.unwrap();
    assert!(
        list.contains("greet") && list.contains("not deployed"),
        "{list}"
    );
    let (s, html, _) = page(&gw, &cookie, "features/greet").await;
    assert_eq!(s, 200);
    let csrf = csrf_of(&html);

    let deploy = |v: &'static str, reason: &'static str, csrf: String| {
        let gw = &gw;
        let cookie = cookie.clone();
        async move {
            form_post(
                gw,
                &cookie,
                "features/greet/deploy",
                &[
                    ("csrf", &csrf),
                    ("env", "prod"),
                    ("version", v),
                    ("reason", reason),
                ],
            )
            .await
        }
    };
    // No CSRF token, no change.
    let (s, _, _) = deploy("1", "first", String::new()).await;
    assert_eq!(s, 403);
    // No reason, no change.
    let (s, body, _) = deploy("1", "", csrf.clone()).await;
    assert_eq!(s, 400);
    assert!(body.contains("needs a reason"), "{body}");
    let (s, _, loc) = deploy("1", "first light", csrf.clone()).await;
    assert_eq!(s, 303);
    assert_eq!(loc.as_deref(), Some("../greet?done=deployed+to+prod"));
    assert!(greet_now(&gw).await.starts_with("V1"));
    let (s, _, _) = deploy("2", "new greeting", csrf.clone()).await;
    assert_eq!(s, 303);
    assert!(greet_now(&gw).await.starts_with("V2"));
    // A version this feature does not have: the admin API's refusal, shown on the page.
    let (s, body, _) = deploy("9", "typo", csrf.clone()).await;
    assert!(s >= 400, "{s}");
    assert!(body.contains("class=\"error\""), "{body}");
    // Roll back: the version before.
    let (s, _, loc) = form_post(
        &gw,
        &cookie,
        "features/greet/rollback",
        &[
            ("csrf", &csrf),
            ("env", "prod"),
            ("reason", "customers prefer V1"),
        ],
    )
    .await;
    assert_eq!(
        (s, loc.as_deref()),
        (303, Some("../greet?done=rolled+back+prod"))
    );
    assert!(greet_now(&gw).await.starts_with("V1"));
    // The audited history says who and why; the diff shows what changed.
    let (_, html, _) = page(&gw, &cookie, "features/greet?diff=1..2").await;
    assert!(html.contains("customers prefer V1") && html.contains("new greeting"));
    assert!(html.contains("admin-api:console"), "{html}");
    assert!(
        html.contains("-template = &quot;V1") || html.contains("-template = \"V1"),
        "{html}"
    );
    assert!(
        html.contains("+template = &quot;V2") || html.contains("+template = \"V2"),
        "{html}"
    );
    // Circuits render (no breaker configured here).
    let (s, html, _) = page(&gw, &cookie, "circuits").await;
    assert_eq!(s, 200);
    assert!(html.contains("No route target has a circuit breaker"));
}

/// A read-only console token reads features but cannot change them.
#[tokio::test]
async fn a_viewer_cannot_deploy() {
    let gw = start();
    let r = support::client()
        .post(format!("{}/admin/features", gw.url))
        .bearer_auth(ADMIN)
        .body(greet("V1").replace("sim/echo", "sim/small"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let viewer = login(&gw, VIEWER).await;
    let (s, html, _) = page(&gw, &viewer, "features/greet").await;
    assert_eq!(s, 200);
    assert!(
        !html.contains("Deploy</button>"),
        "no deploy form for a viewer"
    );
    let csrf = csrf_of(&html);
    let (s, _, _) = form_post(
        &gw,
        &viewer,
        "features/greet/deploy",
        &[
            ("csrf", &csrf),
            ("env", "prod"),
            ("version", "1"),
            ("reason", "x"),
        ],
    )
    .await;
    assert_eq!(s, 403);
    no_secrets(&html);
}

/// Without a store the console says so, on every page that reads records.
#[tokio::test]
async fn without_a_store_the_console_says_recording_is_off() {
    let gw = Gateway::start("[store]\nenabled = false\n[providers.sim]\nkind = \"mock\"\n");
    for path in ["requests", "requests/x", "sessions/s"] {
        let r = bare(&gw, path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.text().await.unwrap().contains("Recording is off"),
            "{path}"
        );
    }
}

/// Budgets: spend in the window against the limits, burn and projection, from the
/// records.
#[tokio::test]
async fn the_budgets_page_shows_spend_against_limits() {
    let gw = Gateway::start(
        r#"
[providers.sim]
kind = "mock"
[prices."sim/*"]
input = 100.0
output = 100.0
[[budgets]]
scope = "global"
window = "month"
soft_usd = 0.0001
hard_usd = 1000
"#,
    );
    let r = support::client()
        .post(format!("{}/v1/chat/completions", gw.url))
        .header("x-request-id", "budget-1")
        .json(&json!({"model": "sim/echo", "messages": [{"role": "user", "content": "spend a little"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = bare(&gw, "budgets").await;
    let cookie = issued(&r);
    story(&gw, &cookie, "budget-1").await;
    let (s, html, _) = page(&gw, &cookie, "budgets").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("<td>global</td>") && html.contains("<td>month</td>"),
        "{html}"
    );
    assert!(html.contains("$1000.0000"), "the hard limit: {html}");
    assert!(
        html.contains("class=\"warn\""),
        "past the soft limit: {html}"
    );
    assert!(html.contains("<meter"), "{html}");
}

/// The overview counts what happened in the range: calls, errors, a fallback, budget
/// refusals and cost, broken down by model and by user, linked to the calls.
#[tokio::test]
async fn the_overview_shows_calls_errors_fallbacks_and_refusals() {
    let gw = Gateway::start(
        r#"
[providers.sim]
kind = "mock"
[providers.down]
kind = "mock"
error_rate = 1.0
error_status = 503
[prices."sim/*"]
input = 1.0
output = 1.0
[routes.chain]
targets = [{ provider = "down", model = "primary" }, { provider = "sim", model = "backup" }]
[routes.broken]
targets = [{ provider = "down", model = "primary" }]
[[budgets]]
scope = "user:mallory"
window = "day"
hard_usd = 0.000001
"#,
    );
    let call = |model: &str, user: &str, id: String| {
        let gw_url = gw.url.clone();
        let model = model.to_string();
        let user = user.to_string();
        async move {
            support::client()
                .post(format!("{gw_url}/v1/chat/completions"))
                .header("x-request-id", id)
                .header("x-llmop-user", user)
                .json(&json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for i in 0..3 {
        assert_eq!(call("sim/echo", "ada", format!("ov-ok-{i}")).await, 200);
    }
    assert_eq!(call("chain", "ada", "ov-fallback".into()).await, 200);
    assert_ne!(call("broken", "bob", "ov-broken".into()).await, 200);
    // Mallory's tiny budget refuses her (at the latest once her first call spent it).
    let mut refused = 0;
    for i in 0..3 {
        if call("sim/echo", "mallory", format!("ov-m-{i}")).await == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 2, "{refused}");
    let r = bare(&gw, "overview").await;
    let cookie = issued(&r);
    story(&gw, &cookie, "ov-m-2").await; // every record is stored
    let (s, html, _) = page(&gw, &cookie, "overview?range=1h&by=model").await;
    assert_eq!(s, 200, "{html}");
    let dd = |label: &str| -> String {
        let at = html
            .find(&format!("<dt>{label}</dt>"))
            .unwrap_or_else(|| panic!("{label}: {html}"));
        let rest = &html[at..];
        let dd = &rest[rest.find("<dd").unwrap()..];
        dd[dd.find('>').unwrap() + 1..dd.find("</dd>").unwrap()].to_string()
    };
    assert_eq!(dd("Calls"), "8");
    assert!(
        dd("Errors").starts_with(&format!("{} ", 1 + refused)),
        "{}",
        dd("Errors")
    );
    assert_eq!(dd("Fallbacks"), "1");
    assert_eq!(dd("Budget refusals"), refused.to_string());
    assert!(
        dd("Cost").starts_with('$') && dd("Cost") != "$0",
        "{}",
        dd("Cost")
    );
    assert_eq!(
        html.matches("<svg class=\"chart\"").count(),
        3,
        "three charts"
    );
    // The breakdown by model links to the overview narrowed to it, and to its calls.
    assert!(
        html.contains(">echo</a>") && html.contains(">backup</a>"),
        "{html}"
    );
    assert!(
        html.contains("overview?by=model&amp;model=echo&amp;range=1h"),
        "{html}"
    );
    assert!(html.contains("requests?model=echo&amp;since="), "{html}");
    // Narrowed to one user (read from that user's records): only hers.
    let (s, html, _) = page(&gw, &cookie, "overview?range=1h&user=mallory").await;
    assert_eq!(s, 200);
    assert!(html.contains("<dd id=\"total-calls\">3</dd>"), "{html}");
    assert!(html.contains("from the user's records"));
    // By user: from the users' rollup.
    let (_, html, _) = page(&gw, &cookie, "overview?range=1h&by=user").await;
    assert!(
        html.contains(">ada</a>") && html.contains(">mallory</a>") && html.contains(">bob</a>")
    );
    // A wrong parameter says which and why.
    let (s, html, _) = page(&gw, &cookie, "overview?range=2y").await;
    assert_eq!(s, 400);
    assert!(html.contains("range: `2y`"), "{html}");
    // An older range holds nothing.
    let (s, html, _) = page(&gw, &cookie, "overview?since=2020-01-01&until=2020-01-02").await;
    assert_eq!(s, 200);
    assert!(
        html.contains("<dd id=\"total-calls\">0</dd>") && html.contains("No calls in this range.")
    );
    no_secrets(&html);
}

/// Replay from a call's page: an admin asks again on another model (a new call,
/// recorded with `replay_of`, made without a client key even once keys are in force)
/// and sees both answers side by side; a viewer and a form without the CSRF token are
/// refused.
#[tokio::test]
async fn replay_a_call_on_another_model_and_compare() {
    let gw = start();
    let run = format!("r{:x}", std::process::id());
    let id = format!("{run}-orig");
    chat(&gw, "chat", &id, "replay me", None).await;
    let cookie = login(&gw, ADMIN).await;
    let html = story(&gw, &cookie, &id).await;
    assert!(html.contains(">Replay</button>"), "{html}");
    let csrf = csrf_of(&html);
    // Keys in force: a client without one is refused; the console's replay is not.
    let o = support::llmop(&[
        "keys",
        "create",
        "--name",
        "app",
        "--store",
        &gw.store_url(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = support::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "keys never enforced");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let path = format!("requests/{id}/replay");
    let (s, _, _) = form_post(&gw, &cookie, &path, &[("model", "big")]).await;
    assert_eq!(s, 403, "no CSRF token");
    let viewer = login(&gw, VIEWER).await;
    let vcsrf = csrf_of(&page(&gw, &viewer, &format!("requests/{id}")).await.1);
    let (s, _, _) = form_post(&gw, &viewer, &path, &[("csrf", &vcsrf), ("model", "big")]).await;
    assert_eq!(s, 403, "a viewer cannot replay");
    let (s, body, loc) = form_post(&gw, &cookie, &path, &[("csrf", &csrf), ("model", "big")]).await;
    assert_eq!(s, 303, "{body}");
    let loc = loc.unwrap();
    let new_id = loc.strip_prefix("replays/").unwrap().to_string();
    assert!(new_id.starts_with("replay-"), "{loc}");
    let (s, cmp, _) = page(&gw, &cookie, &format!("requests/{id}/{loc}")).await;
    assert_eq!(s, 200, "{cmp}");
    assert!(
        cmp.contains("sim / small") && cmp.contains("sim / large"),
        "{cmp}"
    );
    assert!(cmp.contains(&id) && cmp.contains(&new_id));
    let replayed: Value = support::client()
        .get(format!("{}/v1/requests/{new_id}", gw.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(replayed["replay_of"], id.as_str());
    assert_eq!(replayed["model"], "large");
    assert!(
        replayed["key_id"].is_null(),
        "an operator's call: {replayed}"
    );
    // A record that is not a replay of this call is not shown as one.
    let (s, _, _) = page(&gw, &cookie, &format!("requests/{id}/replays/{id}")).await;
    assert_eq!(s, 404);
    // A replay the gateway refuses says why.
    let (s, body, _) = form_post(&gw, &cookie, &path, &[("csrf", &csrf), ("version", "2")]).await;
    assert_eq!(s, 400);
    assert!(body.contains("not a feature call"), "{body}");
    no_secrets(&cmp);
}

/// The budgets page lists each key's own limits against its use from the records.
#[tokio::test]
async fn the_budgets_page_shows_each_keys_limits() {
    let gw = start();
    let o = support::llmop(&[
        "keys",
        "create",
        "--name",
        "mobile-app",
        "--rpm",
        "5",
        "--budget-usd-day",
        "1",
        "--store",
        &gw.store_url(),
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let (id, key) = (
        v["id"].as_str().unwrap().to_string(),
        v["key"].as_str().unwrap().to_string(),
    );
    // Once the gateway has read the key (a call without one is refused): two with it.
    for _ in 0..100 {
        let r = support::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ok = 0;
    for i in 0..2 {
        let r = support::client()
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(&key)
            .header("x-request-id", format!("lim-{i}"))
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 2);
    let cookie = login(&gw, ADMIN).await;
    let mut html = String::new();
    for _ in 0..50 {
        html = page(&gw, &cookie, "budgets").await.1;
        if html.contains("<td>2 of 5</td>") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(html.contains(&format!("<code>{id}</code>")), "{html}");
    assert!(html.contains("<td>mobile-app</td>"), "{html}");
    assert!(
        html.contains("<td>2 of 5</td>"),
        "two calls of five a minute: {html}"
    );
    assert!(!html.contains(&key), "never the key itself");
    no_secrets(&html);
}
