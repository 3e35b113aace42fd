"""Starts the real llmop binary with an admin token, and a headless Chromium (Debian's,
at /usr/bin/chromium: nothing is downloaded) for the console's browser tests."""

import json
import os
import pathlib
import subprocess
import urllib.request

import pytest
from playwright.sync_api import sync_playwright

ROOT = pathlib.Path(__file__).resolve().parents[2]
ADMIN = "browser-admin-token-0123456789abcdef"
SHOTS = ROOT / "target" / "console-screenshots"

CONFIG = """
[server]
admin_token_env = "LLMOP_BROWSER_ADMIN"

[providers.sim]
kind = "mock"
models = ["small", "large"]

[routes.support]
targets = [{ provider = "sim", model = "small" }]
[routes.triage]
targets = [{ provider = "sim", model = "large" }]
"""


@pytest.fixture(scope="session")
def gateway(tmp_path_factory):
    binary = os.environ.get("LLMOP_BIN", str(ROOT / "target" / "debug" / "llmop"))
    config = tmp_path_factory.mktemp("llmop") / "llmop.toml"
    config.write_text(CONFIG)
    env = dict(os.environ, LLMOP_BROWSER_ADMIN=ADMIN)
    proc = subprocess.Popen(
        [binary, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    line = proc.stdout.readline().strip()
    prefix = "llmop listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise RuntimeError(f"llmop did not start: {line!r}")
    yield line[len(prefix):]
    proc.terminate()
    proc.wait(timeout=15)


def chat(url, route, request_id, text, session=None):
    """One call as an application makes it; returns the request id it was answered with."""
    headers = {"content-type": "application/json", "x-request-id": request_id, "x-llmop-user": "ada"}
    if session:
        headers["x-llmop-session"] = session
    body = json.dumps({"model": route, "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(f"{url}/v1/chat/completions", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=20) as r:
        assert r.status == 200
        return r.headers["x-request-id"]


def admin_push(url, text):
    """Registers a feature version through the admin API; returns its number."""
    req = urllib.request.Request(
        f"{url}/admin/features",
        data=text.encode(),
        headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/toml"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())["version"]


def invoke(url, feature, who):
    """The next call of a feature in prod: its answer's text."""
    body = json.dumps({"model": f"feature/{feature}", "metadata": {"who": who}, "messages": []}).encode()
    req = urllib.request.Request(
        f"{url}/v1/chat/completions",
        data=body,
        headers={"content-type": "application/json", "x-llmop-env": "prod"},
    )
    with urllib.request.urlopen(req, timeout=20) as r:
        return json.loads(r.read())["choices"][0]["message"]["content"]


@pytest.fixture(scope="session")
def browser():
    exe = "/usr/bin/chromium"
    if not os.path.exists(exe):
        raise RuntimeError("Debian's chromium is required (.ci/run installs it): apt-get install chromium chromium-driver")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context; every console error and page error fails the test."""
    ctx = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    pg = ctx.new_page()
    errors = []
    # A page the test asks for on purpose may answer 401 or 404 (a wrong token, a record
    # not committed yet): Chromium logs those documents as "Failed to load resource".
    # Any other console error, any script error, and any failed stylesheet, script or
    # image fails the test.
    pg.on(
        "console",
        lambda m: errors.append(m.text)
        if m.type == "error" and not m.text.startswith("Failed to load resource")
        else None,
    )
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on(
        "response",
        lambda r: errors.append(f"{r.status} {r.url}")
        if r.status >= 400 and r.request.resource_type != "document"
        else None,
    )
    pg.set_default_timeout(10_000)
    yield pg
    ctx.close()
    assert errors == [], f"console errors: {errors}"


def shot(page, name):
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)
