import json

from dynoyard.domain.errors import upstream_error
from dynoyard.domain.streaming import StreamMeter, error_event
from dynoyard.local.demo_upstream import chat_chunks


def stream_bytes(include_usage: bool = True) -> bytes:
    return b"".join(
        chat_chunks("m", ["Hel", "lo", " there"], prompt_tokens=11, include_usage=include_usage)
    )


def run(meter: StreamMeter, data: bytes, size: int) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        out += meter.feed(data[i : i + size])
    return out


def test_given_a_stream_split_anywhere_when_fed_then_events_come_out_whole_and_in_order():
    data = stream_bytes()
    for size in (1, 7, 64, len(data)):
        meter = StreamMeter(client_wants_usage=True)
        assert run(meter, data, size) == data
        assert meter.done and meter.usage is not None
        assert (meter.usage.prompt_tokens, meter.usage.completion_tokens) == (11, 3)


def test_given_a_client_that_did_not_ask_for_usage_when_relayed_then_the_usage_chunk_is_hidden():
    meter = StreamMeter(client_wants_usage=False)
    out = run(meter, stream_bytes(), 5)
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert meter.usage is not None and meter.usage.completion_tokens == 3


def test_given_usage_inside_a_content_chunk_when_not_asked_then_it_is_nulled_not_dropped():
    event = {
        "choices": [{"delta": {"content": "x"}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1},
    }
    meter = StreamMeter(client_wants_usage=False)
    out = meter.feed(b"data: " + json.dumps(event).encode() + b"\n\n")
    assert json.loads(out[6:])["usage"] is None and meter.content_chunks == 1


def test_given_a_stream_without_usage_when_it_breaks_then_tokens_are_estimated_and_marked():
    meter = StreamMeter(client_wants_usage=False, prompt_chars=40)
    data = stream_bytes(include_usage=False)
    meter.feed(data[: data.index(b" there")])
    tokens = meter.tokens()
    assert tokens.estimated and tokens.prompt_tokens == 10 and tokens.completion_tokens == 2


def test_given_crlf_separators_and_comments_when_fed_then_they_pass_through():
    meter = StreamMeter(client_wants_usage=True)
    out = meter.feed(b": keep-alive\r\n\r\ndata: [DONE]\r\n\r\n")
    assert out == b": keep-alive\n\ndata: [DONE]\n\n" and meter.done


def test_given_an_error_event_when_built_then_it_has_openai_shape():
    payload = json.loads(error_event(upstream_error("broken"))[6:])
    assert payload == {
        "error": {"message": "broken", "type": "api_error", "param": None, "code": "upstream_error"}
    }


def sse_chunk(delta: dict) -> bytes:
    return b"data: " + json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode() + b"\n\n"


def test_given_only_reasoning_so_far_when_the_client_leaves_then_it_is_charged_as_output():
    meter = StreamMeter(client_wants_usage=False, prompt_chars=40)
    for _ in range(8):
        meter.feed(sse_chunk({"reasoning_content": "thinking hard"}))
    assert meter.produced_anything
    tokens = meter.tokens()
    assert tokens.estimated and tokens.completion_tokens == 26  # 8 x 13 chars / 4
    assert tokens.prompt_tokens == 10


def test_given_refusals_tool_arguments_and_reasoning_when_streamed_then_all_are_counted():
    meter = StreamMeter(client_wants_usage=False)
    meter.feed(sse_chunk({"refusal": "I can not help"}))
    meter.feed(sse_chunk({"reasoning": "abcd"}))  # OpenRouter's name for it
    meter.feed(sse_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]}))
    meter.feed(sse_chunk({"content": "ok", "reasoning_content": "xy"}))
    assert (meter.content_chunks, meter.content_chars) == (4, 14 + 4 + 7 + 4)


def test_given_events_that_are_not_objects_or_too_deep_when_fed_then_they_pass_untouched():
    meter = StreamMeter(client_wants_usage=False)
    deep = b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n"
    odd = b'data: {"choices": ["x", 1, null, [2]]}\n\n'
    assert meter.feed(deep + odd) == deep + odd
    assert not meter.produced_anything
