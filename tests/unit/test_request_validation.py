"""Hostile request bodies: every number the hold is computed from is validated on every
endpoint, and no body of any shape gets anything but a parsed request or a 400."""

import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynoyard.domain.catalog import Model, Price, Provider
from dynoyard.domain.errors import GatewayError
from dynoyard.domain.gateway import _output_limit, _upstream_body
from dynoyard.domain.metering import MIN_HOLD, hold_for
from dynoyard.domain.requests import parse_request
from tests.hostile import ENDPOINTS, REQUEST_FIELDS, json_values

BASE = {
    "chat/completions": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    "completions": {"model": "m", "prompt": "hi"},
    "embeddings": {"model": "m", "input": "hi"},
}
HOSTILE_NUMBERS = [-100_000_000, -1, 0, 10**40, "9", 1.5, True, None, [], {}]


def model(output_limit_field="max_tokens", max_output_tokens=4096, price="1") -> Model:
    return Model(
        id="m",
        provider=Provider("p", "http://127.0.0.1:9/v1", None, None, output_limit_field),
        upstream="up",
        price=Price(Decimal(price), Decimal(price) * 2),
        kind=None,
        max_output_tokens=max_output_tokens,
        context_window=None,
        fallbacks=(),
        label=None,
    )


def parse(endpoint, **fields):
    return parse_request(endpoint, json.dumps({**BASE[endpoint], **fields}).encode())


def refused(endpoint, body: bytes) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        parse_request(endpoint, body)
    assert info.value.status == 400
    return info.value


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n", "best_of"])
@pytest.mark.parametrize("value", HOSTILE_NUMBERS)
def test_given_a_hostile_number_on_any_endpoint_when_parsed_then_it_is_a_400_naming_it(
    endpoint, field, value
):
    if value is None or (field == "best_of" and endpoint != "completions"):
        # null means "not given"; best_of is passed through where it multiplies nothing.
        parse(endpoint, **{field: value})
        return
    body = json.dumps({**BASE[endpoint], field: value}).encode()
    assert refused(endpoint, body).param == field


def test_given_the_reported_attack_when_parsed_then_the_negative_limit_is_refused():
    # POST /v1/completions with max_completion_tokens -100000000 was served at balance 0.
    body = b'{"model": "m", "prompt": "x", "max_completion_tokens": -100000000}'
    assert refused("completions", body).param == "max_completion_tokens"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("options", ["yes", 1, [True], True])
def test_given_stream_options_that_are_not_an_object_when_parsed_then_400(endpoint, options):
    body = json.dumps({**BASE[endpoint], "stream_options": options}).encode()
    assert refused(endpoint, body).param == "stream_options"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("depth", [65, 100_000])
def test_given_a_deeply_nested_body_when_parsed_then_400_not_recursion(endpoint, depth):
    body = json.dumps(BASE[endpoint])[:-1].encode() + b', "x": ' + b"[" * depth + b"]" * depth
    body += b"}"
    assert "nested too deeply" in refused(endpoint, body).message


def test_given_both_output_limits_when_parsed_then_the_larger_bounds_the_hold():
    assert (
        parse("chat/completions", max_tokens=10, max_completion_tokens=300).max_output_tokens == 300
    )
    assert (
        parse("chat/completions", max_tokens=300, max_completion_tokens=10).max_output_tokens == 300
    )
    assert parse("completions", max_tokens=7, max_completion_tokens=9).max_output_tokens == 9


def test_given_best_of_and_n_when_parsed_then_the_larger_multiplies_the_output():
    assert parse("completions", n=2, best_of=5).choices == 5
    assert parse("completions", n=3).choices == 3
    assert parse("chat/completions", n=4).choices == 4


def test_given_a_prompt_in_many_parts_when_parsed_then_tools_images_and_structure_count():
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "abcd"}]},
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "QQ=="}}]},
        {"role": "assistant", "tool_calls": [{"function": {"name": "fn", "arguments": "{}"}}]},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "description": "find it"}}]
    parsed = parse("chat/completions", messages=messages, tools=tools)
    # abcd + fn + {} + lookup + "find it": text of every part, not only message strings.
    assert parsed.prompt_chars == 4 + 2 + 2 + 6 + 7
    assert parsed.image_parts == 2


def test_given_a_body_when_the_hold_is_computed_then_it_is_positive_even_for_a_free_model():
    parsed = parse("embeddings")
    free = model(price="0")
    assert hold_for(free, 10, 0, _output_limit(parsed, free), parsed.choices) == MIN_HOLD
    with pytest.raises(ValueError):
        hold_for(model(), 10, 0, -5, 1)


@pytest.mark.parametrize(
    ("field", "given", "expected"),
    [
        ("max_tokens", {}, {"max_tokens": 4096}),
        ("max_completion_tokens", {}, {"max_completion_tokens": 4096}),
        ("max_tokens", {"max_completion_tokens": 50}, {"max_tokens": 50}),
        ("max_completion_tokens", {"max_tokens": 50}, {"max_completion_tokens": 50}),
        ("max_tokens", {"max_tokens": 9, "max_completion_tokens": 99}, {"max_tokens": 9}),
    ],
)
def test_given_an_upstream_that_reads_one_limit_field_when_forwarded_then_that_field_is_bounded(
    field, given, expected
):
    parsed = parse("chat/completions", **given)
    sent = json.loads(_upstream_body(parsed, model(output_limit_field=field)))
    limits = {k: v for k, v in sent.items() if k in ("max_tokens", "max_completion_tokens")}
    assert {field: limits[field]} == expected
    assert sent[field] <= parsed.max_output_tokens if parsed.max_output_tokens else True


def test_given_a_legacy_completion_when_forwarded_then_max_tokens_carries_the_limit():
    parsed = parse("completions", max_completion_tokens=20)
    sent = json.loads(_upstream_body(parsed, model(output_limit_field="max_completion_tokens")))
    assert sent["max_tokens"] == 20 and "max_completion_tokens" not in sent
    embedding = json.loads(_upstream_body(parse("embeddings"), model()))
    assert "max_tokens" not in embedding and "max_completion_tokens" not in embedding


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    overrides=st.dictionaries(REQUEST_FIELDS, json_values(max_leaves=30), max_size=5),
)
def test_fuzz_given_any_json_body_when_parsed_then_a_bounded_request_or_a_400(endpoint, overrides):
    body = json.dumps({**BASE[endpoint], **overrides}).encode()
    try:
        parsed = parse_request(endpoint, body)
    except GatewayError as error:
        assert error.status == 400 and error.body()["error"]["message"]
        return
    assert 1 <= parsed.choices <= 128
    assert parsed.max_output_tokens is None or 0 <= parsed.max_output_tokens <= 1_000_000
    target = model(max_output_tokens=1_000_000)
    hold = hold_for(
        target, len(body), parsed.image_parts, _output_limit(parsed, target), parsed.choices
    )
    # Positive, and exactly representable as a DynamoDB number (38 significant digits).
    assert hold > 0 and len(hold.as_tuple().digits) <= 38
    json.loads(_upstream_body(parsed, target))


@settings(max_examples=200, deadline=None)
@given(endpoint=st.sampled_from(ENDPOINTS), raw=st.binary(max_size=200))
def test_fuzz_given_any_bytes_when_parsed_then_never_anything_but_a_400(endpoint, raw):
    try:
        parse_request(endpoint, raw)
    except GatewayError as error:
        assert error.status == 400
