"""The official `openai` SDK's Responses API against the real binary: whole and
streamed (typed events), a function-tool round trip, previous_response_id continued on
a second gateway sharing the record store, structured output with .parse, and a
stored response read back."""

import json

import openai
import pydantic
import pytest

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def make(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="sk-anything", max_retries=0, timeout=20)


@pytest.fixture
def client(gateway_url):
    return make(gateway_url)


def test_whole_response(client):
    r = client.responses.create(model="sim/echo", input="hello responses", instructions="be brief")
    assert r.id.startswith("resp_")
    assert r.object == "response"
    assert r.status == "completed"
    assert "hello responses" in r.output_text
    assert r.output[0].type == "message"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "be brief"
    # A route works like on chat completions.
    assert client.responses.create(model="chat", input="via route").output_text


def test_streamed_typed_events(client):
    types, deltas, final = [], [], None
    with client.responses.create(model="sim/echo", input="stream me please", stream=True) as stream:
        for ev in stream:
            types.append(ev.type)
            if ev.type == "response.output_text.delta":
                deltas.append(ev.delta)
            if ev.type == "response.completed":
                final = ev.response
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert "response.output_item.added" in types and "response.output_text.done" in types
    assert final is not None and final.output_text == "".join(deltas)
    assert "stream me please" in final.output_text
    assert final.usage.output_tokens > 0


def test_stream_helper_accumulates(client):
    with client.responses.stream(model="sim/echo", input="helper stream") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert "helper stream" in final.output_text


def test_function_tool_round_trip(client):
    first = client.responses.create(model="sim/echo", input="Weather in Oslo?", tools=[WEATHER])
    calls = [o for o in first.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert "city" in json.loads(calls[0].arguments)
    # The conversation sent back whole: input, the model's output items, the result.
    second = client.responses.create(
        model="sim/echo",
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "rainy, 8C"},
        ],
        tools=[WEATHER],
    )
    assert "rainy, 8C" in second.output_text


def test_streamed_function_call(client):
    args, done = "", None
    with client.responses.create(model="sim/echo", input="Weather?", tools=[WEATHER], stream=True) as s:
        for ev in s:
            if ev.type == "response.function_call_arguments.delta":
                args += ev.delta
            if ev.type == "response.output_item.done" and ev.item.type == "function_call":
                done = ev.item
    assert done is not None and done.arguments == args and json.loads(args)


def test_previous_response_id_on_another_replica(client, second_gateway_url):
    first = client.responses.create(
        model="sim/echo", input="Weather in Oslo?", tools=[WEATHER], instructions="first instructions"
    )
    call = next(o for o in first.output if o.type == "function_call")
    # Continued on the other replica: the conversation comes from the shared records.
    other = make(second_gateway_url)
    second = other.responses.create(
        model="sim/echo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21C"}],
        tools=[WEATHER],
    )
    assert "sunny, 21C" in second.output_text
    assert second.previous_response_id == first.id
    # And a third turn continues the second.
    third = other.responses.create(model="sim/echo", previous_response_id=second.id, input="thanks")
    assert "thanks" in third.output_text
    # Unknown and unstored responses cannot be continued.
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="sim/echo", previous_response_id="resp_nope", input="x")
    assert e.value.code == "previous_response_not_found"
    unstored = client.responses.create(model="sim/echo", input="forget me", store=False)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="sim/echo", previous_response_id=unstored.id, input="x")
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(unstored.id)


class Ticket(pydantic.BaseModel):
    title: str
    priority: int


def test_structured_output_parse(client):
    r = client.responses.parse(model="sim/echo", input="file a ticket", text_format=Ticket)
    assert isinstance(r.output_parsed, Ticket)
    assert isinstance(r.output_parsed.priority, int)


def test_retrieve_a_stored_response(client):
    r = client.responses.create(model="sim/echo", input="keep me")
    got = client.responses.retrieve(r.id)
    assert got.id == r.id
    assert got.output_text == r.output_text
    assert got.usage.output_tokens == r.usage.output_tokens


def test_unsupported_is_refused_by_name(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="sim/echo", input="x", tools=[{"type": "web_search"}])
    assert e.value.param == "tools[0].type"
