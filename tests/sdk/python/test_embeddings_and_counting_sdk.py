"""The official SDKs' embeddings and token counting against the real binary: OpenAI
`embeddings.create` (single, batch, `dimensions`, the SDK's default base64 encoding and
explicit floats) and Anthropic `messages.count_tokens` (llmop's estimate for the mock,
said by a header)."""

import math

import anthropic
import openai
import pytest


@pytest.fixture
def oa(gateway_url):
    return openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="sk-anything", max_retries=0, timeout=20)


def test_single_embedding(oa):
    r = oa.embeddings.create(model="vectors", input="the quick brown fox")
    assert len(r.data) == 1
    v = r.data[0].embedding
    assert len(v) == 1536
    assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-4)
    assert r.usage.prompt_tokens > 0


def test_batch_with_dimensions(oa):
    texts = ["the cat sat on the mat", "the cat sat on a mat", "quarterly tax filing"]
    r = oa.embeddings.create(model="sim/embed", input=texts, dimensions=32)
    assert [d.index for d in r.data] == [0, 1, 2]
    assert all(len(d.embedding) == 32 for d in r.data)
    a, b, c = (d.embedding for d in r.data)
    dot = lambda x, y: sum(p * q for p, q in zip(x, y))
    assert dot(a, b) > dot(a, c)
    floats = oa.embeddings.create(model="sim/embed", input=texts, dimensions=32, encoding_format="float")
    # The SDK's default (base64) and explicit floats carry the same vectors.
    for x, y in zip(r.data, floats.data):
        assert all(math.isclose(p, q, rel_tol=1e-6, abs_tol=1e-7) for p, q in zip(x.embedding, y.embedding))


def test_embedding_errors_are_typed(oa):
    with pytest.raises(openai.BadRequestError) as e:
        oa.embeddings.create(model="vectors", input=[])
    assert e.value.param == "input"
    with pytest.raises(openai.NotFoundError):
        oa.embeddings.create(model="nowhere", input="x")


def test_count_tokens(gateway_url):
    client = anthropic.Anthropic(base_url=gateway_url, api_key="sk-anything", max_retries=0, timeout=20)
    raw = client.messages.with_raw_response.count_tokens(
        model="sim/echo",
        system="be brief",
        messages=[{"role": "user", "content": "how many tokens is this?"}],
    )
    assert raw.headers["x-llmop-token-count"] == "estimate"
    n = raw.parse().input_tokens
    longer = client.messages.count_tokens(
        model="sim/echo",
        system="be brief",
        messages=[{"role": "user", "content": "how many tokens is this? " * 20}],
    ).input_tokens
    assert 0 < n < longer
