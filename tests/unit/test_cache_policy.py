"""The response cache's policy (domain/cache.py): the key, the never-cached rules, a stored
answer replayed as a stream (read back with the official openai SDK) and a stream assembled
into the one stored form."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx2
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types import Completion
from openai.types.chat import ChatCompletionChunk

from dynoyard.domain.accounts import (
    MAX_CACHE_TTL_SECONDS,
    MIN_CACHE_TTL_SECONDS,
    InvalidSetting,
    check_cache_ttl,
)
from dynoyard.domain.cache import (
    MAX_ENTRY_BYTES,
    StreamAssembler,
    client_allows,
    decoded,
    entry_for,
    never_cached,
    replay_as_events,
    request_hash,
)
from dynoyard.domain.requests import Endpoint, parse_request
from dynoyard.local.demo_upstream import chat_chunks, chat_completion, sse, usage

CHAT: dict[str, Any] = {
    "model": "test-chat",
    "messages": [{"role": "user", "content": "What is a dynoyard?"}],
}


def canonical_hash(endpoint: str, shaping: dict[str, Any]) -> str:
    """The documented key, computed here independently of the code."""
    text = json.dumps(
        {"endpoint": endpoint, "request": shaping}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


# -- the key -------------------------------------------------------------------------------


def test_given_a_request_when_hashed_then_it_is_sha256_of_the_documented_canonical_json():
    assert request_hash("chat/completions", CHAT) == canonical_hash("chat/completions", CHAT)
    assert len(request_hash("chat/completions", CHAT)) == 64


def test_given_the_same_fields_in_another_order_when_hashed_then_the_key_is_the_same():
    reordered = {
        "messages": [{"content": "What is a dynoyard?", "role": "user"}],
        "model": "test-chat",
    }
    assert request_hash("chat/completions", reordered) == request_hash("chat/completions", CHAT)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "test-dear"},
        {"messages": [{"role": "user", "content": "What is a dynoyard!"}]},
        {"messages": [{"role": "system", "content": "What is a dynoyard?"}]},
        {"temperature": 0},
        {"temperature": 0.5},
        {"top_p": 0.9},
        {"max_tokens": 10},
        {"max_completion_tokens": 10},
        {"seed": 7},
        {"stop": ["END"]},
        {"response_format": {"type": "json_object"}},
        {"n": 1},
        {"logprobs": True},
        {"top_logprobs": 2},
        {"presence_penalty": 0.1},
        {"frequency_penalty": 0.1},
        {"logit_bias": {"50256": -100}},
        {"reasoning_effort": "low"},
        {"metadata": {"a": "b"}},
        {"provider_specific": {"x": 1}},  # any field the gateway does not know shapes too
    ],
)
def test_given_any_shaping_field_changed_when_hashed_then_the_key_changes(change):
    assert request_hash("chat/completions", {**CHAT, **change}) != request_hash(
        "chat/completions", CHAT
    )


def test_given_the_same_body_on_another_endpoint_when_hashed_then_the_key_changes():
    body = {"model": "test-chat", "prompt": "hi", "input": "hi"}
    keys = {request_hash(e, body) for e in ("chat/completions", "completions", "embeddings")}
    assert len(keys) == 3


@pytest.mark.parametrize(
    ("endpoint", "base", "change"),
    [
        ("completions", {"model": "m", "prompt": "a"}, {"prompt": "b"}),
        ("completions", {"model": "m", "prompt": "a"}, {"suffix": "z"}),
        ("completions", {"model": "m", "prompt": "a"}, {"best_of": 2}),
        ("embeddings", {"model": "m", "input": "a"}, {"input": ["a"]}),
        ("embeddings", {"model": "m", "input": "a"}, {"dimensions": 8}),
        ("embeddings", {"model": "m", "input": "a"}, {"encoding_format": "base64"}),
    ],
)
def test_given_prompts_inputs_and_their_parameters_when_changed_then_the_key_changes(
    endpoint, base, change
):
    assert request_hash(endpoint, {**base, **change}) != request_hash(endpoint, base)


@pytest.mark.parametrize(
    "delivery",
    [
        {"stream": True},
        {"stream": False},
        {"stream_options": {"include_usage": True}},
        {"user": "someone-else"},
        {"stream": True, "stream_options": {"include_usage": False}, "user": "u"},
    ],
)
def test_given_only_how_or_to_whom_it_is_delivered_changed_when_hashed_then_the_key_is_the_same(
    delivery,
):
    assert request_hash("chat/completions", {**CHAT, **delivery}) == request_hash(
        "chat/completions", CHAT
    )


# -- never cached ------------------------------------------------------------------------


def parsed(endpoint: Endpoint = "chat/completions", **fields: Any):
    base = dict(CHAT) if endpoint == "chat/completions" else {"model": "m", "prompt": "hi"}
    if endpoint == "embeddings":
        base = {"model": "m", "input": "hi"}
    return parse_request(endpoint, json.dumps({**base, **fields}).encode())


@pytest.mark.parametrize(
    ("endpoint", "fields", "reason"),
    [
        ("chat/completions", {"n": 2}, "variety"),  # temperature absent: 1 upstream
        ("chat/completions", {"n": 2, "temperature": 0.7}, "variety"),
        ("chat/completions", {"n": 3, "temperature": "hot"}, "variety"),
        ("completions", {"best_of": 3}, "variety"),
        ("completions", {"n": 2, "temperature": 1}, "variety"),
        ("chat/completions", {"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ("chat/completions", {"functions": [{"name": "f"}]}, "tools"),
        ("chat/completions", {"n": 1, "tools": [{"type": "function"}], "temperature": 0}, "tools"),
    ],
)
def test_given_a_request_for_variety_or_offering_tools_when_judged_then_it_is_never_cached(
    endpoint, fields, reason
):
    assert never_cached(parsed(endpoint, **fields)) == reason


@pytest.mark.parametrize(
    ("endpoint", "fields"),
    [
        ("chat/completions", {}),
        ("chat/completions", {"temperature": 1.2}),  # one answer: exact match is the point
        ("chat/completions", {"n": 4, "temperature": 0}),
        ("chat/completions", {"tools": []}),
        ("completions", {"best_of": 1}),
        ("embeddings", {}),
    ],
)
def test_given_an_ordinary_request_when_judged_then_it_may_be_cached(endpoint, fields):
    assert never_cached(parsed(endpoint, **fields)) is None


@pytest.mark.parametrize(
    ("bypass", "cache_control", "allowed"),
    [
        (None, None, True),
        ("bypass", None, False),
        (" BYPASS ", None, False),
        (None, "no-cache", False),
        (None, "max-age=0, No-Cache", False),
        (None, "no-store", False),
        (None, "max-age=60", True),
        ("hit", None, True),
    ],
)
def test_given_request_headers_when_read_then_bypass_and_no_cache_turn_the_cache_off(
    bypass, cache_control, allowed
):
    assert client_allows(bypass, cache_control) is allowed


# -- entries --------------------------------------------------------------------------------


def test_given_an_answer_over_the_item_limit_when_kept_then_there_is_no_entry():
    assert entry_for("org", "k", b"x" * (MAX_ENTRY_BYTES + 1), 600, 1000.0) is None
    entry = entry_for("org", "k", b"x" * MAX_ENTRY_BYTES, 600, 1000.5)
    assert entry is not None and entry.expires_at == 1600


def test_given_a_stored_ttl_out_of_range_when_an_entry_is_made_then_it_is_held_to_the_range():
    assert entry_for("o", "k", b"{}", 5, 0).expires_at == MIN_CACHE_TTL_SECONDS
    assert entry_for("o", "k", b"{}", 10**9, 0).expires_at == MAX_CACHE_TTL_SECONDS


@pytest.mark.parametrize("seconds", [0, 59, 86_401, 7 * 86_400])
def test_given_a_ttl_out_of_range_when_checked_then_a_clear_error_names_the_range(seconds):
    with pytest.raises(InvalidSetting, match="between 60 and 86,400 seconds"):
        check_cache_ttl(seconds)


@pytest.mark.parametrize("seconds", [60, 1800, 86_400])
def test_given_a_ttl_in_range_when_checked_then_it_is_kept(seconds):
    assert check_cache_ttl(seconds) == seconds


@pytest.mark.parametrize(
    "stored",
    [b"not json", b"[1, 2]", b'{"error": {"message": "x"}}', b'{"id": "x"}', b"[" * 100_000],
)
def test_given_a_stored_answer_that_is_not_one_when_decoded_then_it_is_a_miss(stored):
    assert decoded(stored) is None


# -- a stored answer replayed as a stream, read by the openai SDK ---------------------------


def sdk_stream(body: bytes, cast_to: type) -> list[Any]:
    """The chunks the official SDK reads from `body` served as text/event-stream."""
    client = openai.OpenAI(api_key="sk-test", base_url="http://127.0.0.1:9/v1")
    response = httpx2.Response(
        200,
        content=body,
        headers={"content-type": "text/event-stream"},
        request=httpx2.Request("POST", "http://127.0.0.1:9/v1/chat/completions"),
    )
    return list(openai.Stream(cast_to=cast_to, response=response, client=client))


def final_chat(body: bytes):
    state = ChatCompletionStreamState()
    for chunk in sdk_stream(body, ChatCompletionChunk):
        state.handle_chunk(chunk)
    return state.get_final_completion()


def test_given_a_stored_chat_answer_when_replayed_then_the_sdk_reads_the_same_answer():
    stored = chat_completion("ok", "Here you are: a replayed answer", 7)
    body = replay_as_events(stored, "chat/completions", include_usage=True)
    assert body.endswith(b"data: [DONE]\n\n")
    final = final_chat(body)
    assert final.id == stored["id"]
    assert final.choices[0].message.content == "Here you are: a replayed answer"
    assert final.choices[0].finish_reason == "stop"
    assert final.usage is not None
    assert final.usage.prompt_tokens == stored["usage"]["prompt_tokens"]


def test_given_a_client_that_did_not_ask_for_usage_when_replayed_then_no_usage_chunk():
    stored = chat_completion("ok", "text", 3)
    chunks = sdk_stream(replay_as_events(stored, "chat/completions", False), ChatCompletionChunk)
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)


def test_given_a_stored_answer_with_tool_calls_reasoning_and_n_choices_when_replayed_then_all_come_back():  # noqa: E501
    stored = chat_completion("ok", "first", 3)
    stored["choices"][0]["message"]["reasoning_content"] = "thinking it over"
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
    second = {
        "index": 1,
        "message": {"role": "assistant", "content": None, "tool_calls": [call]},
        "finish_reason": "tool_calls",
    }
    stored["choices"].append(second)
    final = final_chat(replay_as_events(stored, "chat/completions", True))
    assert final.choices[0].message.content == "first"
    assert final.choices[0].message.model_extra["reasoning_content"] == "thinking it over"
    [replayed_call] = final.choices[1].message.tool_calls
    assert (replayed_call.id, replayed_call.function.name) == ("call_1", "f")
    assert replayed_call.function.arguments == '{"a":1}'
    assert final.choices[1].finish_reason == "tool_calls"


def test_given_a_stored_legacy_completion_when_replayed_then_the_sdk_reads_its_text():
    stored = {
        "id": "cmpl-1",
        "object": "text_completion",
        "created": 1,
        "model": "ok",
        "choices": [{"index": 0, "text": "Completed: yes", "finish_reason": "stop"}],
        "usage": usage(2, 2),
    }
    chunks = sdk_stream(replay_as_events(stored, "completions", True), Completion)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Completed: yes"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 4


# -- a stream assembled into the stored form -------------------------------------------------


def assembled(endpoint: Endpoint, events: list[bytes], split: int = 7) -> dict[str, Any] | None:
    """The events fed in pieces of `split` bytes, as they may come off the wire."""
    assembler = StreamAssembler(endpoint)
    raw = b"".join(events)
    for start in range(0, len(raw), split):
        assembler.feed(raw[start : start + split])
    answer = assembler.answer()
    return json.loads(answer) if answer is not None else None


def test_given_a_chat_stream_when_assembled_then_it_is_the_buffered_answer_it_carried():
    events = list(chat_chunks("ok", ["Here ", "you ", "are"], 5, include_usage=True))
    answer = assembled("chat/completions", events)
    assert answer is not None
    assert answer["object"] == "chat.completion"
    assert answer["model"] == "ok" and answer["id"].startswith("chatcmpl-")
    [choice] = answer["choices"]
    assert choice["message"] == {"role": "assistant", "content": "Here you are"}
    assert choice["finish_reason"] == "stop"
    assert answer["usage"] == usage(5, 3)


def test_given_an_assembled_stream_when_replayed_then_the_sdk_reads_what_the_stream_said():
    events = list(chat_chunks("ok", ["one ", "two"], 5, include_usage=True))
    answer = assembled("chat/completions", events)
    assert answer is not None
    final = final_chat(replay_as_events(answer, "chat/completions", True))
    assert final.choices[0].message.content == "one two"
    assert final.usage is not None and final.usage.completion_tokens == 2


def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
    return sse(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "ok",
            "choices": choices,
            **extra,
        }
    )


def test_given_tool_calls_and_reasoning_in_pieces_when_assembled_then_they_are_joined():
    events = [
        chunk([{"index": 0, "delta": {"role": "assistant", "reasoning_content": "hmm "}}]),
        chunk([{"index": 0, "delta": {"reasoning_content": "yes"}}]),
        chunk(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_a",
                                "type": "function",
                                "function": {"name": "get", "arguments": '{"c'},
                            }
                        ]
                    },
                }
            ]
        ),
        chunk(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": 'ity":1}'}}]},
                }
            ]
        ),
        chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        chunk([], usage=usage(4, 9)),
        b"data: [DONE]\n\n",
    ]
    answer = assembled("chat/completions", events, split=3)
    assert answer is not None
    message = answer["choices"][0]["message"]
    assert message["reasoning_content"] == "hmm yes"
    assert message["content"] is None
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "get", "arguments": '{"city":1}'}}
    ]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


def test_given_a_legacy_completions_stream_when_assembled_then_its_texts_are_joined():
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "ok"}
    events = [
        sse({**base, "choices": [{"index": 0, "text": "Com", "finish_reason": None}]}),
        sse({**base, "choices": [{"index": 0, "text": "pleted", "finish_reason": "stop"}]}),
        sse({**base, "choices": [], "usage": usage(1, 2)}),
        b"data: [DONE]\n\n",
    ]
    answer = assembled("completions", events)
    assert answer is not None
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == "Completed"
    assert answer["usage"] == usage(1, 2)


@pytest.mark.parametrize(
    "bad_event",
    [
        chunk([{"index": 0, "delta": {"audio": {"data": "AAAA"}}}]),  # a delta not rebuilt
        chunk([{"index": 0, "delta": {"content": [{"type": "text", "text": "x"}]}}]),
        chunk([{"index": "0", "delta": {"content": "x"}}]),
        chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "x"}]}}]),
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
    ],
)
def test_given_a_stream_with_something_it_can_not_rebuild_when_assembled_then_nothing_is_stored(
    bad_event,
):
    events = list(chat_chunks("ok", ["fine"], 1, include_usage=True))
    assert assembled("chat/completions", [*events[:2], bad_event, *events[2:]]) is None


def test_given_legacy_completion_logprobs_when_assembled_then_nothing_is_stored():
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "ok"}
    logprobs = {"tokens": ["a"], "token_logprobs": [-0.1]}
    event = sse({**base, "choices": [{"index": 0, "text": "a", "logprobs": logprobs}]})
    assert assembled("completions", [event, b"data: [DONE]\n\n"]) is None


def test_given_a_stream_larger_than_an_entry_when_assembled_then_it_gives_up_early():
    assembler = StreamAssembler("chat/completions")
    piece = chunk([{"index": 0, "delta": {"content": "x" * 10_000}}])
    for _ in range(200):
        assembler.feed(piece)
    assert assembler.failed and assembler.answer() is None
    assert len(assembler._buffer) == 0  # nothing more is kept once it gave up


def test_given_keep_alive_comments_when_assembled_then_they_are_ignored():
    events = list(chat_chunks("ok", ["a"], 1, include_usage=True))
    answer = assembled("chat/completions", [b": keep-alive\n\n", *events])
    assert answer is not None and answer["choices"][0]["message"]["content"] == "a"
