"""The official `openai` Python SDK against llmop: only base_url and key change."""

import json
import time
import urllib.error
import urllib.request

import openai
import pytest


@pytest.fixture
def client(gateway_url):
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="sk-anything", max_retries=0, timeout=20)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"],
        },
    },
}


def test_chat(client):
    raw = client.chat.completions.with_raw_response.create(
        model="sim/echo", messages=[{"role": "user", "content": "hello gateway"}], user="u-1"
    )
    assert raw.headers["x-request-id"]
    resp = raw.parse()
    assert resp.choices[0].message.content == "hello gateway"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.completion_tokens == 2
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_route_and_models(client):
    resp = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "via route"}])
    assert resp.choices[0].message.content == "via route"
    ids = [m.id for m in client.models.list()]
    assert "chat" in ids and "sim/echo" in ids
    assert client.models.retrieve("sim/echo").id == "sim/echo"
    assert client.models.retrieve("chat").owned_by == "llmop-route"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nobody/x")


def test_streaming_with_usage(client):
    stream = client.chat.completions.create(
        model="sim/echo",
        messages=[{"role": "user", "content": "stream these words please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    assert text == "stream these words please"
    assert finish == "stop"
    assert usage.completion_tokens == 4


def test_tool_call_round_trip(client):
    messages = [{"role": "user", "content": "What's the weather in Paris?"}]
    first = client.chat.completions.create(model="sim/echo", messages=messages, tools=[WEATHER_TOOL])
    assert first.choices[0].finish_reason == "tool_calls"
    call = first.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and args["unit"] in ("c", "f")
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"})
    second = client.chat.completions.create(model="sim/echo", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "The tool returned: 18C and sunny"


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(
        model="sim/echo",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    name, args = "", ""
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name += tc.function.name or ""
            args += tc.function.arguments or ""
    assert name == "get_weather"
    assert "city" in json.loads(args)


def test_json_schema_output(client):
    schema = {
        "type": "object",
        "properties": {"title": {"type": "string"}, "priority": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["title", "priority"],
        "additionalProperties": False,
    }
    resp = client.chat.completions.create(
        model="sim/echo",
        messages=[{"role": "user", "content": "Summarize the ticket"}],
        response_format={"type": "json_schema", "json_schema": {"name": "ticket", "schema": schema, "strict": True}},
    )
    data = json.loads(resp.choices[0].message.content)
    assert isinstance(data["title"], str)
    assert 1 <= data["priority"] <= 5


def test_structured_parse_helper(client):
    from pydantic import BaseModel

    class Ticket(BaseModel):
        title: str
        priority: int

    resp = client.chat.completions.parse(
        model="sim/echo", messages=[{"role": "user", "content": "ticket"}], response_format=Ticket
    )
    parsed = resp.choices[0].message.parsed
    assert isinstance(parsed, Ticket)


def test_errors_are_typed(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="nowhere/x", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    assert e.value.body["code"] == "model_not_found"
    assert e.value.request_id

    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="ratelimited/x", messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "1"

    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="broken/x", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 502

    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sim/echo", messages=[])
    assert e.value.body["param"] == "messages"


def test_request_id_leads_to_the_record(client, gateway_url):
    resp = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": "find me later"}],
        extra_headers={"x-llmop-user": "py-user", "x-llmop-tags": "sdk=python"},
    )
    # The SDK exposes the x-request-id of the call: what a customer would quote.
    rid = resp._request_id
    assert rid
    record = None
    for _ in range(100):
        status, record = _http(f"{gateway_url}/v1/requests/{rid}")
        if status == 200:
            break
        time.sleep(0.02)
    assert status == 200, "record committed"
    assert record["user"] == "py-user"
    assert record["tags"] == {"sdk": "python"}
    assert record["output_text"] == resp.choices[0].message.content
    assert record["output_tokens"] == resp.usage.completion_tokens
    assert record["input_messages"] == [{"role": "user", "content": "find me later"}]
    status, _ = _http(f"{gateway_url}/v1/requests/{rid}/feedback", {"score": 1, "label": "good"})
    assert status == 200
    assert _http(f"{gateway_url}/v1/requests/{rid}")[1]["feedback"]["label"] == "good"


def _http(url, body=None):
    """GET (or POST `body` as JSON); returns (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


GREET = """name = "sdk-greet"
model = "sim/echo"
[variables]
who = { type = "string" }
[[messages]]
role = "user"
template = "VERSION {{ version }} hello {{ who }}"
""".replace("{{ version }}", "{v}")


def _push(gateway_url, text):
    req = urllib.request.Request(f"{gateway_url}/admin/features", data=text.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["version"]


def test_feature_versions_deploy_and_rollback(client, gateway_url):
    assert _push(gateway_url, GREET.replace("{v}", "1")) == 1
    assert _push(gateway_url, GREET.replace("{v}", "2")) == 2
    for v in (1, 2):
        assert _http(f"{gateway_url}/admin/features/sdk-greet/deploy", {"env": "prod", "version": v})[0] == 200

    def call():
        raw = client.chat.completions.with_raw_response.create(
            model="feature/sdk-greet", messages=[], metadata={"who": "Ann"}
        )
        return raw.headers["x-llmop-feature-version"], raw.parse().choices[0].message.content

    assert call() == ("2", "VERSION 2 hello Ann")
    assert _http(f"{gateway_url}/admin/features/sdk-greet/rollback", {"env": "prod", "reason": "sdk test"})[0] == 200
    # The very next request gets the previous version.
    assert call() == ("1", "VERSION 1 hello Ann")
    # A missing variable is a typed 400 naming it.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="feature/sdk-greet", messages=[], metadata={"other": "x"})
    assert e.value.body["code"] == "missing_variable"
    assert e.value.body["param"] == "metadata.who"
