"""The console in a real headless Chromium: log in, find a call by the id a client
got and open its story, filter, page and export; every page free of console errors;
screenshots saved under target/console-screenshots."""

import csv
import io
import time
import uuid

from conftest import ADMIN, admin_push, chat, invoke, shot


def wait_for_record(page, url, rid):
    """Records land moments after the response: reload the story until it shows."""
    deadline = time.time() + 5
    while True:
        resp = page.goto(f"{url}/ui/requests/{rid}")
        if resp.status == 200:
            return
        assert resp.status == 404, resp.status
        assert time.time() < deadline, f"no record of {rid}"
        time.sleep(0.05)


def test_log_in_find_a_call_by_its_id_filter_and_export(gateway, page):
    run = uuid.uuid4().hex[:8]
    order = f"order-{run}"
    ids = [
        chat(gateway, "support", f"{order}-1", "Where is my parcel?", session=f"sess-{run}"),
        chat(gateway, "triage", f"{order}-2", "Classify: refund request", session=f"sess-{run}"),
        chat(gateway, "support", f"{order}-3", "<b>bold</b> & <script>x()</script>"),
    ]

    # Without a session, every page leads to the login.
    page.goto(f"{gateway}/ui/requests")
    assert "/ui/login" in page.url
    shot(page, "login")
    page.fill("input[name=token]", "not-the-token")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text().startswith("That is not")
    page.fill("input[name=token]", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/requests")

    wait_for_record(page, gateway, ids[2])
    page.goto(f"{gateway}/ui/requests")
    assert page.locator("table.requests tbody tr").count() >= 3
    shot(page, "requests")

    # The search box takes the id the customer quoted: straight to the call's story.
    page.fill("header input[name=q]", ids[1])
    page.press("header input[name=q]", "Enter")
    page.wait_for_url(f"**/ui/requests/{ids[1]}")
    assert ids[1] in page.locator("h1").inner_text()
    assert "sim / large" in page.locator("dl.facts").inner_text()
    assert "Classify: refund request" in page.locator(".messages").inner_text()
    shot(page, "call")

    # Its session, oldest call first, with the running cost.
    page.click(f"dl.facts a:has-text('sess-{run}')")
    page.wait_for_url(f"**/ui/sessions/sess-{run}")
    rows = page.locator("table.requests tbody tr")
    assert rows.count() == 2
    assert ids[0] in rows.nth(0).inner_text()
    shot(page, "session")

    # Recorded markup is shown as text.
    page.goto(f"{gateway}/ui/requests/{ids[2]}")
    assert "<b>bold</b> & <script>x()</script>" in page.locator(".messages").inner_text()
    assert page.locator(".messages b").count() == 0

    # Filters live in the URL: a filtered view is a bookmark.
    page.goto(f"{gateway}/ui/requests")
    page.fill("form.filters input[name=model]", "small")
    page.fill("form.filters input[name=user]", "ada")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/ui/requests?*model=small*")
    text = page.locator("table.requests tbody").inner_text()
    assert ids[0] in text and ids[2] in text and ids[1] not in text
    bookmark = page.url
    page.goto(f"{gateway}/ui/requests")
    page.goto(bookmark)
    assert page.locator("form.filters input[name=model]").input_value() == "small"

    # Export the filtered view.
    with page.expect_download() as d:
        page.click("a:has-text('CSV')")
    body = open(d.value.path(), encoding="utf-8").read()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert {r["request_id"] for r in rows} >= {ids[0], ids[2]}
    assert all(r["model"] == "small" for r in rows)
    assert ADMIN not in body

    # The overview: totals, three charts, a breakdown by model that narrows the view
    # and leads to the calls.
    page.goto(f"{gateway}/ui/overview?range=1h&by=model")
    assert int(page.locator("#total-calls").inner_text()) >= 3
    assert page.locator("svg.chart").count() == 3
    assert page.locator("svg.chart rect.s-ok").count() >= 1
    shot(page, "overview")
    page.click("table.groups a:text-is('small')")
    page.wait_for_url("**/ui/overview?*model=small*")
    assert page.locator("span.tag:has-text('model = small')").count() == 1
    page.click("table.groups tr:has-text('small') a:text-is('calls')")
    page.wait_for_url("**/ui/requests?*model=small*")
    text = page.locator("table.requests tbody").inner_text()
    assert ids[0] in text and ids[1] not in text

    # Nothing on any page shows the admin token.
    for path in ["overview", "requests", f"requests/{ids[0]}", f"sessions/sess-{run}"]:
        page.goto(f"{gateway}/ui/{path}")
        assert ADMIN not in page.content()

    # Logging out ends the session.
    page.click("form.logout button")
    page.wait_for_url("**/ui/login")
    page.goto(f"{gateway}/ui/requests")
    assert "/ui/login" in page.url


FEATURE = """name = "{name}"
model = "sim/small"
[variables]
who = {{ type = "string" }}
[[messages]]
role = "user"
template = "{tag} hello {{{{ who }}}}"
"""


def log_in(page, url):
    page.goto(f"{url}/ui/login")
    page.fill("input[name=token]", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url("**/ui/overview")


def test_deploy_and_roll_back_a_feature_and_the_next_call_follows(gateway, page):
    name = f"greet_{uuid.uuid4().hex[:6]}"
    assert admin_push(gateway, FEATURE.format(name=name, tag="V1")) == 1
    assert admin_push(gateway, FEATURE.format(name=name, tag="V2")) == 2
    log_in(page, gateway)
    page.click("nav a:has-text('Features')")
    page.click(f"a:has-text('{name}')")
    page.wait_for_url(f"**/ui/features/{name}")

    def deploy(version, reason):
        page.fill("form.deploy input[name=env]", "prod")
        page.select_option("form.deploy select[name=version]", str(version))
        page.fill("form.deploy input[name=reason]", reason)
        page.click("form.deploy button[type=submit]")
        page.wait_for_url(f"**/ui/features/{name}?done=*")
        assert "Done: deployed to prod" in page.locator("p.ok").inner_text()

    deploy(1, "first light")
    assert invoke(gateway, name, "ada").startswith("V1")
    deploy(2, "a warmer greeting")
    assert invoke(gateway, name, "ada").startswith("V2")
    assert page.locator("table.envs td.serves").inner_text() == "v2"
    shot(page, "feature")

    # Roll back, with a reason: the very next call is served by version 1 again.
    page.fill("form.rollback input[name=reason]", "customers preferred V1")
    page.click("form.rollback button[type=submit]")
    page.wait_for_url(f"**/ui/features/{name}?done=*")
    assert invoke(gateway, name, "ada").startswith("V1")
    history = page.locator("table.history").inner_text()
    assert "customers preferred V1" in history and "a warmer greeting" in history

    # What changed between the two versions.
    page.click("a:has-text('diff with 1')")
    assert "V2 hello" in page.locator("pre.diff").inner_text()

    # Without a reason the browser does not even send the form (required), and the
    # server refuses one sent without it.
    page.fill("form.deploy input[name=reason]", "")
    page.click("form.deploy button[type=submit]")
    assert invoke(gateway, name, "ada").startswith("V1")
