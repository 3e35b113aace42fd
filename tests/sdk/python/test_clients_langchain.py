"""A third-party client against the real binary: LangChain (`langchain-openai` on chat
completions and on the Responses API, `langchain-anthropic` on messages): invoke,
stream, a tool round trip, and structured output."""

import pydantic
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return f"rainy in {city}"


class Ticket(pydantic.BaseModel):
    title: str
    priority: int


@pytest.fixture(params=["chat", "responses", "anthropic"])
def llm(request, gateway_url):
    common = dict(api_key="sk-anything", model="sim/echo", max_retries=0, timeout=20)
    if request.param == "anthropic":
        # The Anthropic client appends /v1/... itself.
        return ChatAnthropic(base_url=gateway_url, **common)
    return ChatOpenAI(
        base_url=f"{gateway_url}/v1", use_responses_api=request.param == "responses", **common
    )


def test_invoke(llm):
    m = llm.invoke("hello langchain")
    assert "hello langchain" in m.text
    assert m.usage_metadata["input_tokens"] > 0


def test_stream(llm):
    text = "".join(chunk.text for chunk in llm.stream("stream langchain"))
    assert "stream langchain" in text


def test_tool_round_trip(llm):
    bound = llm.bind_tools([get_weather])
    question = HumanMessage("What is the weather in Oslo?")
    ai = bound.invoke([question])
    assert ai.tool_calls and ai.tool_calls[0]["name"] == "get_weather"
    call = ai.tool_calls[0]
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])
    final = bound.invoke([question, ai, result])
    assert "rainy in" in final.text


def test_structured_output(llm):
    t = llm.with_structured_output(Ticket).invoke("file a ticket")
    assert isinstance(t, Ticket)
    assert isinstance(t.priority, int)
