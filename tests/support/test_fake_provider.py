"""The fake LLM provider, driven by the real `openai` and `anthropic` SDKs over HTTP."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx2
import openai
import pytest

from tests.support.fake_provider import Call, FakeProvider

USER = "Hello there"
ANSWER = "Simulated answer to: Hello there"  # 32 bytes: 8 completion tokens


@pytest.fixture(scope="module")
def provider() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture
def fake(provider: FakeProvider) -> Iterator[FakeProvider]:
    provider.reset()
    yield provider
    provider.reset()


@pytest.fixture
def oai(fake: FakeProvider) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="test-key", base_url=fake.openai_base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def claude(fake: FakeProvider) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(api_key="test-key", base_url=fake.anthropic_base_url, max_retries=0) as client:
        yield client


@pytest.fixture
def raw(fake: FakeProvider) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=fake.base_url) as client:
        yield client


# --------------------------------------------------------------------------- OpenAI chat


def test_openai_chat_completion(fake: FakeProvider, oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": USER}],
    )

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.system_fingerprint
    assert completion.created > 0
    choice = completion.choices[0]
    assert choice.message.content == ANSWER
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    # ceil((14 + 11 bytes) / 4) + 3 per message
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (13, 8, 21)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert fake.calls[-1].status == 200


def test_openai_answers_the_last_user_message_text_parts_capped_at_200_chars(oai: openai.OpenAI) -> None:
    parts = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "there"}]},
        ],
    )
    assert parts.choices[0].message.content == ANSWER

    long = oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x" * 500}])
    assert long.choices[0].message.content == "Simulated answer to: " + "x" * 200
    assert long.usage is not None
    assert long.usage.completion_tokens == math.ceil(221 / 4)
    assert long.usage.prompt_tokens == 125 + 3


def test_openai_stream_with_usage(fake: FakeProvider, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": USER}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    pieces = [chunk.choices[0].delta.content for chunk in chunks if chunk.choices and chunk.choices[0].delta.content]
    assert len(pieces) >= 3
    assert "".join(pieces) == ANSWER
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage is not None
    assert (usage_chunk.usage.prompt_tokens, usage_chunk.usage.completion_tokens) == (6, 8)
    assert all(chunk.usage is None for chunk in chunks[:-1])
    call = fake.calls[-1]
    assert call.stream
    assert (call.prompt_tokens, call.completion_tokens) == (6, 8)


def test_openai_stream_without_usage_ends_with_finish_reason(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], stream=True)
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None for chunk in chunks)


TOOLS: list[openai.types.chat.ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}},
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object", "properties": {}}}},
]


def test_openai_tools_answer_with_a_tool_call(oai: openai.OpenAI) -> None:
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [{"role": "user", "content": USER}]
    completion = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS)

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert choice.message.tool_calls is not None
    tool_call = choice.message.tool_calls[0]
    assert tool_call.type == "function"
    assert tool_call.id.startswith("call_")
    assert (tool_call.function.name, tool_call.function.arguments) == ("lookup", "{}")

    named = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=messages,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    assert named.choices[0].message.tool_calls is not None
    assert named.choices[0].message.tool_calls[0].type == "function"
    assert named.choices[0].message.tool_calls[0].function.name == "search"

    none = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=TOOLS, tool_choice="none")
    assert none.choices[0].finish_reason == "stop"
    assert none.choices[0].message.content == ANSWER

    # Once the tool has answered, the model answers in text (so agent loops end).
    after_tool = oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            *messages,
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": tool_call.id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": tool_call.id, "content": "42"},
        ],
        tools=TOOLS,
    )
    assert after_tool.choices[0].finish_reason == "stop"
    assert after_tool.choices[0].message.content == ANSWER


def test_openai_streamed_tool_call(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], tools=TOOLS, stream=True
    )
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                if delta.function is not None:
                    name += delta.function.name or ""
                    arguments += delta.function.arguments or ""
            finish = choice.finish_reason or finish
    assert (name, arguments, finish) == ("lookup", "{}", "tool_calls")


def test_openai_max_tokens_truncates_with_finish_reason_length(fake: FakeProvider, oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], max_tokens=2
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Simulate"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 2
    assert fake.calls[-1].completion_tokens == 2

    # 4 bytes a token, cut on a character boundary: 21 ASCII bytes + "é" (2 bytes) fit in 24.
    accents = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "é" * 10}], max_completion_tokens=6
    )
    assert accents.choices[0].message.content == "Simulated answer to: é"
    assert accents.choices[0].finish_reason == "length"

    roomy = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], max_tokens=100
    )
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.choices[0].message.content == ANSWER


def test_openai_json_mode(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], response_format={"type": "json_object"}
    )
    content = completion.choices[0].message.content
    assert content is not None
    assert json.loads(content) == {"answer": ANSWER}


# --------------------------------------------------------------------------- OpenAI embeddings


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(value * value for value in vector))


def test_embeddings_dimensions_unit_length_and_determinism(fake: FakeProvider, oai: openai.OpenAI) -> None:
    small = oai.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    assert [item.index for item in small.data] == [0, 1]
    assert [len(item.embedding) for item in small.data] == [1536, 1536]
    assert all(abs(_norm(item.embedding) - 1.0) < 1e-5 for item in small.data)
    assert small.data[0].embedding != small.data[1].embedding
    assert small.model == "text-embedding-3-small"
    assert (small.usage.prompt_tokens, small.usage.total_tokens) == (3, 3)  # ceil(5/4) + ceil(4/4)

    again = oai.embeddings.create(model="text-embedding-3-small", input="alpha")
    assert again.data[0].embedding == small.data[0].embedding

    # The SDK asks for base64 unless told otherwise; floats must agree (to float32 precision).
    floats = oai.embeddings.create(model="text-embedding-3-small", input="alpha", encoding_format="float")
    assert max(abs(a - b) for a, b in zip(floats.data[0].embedding, small.data[0].embedding, strict=True)) < 1e-6

    large = oai.embeddings.create(model="text-embedding-3-large", input="alpha")
    assert len(large.data[0].embedding) == 3072
    assert abs(_norm(large.data[0].embedding) - 1.0) < 1e-5

    sized = oai.embeddings.create(model="text-embedding-3-large", input="alpha", dimensions=256)
    assert len(sized.data[0].embedding) == 256
    assert abs(_norm(sized.data[0].embedding) - 1.0) < 1e-5

    assert len(oai.embeddings.create(model="some-embedder", input="alpha").data[0].embedding) == 1536
    assert [call.path for call in fake.calls] == ["/v1/embeddings"] * 6


# --------------------------------------------------------------------------- Anthropic messages


def test_anthropic_create(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-fake-1",
        max_tokens=100,
        system="Be brief.",
        messages=[{"role": "user", "content": USER}],
    )

    assert message.id.startswith("msg_")
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "claude-fake-1"
    assert message.stop_reason == "end_turn"
    block = message.content[0]
    assert block.type == "text"
    assert block.text == ANSWER
    # ceil((9 + 11 bytes) / 4) + 3 for the system prompt + 3 for the message
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 8)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0
    assert fake.calls[-1].path == "/v1/messages"


def test_anthropic_max_tokens_truncates(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(model="claude-x", max_tokens=3, messages=[{"role": "user", "content": USER}])
    assert message.stop_reason == "max_tokens"
    assert message.content[0].type == "text"
    assert message.content[0].text == "Simulated an"
    assert message.usage.output_tokens == 3


def test_anthropic_stream_helper(fake: FakeProvider, claude: anthropic.Anthropic) -> None:
    with claude.messages.stream(
        model="claude-x", max_tokens=100, messages=[{"role": "user", "content": USER}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(pieces) >= 3
    assert "".join(pieces) == ANSWER
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 8
    assert final.usage.input_tokens == 6
    assert fake.calls[-1].stream


def test_anthropic_create_stream_events(claude: anthropic.Anthropic) -> None:
    events = list(
        claude.messages.create(
            model="claude-x", max_tokens=100, messages=[{"role": "user", "content": USER}], stream=True
        )
    )
    types = [event.type for event in events]
    deltas = types.count("content_block_delta")
    assert deltas >= 3
    assert types == [
        "message_start",
        "content_block_start",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    message_delta = events[-2]
    assert message_delta.type == "message_delta"
    assert message_delta.delta.stop_reason == "end_turn"
    assert message_delta.usage.output_tokens == 8


def test_anthropic_tools_answer_with_tool_use(claude: anthropic.Anthropic) -> None:
    message = claude.messages.create(
        model="claude-x",
        max_tokens=100,
        messages=[{"role": "user", "content": USER}],
        tools=[{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}],
    )
    assert message.stop_reason == "tool_use"
    block = message.content[0]
    assert block.type == "tool_use"
    assert (block.name, block.input) == ("lookup", {})


# --------------------------------------------------------------------------- errors and faults


def test_missing_key_is_401_in_each_providers_shape(fake: FakeProvider, raw: httpx2.Client) -> None:
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    response = raw.post("/v1/chat/completions", json=chat)
    assert response.status_code == 401
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] is None

    message = {"model": "claude-x", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    response = raw.post("/v1/messages", json=message)
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert body["error"]["message"]

    assert raw.post("/v1/messages", json=message, headers={"x-api-key": "k"}).status_code == 200
    assert raw.post("/v1/chat/completions", json=chat, headers={"Authorization": "Basic a2V5"}).status_code == 401
    assert [call.status for call in fake.calls] == [401, 401, 200, 401]


def test_sdk_without_a_key_gets_authentication_error(fake: FakeProvider) -> None:
    with openai.OpenAI(
        api_key="k", base_url=fake.openai_base_url, max_retries=0, default_headers={"Authorization": ""}
    ) as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 401


def test_anthropic_missing_max_tokens_is_400(raw: httpx2.Client) -> None:
    response = raw.post(
        "/v1/messages",
        json={"model": "claude-x", "messages": [{"role": "user", "content": "x"}]},
        headers={"x-api-key": "k"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_unknown_path_is_404_json(fake: FakeProvider, raw: httpx2.Client) -> None:
    response = raw.post("/v1/completions", json={"model": "m"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "error" in response.json()
    assert raw.get("/v1/chat/completions").status_code == 405
    assert [(call.path, call.status) for call in fake.calls] == [
        ("/v1/completions", 404),
        ("/v1/chat/completions", 405),
    ]


def test_fail_next_429_with_retry_after(fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    fake.fail_next(1, status=429, retry_after=2, error_type="rate_limit_exceeded", message="slow down")
    with pytest.raises(openai.RateLimitError) as caught:
        oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body == {
        "message": "slow down",
        "type": "rate_limit_exceeded",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    fake.fail_next(1, status=429, retry_after=1.5)
    with pytest.raises(anthropic.RateLimitError) as limited:
        claude.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert limited.value.response.headers["retry-after"] == "1.5"
    assert isinstance(limited.value.body, dict)
    assert limited.value.body["error"]["type"] == "rate_limit_error"

    fake.fail_next(1, status=529)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        claude.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert overloaded.value.status_code == 529
    assert isinstance(overloaded.value.body, dict)
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert "retry-after" not in overloaded.value.response.headers

    assert [call.status for call in fake.calls] == [429, 200, 429, 529]


def test_fail_next_queues_in_order_and_sdk_retries_through(fake: FakeProvider) -> None:
    fake.fail_next(1, status=500, retry_after=0.01)
    fake.fail_next(1, status=503, retry_after=0.01)
    with openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=2) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER}])
    assert completion.choices[0].message.content == ANSWER
    assert [call.status for call in fake.calls] == [500, 503, 200]


def test_hang_next_makes_the_client_time_out(fake: FakeProvider) -> None:
    fake.hang_next(1, seconds=1.0)
    with openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0, timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert time.monotonic() - started < 0.9
        # Only the next request hangs.
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])

    fake.hang_next(1, seconds=1.0)
    with anthropic.Anthropic(api_key="k", base_url=fake.anthropic_base_url, max_retries=0, timeout=0.2) as claude:
        with pytest.raises(anthropic.APITimeoutError):
            claude.messages.create(model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert len(fake.calls) == 3


def test_fail_models(fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    fake.fail_models({"gpt-broken", "claude-broken"})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError) as caught:
            oai.chat.completions.create(model="gpt-broken", messages=[{"role": "user", "content": "x"}])
        assert caught.value.status_code == 503
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.APIStatusError) as refused:
        claude.messages.create(model="claude-broken", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert refused.value.status_code == 503

    fake.fail_models({"text-embedding-3-small"}, status=500)
    with pytest.raises(openai.InternalServerError):
        oai.embeddings.create(model="text-embedding-3-small", input="x")
    oai.chat.completions.create(model="gpt-broken", messages=[{"role": "user", "content": "x"}])

    fake.fail_models(set())
    oai.embeddings.create(model="text-embedding-3-small", input="x")
    assert [(call.model, call.status) for call in fake.calls] == [
        ("gpt-broken", 503),
        ("gpt-broken", 503),
        ("gpt-4o-mini", 200),
        ("claude-broken", 503),
        ("text-embedding-3-small", 500),
        ("gpt-broken", 200),
        ("text-embedding-3-small", 200),
    ]


def test_call_log(fake: FakeProvider, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    oai.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": USER}],
        extra_headers={"x-cognitionos-request-id": "req-123", "x-cognitionos-attempt": "2"},
    )
    with claude.messages.stream(
        model="claude-x",
        max_tokens=50,
        messages=[{"role": "user", "content": USER}],
        extra_headers={"X-CognitionOS-Request-Id": "req-456"},
    ) as stream:
        stream.until_done()

    first, second = fake.calls
    assert first == Call(
        path="/v1/chat/completions",
        model="gpt-4o-mini",
        request_id="req-123",
        attempt="2",
        stream=False,
        status=200,
        prompt_tokens=6,
        completion_tokens=8,
        body=first.body,
    )
    assert first.body["messages"] == [{"role": "user", "content": USER}]
    assert (second.path, second.model, second.request_id, second.attempt) == (
        "/v1/messages",
        "claude-x",
        "req-456",
        None,
    )
    assert (second.stream, second.status, second.prompt_tokens, second.completion_tokens) == (True, 200, 6, 8)
    assert second.body["max_tokens"] == 50
    with pytest.raises(dataclasses.FrozenInstanceError):
        first.status = 500  # type: ignore[misc]

    fake.reset()
    assert fake.calls == []


def test_concurrent_requests_are_all_logged(fake: FakeProvider, oai: openai.OpenAI) -> None:
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    answers: dict[int, str | None] = {}

    def ask(index: int) -> None:
        barrier.wait()
        completion = oai.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"question {index}"}],
            extra_headers={"x-cognitionos-request-id": f"req-{index}"},
        )
        answers[index] = completion.choices[0].message.content

    threads = [threading.Thread(target=ask, args=(index,)) for index in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert answers == {index: f"Simulated answer to: question {index}" for index in range(threads_count)}
    calls = fake.calls
    assert len(calls) == threads_count
    assert {call.request_id for call in calls} == {f"req-{index}" for index in range(threads_count)}
    assert all(call.status == 200 for call in calls)


def test_latency_and_slow_stream(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.latency_s = 0.2
    started = time.monotonic()
    oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - started >= 0.2

    fake.latency_s = 0.0
    fake.slow_stream(chunk_delay_s=0.05)
    started = time.monotonic()
    arrivals = []
    for _ in oai.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], stream=True
    ):
        arrivals.append(time.monotonic())
    assert len(arrivals) >= 5
    assert arrivals[-1] - started >= 0.05 * (len(arrivals) - 1)

    fake.slow_stream(chunk_delay_s=0)
    started = time.monotonic()
    list(oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], stream=True))
    assert time.monotonic() - started < 0.2


def test_reset_clears_faults(fake: FakeProvider, oai: openai.OpenAI) -> None:
    fake.fail_next(3, status=500)
    fake.hang_next(3, seconds=5)
    fake.fail_models({"gpt-4o-mini"})
    fake.slow_stream(chunk_delay_s=1)
    fake.latency_s = 5
    fake.reset()

    started = time.monotonic()
    list(oai.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": USER}], stream=True))
    assert time.monotonic() - started < 1
    assert fake.latency_s == 0.0
    assert [call.status for call in fake.calls] == [200]


def test_stop_is_prompt_with_open_and_hanging_connections() -> None:
    fake = FakeProvider().start()
    base_url = fake.openai_base_url
    assert fake.base_url.startswith("http://127.0.0.1:")
    assert fake.anthropic_base_url == fake.base_url
    assert base_url == fake.base_url + "/v1"
    errors: list[BaseException] = []

    def hang() -> None:
        with openai.OpenAI(api_key="k", base_url=base_url, max_retries=0, timeout=60) as client:
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
            except openai.APIError as error:
                errors.append(error)

    with openai.OpenAI(api_key="k", base_url=base_url, max_retries=0) as idle:
        # This client keeps its connection open (keep-alive) while the fake stops.
        idle.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        fake.hang_next(1, seconds=30)
        hanging = threading.Thread(target=hang)
        hanging.start()
        while len(fake.calls) < 2:
            time.sleep(0.01)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
        hanging.join(timeout=5)
        assert not hanging.is_alive()
        assert [type(error) for error in errors] == [openai.APIConnectionError]  # dropped, not answered
    with pytest.raises(RuntimeError):
        _ = fake.base_url

    with fake:  # restartable
        with openai.OpenAI(api_key="k", base_url=fake.openai_base_url, max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
