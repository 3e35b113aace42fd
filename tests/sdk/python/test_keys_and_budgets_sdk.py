"""API keys, scopes and budgets as the official SDKs see them: typed errors, real keys."""

import json
import os
import pathlib
import subprocess
import time

import anthropic
import openai
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BINARY = os.environ.get("LLMOP_BIN", str(ROOT / "target" / "debug" / "llmop"))

CONFIG = """
[providers.sim]
kind = "mock"
[providers.other]
kind = "mock"
[prices."sim/*"]
input = 1000.0
output = 1000.0
[features]
refresh_ms = 50
[[budgets]]
scope = "user:*"
hard_usd = 0.2
"""


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    """A gateway of its own with two keys: one for sim/* only."""
    d = tmp_path_factory.mktemp("keyed")
    cfg = d / "llmop.toml"
    cfg.write_text(CONFIG)

    def create(*args):
        out = subprocess.run(
            [BINARY, "keys", "create", "--config", str(cfg), "--json", *args],
            check=True, capture_output=True, text=True,
        ).stdout
        return json.loads(out)["key"]

    full = create("--name", "full")
    scoped = create("--name", "scoped", "--routes", "sim/*")
    proc = subprocess.Popen(
        [BINARY, "serve", "--config", str(cfg), "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("llmop listening on "), line
    yield line[len("llmop listening on "):], full, scoped
    proc.terminate()
    proc.wait(timeout=15)


def oa(url, key):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def test_both_sdks_authenticate_with_a_key(keyed):
    url, full, _ = keyed
    r = oa(url, full).chat.completions.create(model="other/echo", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "hi"
    # The Anthropic SDK sends the key as x-api-key.
    a = anthropic.Anthropic(base_url=url, api_key=full, max_retries=0, timeout=20)
    m = a.messages.create(model="sim/echo", max_tokens=20, messages=[{"role": "user", "content": "hey"}])
    assert m.content[0].text == "hey"


def test_bad_keys_and_scopes_are_typed_errors(keyed):
    url, _, scoped = keyed
    with pytest.raises(openai.AuthenticationError) as e:
        oa(url, "llmop_kbad_nothing").chat.completions.create(model="sim/echo", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "invalid_api_key"
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=url, api_key="nope", max_retries=0).messages.create(
            model="sim/echo", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.PermissionDeniedError) as e:
        oa(url, scoped).chat.completions.create(model="other/echo", messages=[{"role": "user", "content": "x"}])
    assert e.value.body["code"] == "key_not_allowed"
    ids = [m.id for m in oa(url, scoped).models.list()]
    assert "sim/echo" in ids and not any(i.startswith("other/") for i in ids)


def test_a_hard_budget_is_a_rate_limit_error_with_retry_after(keyed):
    url, full, _ = keyed
    client = oa(url, full)
    err = None
    for _ in range(50):
        try:
            raw = client.chat.completions.with_raw_response.create(
                model="sim/echo", max_tokens=20, user="spender",
                messages=[{"role": "user", "content": "spend some money please"}],
            )
            assert float(raw.headers["x-llmop-cost-usd"]) > 0
        except openai.RateLimitError as e:
            err = e
            break
    assert err is not None, "the budget never refused"
    assert err.body["code"] == "budget_exceeded"
    assert "user:spender" in err.body["message"]
    assert int(err.response.headers["retry-after"]) > 0
