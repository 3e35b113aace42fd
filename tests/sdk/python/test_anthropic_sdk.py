"""The official `anthropic` Python SDK against llmop: only base_url and key change."""

import anthropic
import pytest


@pytest.fixture
def client(gateway_url):
    return anthropic.Anthropic(base_url=gateway_url, api_key="sk-ant-anything", max_retries=0, timeout=20)


TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def test_message(client):
    msg = client.messages.create(
        model="sim/echo",
        max_tokens=100,
        system="You are terse.",
        messages=[{"role": "user", "content": "hello claude clients"}],
        metadata={"user_id": "u-7"},
    )
    assert msg.type == "message"
    assert msg.content[0].text == "hello claude clients"
    assert msg.stop_reason == "end_turn"
    assert msg.usage.output_tokens == 4  # o200k_base: hello| cl|aude| clients
    assert msg.usage.input_tokens > 0


def test_max_tokens_is_honoured(client):
    msg = client.messages.create(
        model="sim/echo", max_tokens=2, messages=[{"role": "user", "content": "one two three four five"}]
    )
    assert msg.stop_reason == "max_tokens"
    assert msg.usage.output_tokens == 2


def test_streaming(client):
    with client.messages.stream(
        model="sim/echo", max_tokens=100, messages=[{"role": "user", "content": "streamed through llmop"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed through llmop"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0


def test_tool_round_trip(client):
    messages = [{"role": "user", "content": "Weather in Oslo?"}]
    first = client.messages.create(model="sim/echo", max_tokens=200, tools=[TOOL], messages=messages)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and isinstance(use.input["city"], str)
    messages.append({"role": "assistant", "content": first.content})
    messages.append({"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "-3C, snow"}]})
    second = client.messages.create(model="sim/echo", max_tokens=200, tools=[TOOL], messages=messages)
    assert second.content[0].text == "The tool returned: -3C, snow"


def test_streamed_tool_use(client):
    with client.messages.stream(
        model="sim/echo",
        max_tokens=200,
        tools=[TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
        messages=[{"role": "user", "content": "Weather?"}],
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == "get_weather"
    assert "city" in use.input


def test_errors_are_typed(client):
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="nowhere/x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(model="ratelimited/x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="sim/echo", max_tokens=5, messages=[])
