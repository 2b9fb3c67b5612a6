"""Privacy is an invariant: plant canaries in prompts and completions, then prove that no
table item and no log line holds them, nor any key, outside the two documented exceptions
(the opt-in cache, not enabled here, and the first 1 KB of an upstream error body)."""

from __future__ import annotations

import json
import uuid

import httpx
import openai
import pytest

from dynoyard.domain.usage import ERROR_HEAD_BYTES
from tests.conftest import UPSTREAM_SECRET


def canary(kind: str) -> str:
    return f"PROMPT-CANARY-{kind}-{uuid.uuid4().hex}"


def test_given_canaries_in_every_kind_of_request_when_everything_is_scanned_then_none_is_kept(
    gateway, make_account, tables
):
    account = make_account("10")
    client = gateway.client(account.key)
    prompts: dict[str, str] = {}
    completions: list[str] = []

    def ask(kind: str) -> str:
        prompts[kind] = canary(kind)
        return prompts[kind]

    answer = client.chat.completions.create(
        model="test-chat",
        messages=[
            {"role": "system", "content": ask("system")},
            {"role": "user", "content": ask("chat")},
        ],
    )
    completions.append(answer.choices[0].message.content)
    streamed = client.chat.completions.create(
        model="test-chat", messages=[{"role": "user", "content": ask("stream")}], stream=True
    )
    completions.append("".join(c.choices[0].delta.content or "" for c in streamed if c.choices))
    legacy = client.completions.create(model="test-chat", prompt=ask("legacy"))
    completions.append(legacy.choices[0].text)
    client.embeddings.create(model="test-embed", input=ask("embed"))
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                model="test-break",
                messages=[{"role": "user", "content": ask("break")}],
                stream=True,
            )
        )
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(
            model="test-500", messages=[{"role": "user", "content": ask("error")}]
        )
    error_request = failed.value.response.headers["x-request-id"]
    # Bad input that quotes a canary must not be echoed into logs either.
    httpx.post(
        gateway.base_url + "/v1/chat/completions",
        content=json.dumps({"model": "test-chat", "messages": ask("badtype")}),
        headers={"authorization": f"Bearer {account.key}"},
    )
    httpx.post(
        gateway.base_url + "/v1/chat/completions",
        content=json.dumps({"model": ask("model"), "messages": [{"role": "user", "content": "x"}]}),
        headers={"authorization": f"Bearer {account.key}"},
    )

    completion_canaries = [c.split("COMPLETION-CANARY-")[1][:32] for c in completions]
    assert len(completion_canaries) == 3 and all(len(c) == 32 for c in completion_canaries)
    secrets = [account.key, UPSTREAM_SECRET]

    # Every item of every table.
    exception_seen = False
    for item in tables.scan_all():
        head = item.pop("error_head", None)
        text = json.dumps(item)
        for value in [*prompts.values(), *completion_canaries, *secrets]:
            if value == prompts["model"]:
                continue  # the model name is metadata the client chose; checked below
            assert value not in text, f"{value[:24]} found in {item.get('pk')}"
        if head is not None:
            assert len(head["S"].encode()) <= ERROR_HEAD_BYTES
            assert int(item["upstream_error_status"]["N"]) >= 400
            assert not any(c in head["S"] for c in completion_canaries + secrets)
            if item["request_id"]["S"] == error_request:
                assert prompts["error"] in head["S"]  # the documented exception, and only it
                exception_seen = True
            else:
                assert not any(p in head["S"] for p in prompts.values())
    assert exception_seen

    # Every log line the gateway wrote.
    logs = gateway.logs()
    assert "request finished" in logs
    for value in [*prompts.values(), *completion_canaries, *secrets]:
        if value == prompts["model"]:
            continue
        assert value not in logs, f"{value[:24]} found in the gateway's logs"
    for line in logs.splitlines():
        assert "authorization" not in line.lower()
