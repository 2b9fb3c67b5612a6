import json

import pytest

from dynoyard.domain.errors import GatewayError
from dynoyard.domain.keys import ApiKey, generate_key, hash_key, looks_like_key
from dynoyard.domain.requests import parse_request


def test_given_a_new_key_when_generated_then_only_its_hash_and_hint_are_for_storage():
    new = generate_key()
    assert new.secret.startswith("sk-dy-") and looks_like_key(new.secret)
    assert new.key_hash == hash_key(new.secret) and new.secret not in new.key_hash
    assert new.hint.endswith(new.secret[-4:]) and len(new.hint) < 15
    assert generate_key().secret != new.secret


def test_given_key_states_when_checked_then_revoked_and_expired_keys_are_unusable():
    key = ApiKey("k", "o", "n", "h", expires_at=1000)
    assert key.usable_at(999) and not key.usable_at(1000)
    assert not ApiKey("k", "o", "n", "h", revoked=True).usable_at(0)


def test_given_a_model_list_when_checked_then_only_listed_models_are_allowed():
    key = ApiKey("k", "o", "n", "h", models=frozenset({"a"}))
    assert key.allows("a") and not key.allows("b")
    assert ApiKey("k", "o", "n", "h").allows("anything")


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        (b"{not json", None, "could not parse the JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model", "model parameter"),
        (b'{"model": 5, "messages": []}', "model", "Invalid value for 'model'"),
        (b'{"model": "m"}', "messages", "Missing required parameter: 'messages'"),
        (b'{"model": "m", "messages": []}', "messages", "messages"),
        (b'{"model": "m", "messages": [{}], "stream": "yes"}', "stream", "stream"),
        (b'{"model": "m", "messages": [{}], "max_tokens": 0}', "max_tokens", "max_tokens"),
        (b'{"model": "m", "messages": [{}], "max_tokens": "9"}', "max_tokens", "max_tokens"),
    ],
)
def test_given_bad_chat_bodies_when_parsed_then_a_400_names_the_param(body, param, fragment):
    with pytest.raises(GatewayError) as info:
        parse_request("chat/completions", body)
    assert info.value.status == 400
    assert info.value.param == param
    assert fragment in info.value.message


def test_given_a_chat_body_when_parsed_then_unknown_fields_pass_through_and_limits_are_read():
    content = [
        {"type": "text", "text": "hello"},
        {"type": "image_url", "image_url": {"url": "http://x"}},
    ]
    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": content}],
            "tools": [{"type": "function"}],
            "n": 2,
            "max_completion_tokens": 30,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ).encode()
    parsed = parse_request("chat/completions", body)
    assert parsed.payload["tools"] == [{"type": "function"}]
    assert (parsed.stream, parsed.client_wants_usage, parsed.choices) == (True, True, 2)
    assert (parsed.max_output_tokens, parsed.prompt_chars, parsed.image_parts) == (30, 5, 1)


def test_given_embeddings_when_parsed_then_there_is_no_output_budget():
    parsed = parse_request("embeddings", b'{"model": "e", "input": ["ab", "cde"]}')
    assert (parsed.max_output_tokens, parsed.prompt_chars, parsed.stream) == (0, 5, False)
