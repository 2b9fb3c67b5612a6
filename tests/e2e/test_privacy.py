"""Privacy is an invariant: plant canaries in prompts (and the fake provider plants its own in
completions), send every kind of request through each entrance (the uvicorn gateway, the
streaming entrance run.sh, the Lambda handler through Mangum), then prove that no table
item and no log line holds any of them, nor any key, outside the two documented exceptions:
the opt-in cache (only for the organization that turned it on, only completions, only in the
cache table under its own partition, and gone once it turns the cache off) and the first
1 KB of an upstream error body (`error_head`).

A canary is 32 random letters and digits; a leak is any 12-character run of one, so a
truncated or partly quoted canary is caught too, and no run turns up by chance (62^12)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import (
    ROOT,
    UPSTREAM_SECRET,
    FakeContext,
    item_text,
    lambda_event,
    lambda_header,
    loaded_lambda_handler,
)
from tests.fakes.upstream import random_text

RUN = 12  # characters: any run this long of a canary counts as a leak
BODY_LIMIT = 65536  # the test gateways' DYNOYARD_MAX_BODY_BYTES


class Canaries:
    """Secrets to look for, each known by a label, found by any RUN-character run."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}

    def plant(self, label: str) -> str:
        """A prompt carrying a new canary."""
        secret = random_text(32)
        self.secrets[label] = secret
        return f"PROMPT-CANARY-{label}-{secret}"

    def add(self, label: str, secret: str) -> None:
        assert len(secret) >= RUN, label
        self.secrets[label] = secret

    def found_in(self, text: str, labels: set[str] | None = None) -> list[str]:
        """The labels of the canaries (all, or only `labels`) with some run in `text`."""
        found = []
        for label, secret in self.secrets.items():
            if labels is not None and label not in labels:
                continue
            if any(secret[i : i + RUN] in text for i in range(len(secret) - RUN + 1)):
                found.append(label)
        return found


@dataclass
class Exercised:
    """What a battery of requests left to check."""

    request_ids: list[str] = field(default_factory=list)
    # Requests whose upstream answered an error: labels of the prompt canaries the stored
    # first 1 KB of that error body may hold (the documented exception).
    error_head_may_hold: dict[str, set[str]] = field(default_factory=dict)
    # Requests whose ending is not the point (a malformed upstream answer): their log line
    # is waited for, but not required.
    best_effort_ids: list[str] = field(default_factory=list)
    # The opt-in cache: the canary labels the entries under each partition (`ORG#<id>`) may
    # hold, and those that must be found there (the scan sees what it looks for).
    cache_may_hold: dict[str, set[str]] = field(default_factory=dict)
    cache_must_hold: set[str] = field(default_factory=set)


def wait_for_log_lines(read_logs, exercised: Exercised, timeout: float = 10.0) -> str:
    """The logs once every request's line is there (the log line is written at settle)."""
    deadline = time.monotonic() + timeout
    soft_deadline = time.monotonic() + 2.0
    while True:
        logs = read_logs()
        missing = [r for r in exercised.request_ids if r not in logs]
        pending = [r for r in exercised.best_effort_ids if r not in logs]
        if not missing and (not pending or time.monotonic() > soft_deadline):
            return logs
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line for {missing}")
        time.sleep(0.05)


def assert_nothing_kept(tables, logs: str, canaries: Canaries, exercised: Exercised) -> None:
    # Every item of every table, error heads and the opt-in cache apart.
    heads: list[tuple[str, dict[str, Any]]] = []
    texts = []
    seen_in_cache: set[str] = set()
    for name in tables.names.values():
        for item in tables.scan_table(name):
            if name == tables.names["CACHE_TABLE"]:
                # Only the partitions of the orgs that opted in, and only their answers.
                text = item_text(item)
                allowed = exercised.cache_may_hold.get(item["pk"]["S"], set())
                found = set(canaries.found_in(text))
                assert found <= allowed, f"canaries {found - allowed} found in a cache entry"
                seen_in_cache |= found
                continue
            head = item.pop("error_head", None)
            if head is not None:
                heads.append((head["S"], item))
            texts.append(item_text(item))
    found = canaries.found_in("\n".join(texts))
    assert not found, f"canaries {found} found in a table"
    missing = exercised.cache_must_hold - seen_in_cache
    assert not missing, f"cached answers {missing} not found: the scan misses what it seeks"

    # The documented exception, and only it: the first 1 KB of an upstream error body.
    seen_in_heads: set[str] = set()
    for head, item in heads:
        assert len(head.encode()) <= 1024
        assert int(item["upstream_error_status"]["N"]) >= 400
        allowed = exercised.error_head_may_hold.get(item["request_id"]["S"], set())
        found = set(canaries.found_in(head))
        assert found <= allowed, f"canaries {found - allowed} found in an error head"
        seen_in_heads |= found
    # The scan sees what it looks for: the prompts quoted by the failing upstream are there.
    expected = set().union(*exercised.error_head_may_hold.values())
    assert expected and expected <= seen_in_heads

    # Every log line.
    for request_id in exercised.request_ids:
        assert request_id in logs  # the scan reads the lines of these very requests
    found = canaries.found_in(logs)
    assert not found, f"canaries {found} found in the logs"
    for line in logs.splitlines():
        assert "authorization" not in line.lower()


def keys_of(canaries: Canaries, *keys: str) -> None:
    for index, key in enumerate(keys):
        canaries.add(f"api-key-{index}", key.removeprefix("sk-dy-"))
    canaries.add("upstream-key", UPSTREAM_SECRET.removeprefix("sk-upstream-SECRET-"))


# -- over HTTP: the uvicorn gateway and the streaming entrance ------------------------


def exercise_http(base_url: str, make_account, fake_provider, canaries: Canaries) -> Exercised:
    """Every kind of request, each with a planted canary, through one HTTP entrance."""
    provider, _ = fake_provider
    account, broke = make_account("10"), make_account("0")
    keys_of(canaries, account.key, broke.key)
    marker, long_marker = f"privacy-{uuid.uuid4().hex}", f"privacy-long-{uuid.uuid4().hex}"
    client = openai.OpenAI(base_url=base_url + "/v1", api_key=account.key, max_retries=0)
    out = Exercised()

    def user(label: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": canaries.plant(label)}]

    def chat(label: str, model: str, stream: bool = False) -> str:
        """A chat request read to its end, whatever the end; its request id."""
        try:
            with client.chat.completions.with_streaming_response.create(
                model=model, messages=user(label), stream=stream, user=marker
            ) as response:
                with contextlib.suppress(openai.APIError):
                    list(response.parse()) if stream else response.parse()
                return str(response.headers["x-request-id"])
        except openai.APIStatusError as error:
            return str(error.response.headers["x-request-id"])

    raw = client.chat.completions.with_raw_response.create(
        model="test-chat",
        messages=[
            {"role": "system", "content": canaries.plant("system")},
            {"role": "user", "content": canaries.plant("chat")},
        ],
        user=marker,
    )
    out.request_ids.append(raw.headers["x-request-id"])
    for label, model in [
        ("stream", "test-chat"),
        ("reasoning", "test-reasoning"),
        ("refusal", "test-refusal"),
        ("break", "test-break"),  # the upstream breaks mid-stream
        ("error-event", "test-error-event"),  # ends with an error event
    ]:
        out.request_ids.append(chat(label, model, stream=True))
    raw = client.completions.with_raw_response.create(
        model="test-chat", prompt=canaries.plant("legacy"), user=marker
    )
    out.request_ids.append(raw.headers["x-request-id"])
    raw = client.embeddings.with_raw_response.create(
        model="test-embed", input=canaries.plant("embed"), user=marker
    )
    out.request_ids.append(raw.headers["x-request-id"])
    for label, model in [("error", "test-500"), ("fallback", "test-fallback")]:
        # Both upstream error bodies quote the prompt: the documented exception.
        request_id = chat(label, model)
        out.request_ids.append(request_id)
        out.error_head_may_hold[request_id] = {label}
    for label, model in [("deep-nest", "test-deep-nest"), ("bad-choices", "test-bad-choices")]:
        # Malformed upstream answers: whatever the gateway answers, it must not log them.
        response = httpx.post(
            base_url + "/v1/chat/completions",
            json={"model": model, "messages": user(label), "user": marker},
            headers={"authorization": f"Bearer {account.key}"},
            timeout=10,
        )
        out.best_effort_ids.append(response.headers["x-request-id"])

    # Abandoned: the client closes after the first chunk.
    with httpx.stream(
        "POST",
        base_url + "/v1/chat/completions",
        json={
            "model": "test-long",
            "messages": user("abandoned"),
            "stream": True,
            "user": long_marker,
        },
        headers={"authorization": f"Bearer {account.key}"},
        timeout=10,
    ) as response:
        out.request_ids.append(response.headers["x-request-id"])
        for line in response.iter_lines():
            if "reasoning_content" in line:
                break
    assert provider.wait_finished(long_marker) == "disconnected"

    # Refused requests whose body holds a canary.
    headers = {"authorization": f"Bearer {account.key}", "content-type": "application/json"}
    too_large = json.dumps(
        {"model": "test-chat", "messages": user("too-large"), "pad": "x" * BODY_LIMIT}
    )
    refused = [
        (too_large, headers, 413),
        (
            json.dumps({"model": "test-chat", "messages": user("broke")}),
            {
                **headers,
                "authorization": f"Bearer {broke.key}",
            },
            429,
        ),
        (json.dumps({"model": "no-such-model", "messages": user("unknown-model")}), headers, 404),
        (
            '{"model": "test-chat", "messages": [{"role": "user", "content": "'
            + canaries.plant("invalid-json"),
            headers,
            400,
        ),
        (json.dumps({"model": "test-chat", "messages": canaries.plant("bad-type")}), headers, 400),
    ]
    for body, request_headers, status in refused:
        response = httpx.post(
            base_url + "/v1/chat/completions", content=body, headers=request_headers, timeout=10
        )
        assert response.status_code == status, response.text
        out.request_ids.append(response.headers["x-request-id"])

    generated = provider.canaries_for(marker) + provider.canaries_for(long_marker)
    assert len(generated) >= 10  # chat, streams, legacy, fallback, abandoned, ...
    for index, secret in enumerate(generated):
        canaries.add(f"completion-{index}", secret)
    return out


@pytest.mark.parametrize("entrance", ["gateway", "stream_entrance"])
def test_given_canaries_in_every_kind_of_request_over_http_when_tables_and_logs_are_scanned_then_none_is_kept(  # noqa: E501
    request, entrance, make_account, tables, fake_provider
):
    server = request.getfixturevalue(entrance)
    canaries = Canaries()
    exercised = exercise_http(server.base_url, make_account, fake_provider, canaries)
    logs = wait_for_log_lines(server.logs, exercised)
    assert_nothing_kept(tables, logs, canaries, exercised)


# -- the Lambda handler, in this process ------------------------------------------------


@pytest.fixture(scope="module")
def handler(tables, catalog_path, fake_provider):
    with loaded_lambda_handler(tables, catalog_path, "gateway_lambda_privacy") as loaded:
        yield loaded


@contextlib.contextmanager
def captured_output() -> Iterator[io.StringIO]:
    """Everything this process writes while inside: stdout and stderr (Powertools metrics
    print there), and every logging stream handler (Powertools' logger holds the stdout it
    found at import)."""
    buffer = io.StringIO()
    loggers = [logging.getLogger(), *map(logging.getLogger, list(logging.root.manager.loggerDict))]
    handlers = {
        handler
        for each in loggers
        for handler in each.handlers
        if isinstance(handler, logging.StreamHandler)
        and not isinstance(handler, logging.FileHandler)
    }
    previous = {handler: handler.setStream(buffer) for handler in handlers}
    try:
        with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
            yield buffer
    finally:
        for handler, stream in previous.items():
            if stream is not None:
                handler.setStream(stream)


def test_given_canaries_in_every_kind_of_request_to_the_lambda_handler_when_tables_and_its_logs_are_scanned_then_none_is_kept(  # noqa: E501
    handler, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    canaries = Canaries()
    account, broke = make_account("10"), make_account("0")
    keys_of(canaries, account.key, broke.key)
    marker = f"privacy-lambda-{uuid.uuid4().hex}"
    exercised = Exercised()

    def user(label: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": canaries.plant(label)}]

    calls: list[tuple[dict[str, Any], int | None, str | None]] = [
        (
            lambda_event(
                "chat_completion.json",
                account.key,
                model="test-chat",
                user=marker,
                messages=[
                    {"role": "system", "content": canaries.plant("system")},
                    *user("chat"),
                ],
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "chat_completion_stream.json",
                account.key,
                model="test-chat",
                user=marker,
                messages=user("stream"),
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "chat_completion_stream.json",
                account.key,
                model="test-error-event",
                user=marker,
                messages=user("error-event"),
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "chat_completion_stream.json",
                account.key,
                model="test-break",
                user=marker,
                messages=user("break"),
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "completions.json",
                account.key,
                model="test-chat",
                user=marker,
                prompt=canaries.plant("legacy"),
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "embeddings.json",
                account.key,
                model="test-embed",
                user=marker,
                input=canaries.plant("embed"),
            ),
            200,
            None,
        ),
        (
            lambda_event(
                "chat_completion.json",
                account.key,
                model="test-500",
                user=marker,
                messages=user("error"),
            ),
            502,
            "error",
        ),
        (
            lambda_event(
                "chat_completion.json",
                account.key,
                model="test-fallback",
                user=marker,
                messages=user("fallback"),
            ),
            200,
            "fallback",
        ),
        (
            lambda_event(
                "chat_completion.json",
                raw_body=json.dumps(
                    {"model": "test-chat", "messages": user("too-large"), "pad": "x" * BODY_LIMIT}
                ),
                key=account.key,
            ),
            413,
            None,
        ),
        (
            lambda_event(
                "chat_completion.json", broke.key, model="test-chat", messages=user("broke")
            ),
            429,
            None,
        ),
        (
            lambda_event(
                "chat_completion.json",
                account.key,
                model="no-such-model",
                messages=user("unknown-model"),
            ),
            404,
            None,
        ),
        (
            lambda_event(
                "chat_completion.json",
                account.key,
                raw_body='{"model": "test-chat", "messages": [{"role": "user", "content": "'
                + canaries.plant("invalid-json"),
            ),
            400,
            None,
        ),
    ]
    with captured_output() as output:
        for event, status, quoted in calls:
            response = handler(event, FakeContext())
            assert response["statusCode"] == status, response["body"][:300]
            request_id = lambda_header(response, "x-request-id")
            exercised.request_ids.append(request_id)
            if quoted is not None:
                exercised.error_head_may_hold[request_id] = {quoted}
    generated = provider.canaries_for(marker)
    assert len(generated) >= 5
    for index, secret in enumerate(generated):
        canaries.add(f"completion-{index}", secret)
    logs = output.getvalue()
    assert "request finished" in logs
    assert_nothing_kept(tables, logs, canaries, exercised)


# -- the opt-in cache: the one place completions are kept, and only while it is on ---------


def dynoyard_cli(env: dict[str, str], *argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "dynoyard", "--json", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def test_given_an_org_with_the_cache_on_when_scanned_then_its_completions_are_only_in_its_cache_entries_until_it_opts_out(  # noqa: E501
    gateway, make_account, tables, fake_provider
):
    provider, _ = fake_provider
    canaries = Canaries()
    cached, other = make_account("10"), make_account("10")
    keys_of(canaries, cached.key, other.key)
    dynoyard_cli(gateway.env, "org", "set", cached.org_id, "--cache", "on")
    partition = f"ORG#{cached.org_id}"
    exercised = Exercised(cache_may_hold={partition: set()})
    markers: dict[str, str] = {}

    def send(label: str, account=cached, stream: bool = False, **fields: Any) -> str:
        """A request with its own marker and prompt canary, read to its end; its header."""
        markers[label] = f"privacy-cache-{label}-{uuid.uuid4().hex}"
        client = openai.OpenAI(
            base_url=gateway.base_url + "/v1", api_key=account.key, max_retries=0
        )
        model = fields.pop("model", "test-chat")
        if label == "legacy":
            raw = client.completions.with_raw_response.create(
                model=model, prompt=canaries.plant(label), user=markers[label]
            )
        elif label == "embed":
            raw = client.embeddings.with_raw_response.create(
                model="test-embed", input=canaries.plant(label), user=markers[label]
            )
        else:
            raw = client.chat.completions.with_raw_response.create(
                model=model,
                messages=[{"role": "user", "content": canaries.plant(label)}],
                stream=stream,
                user=markers[label],
                **fields,
            )
        with contextlib.suppress(openai.APIError):  # some streams end in an error event
            list(raw.parse()) if stream else raw.parse()
        exercised.request_ids.append(raw.headers["x-request-id"])
        return str(raw.headers["x-dynoyard-cache"])

    kept = {  # answers the cache keeps: complete 200s with the upstream's usage
        "chat": send("chat"),
        "stream": send("stream", stream=True),
        "reasoning": send("reasoning", stream=True, model="test-reasoning"),
        "refusal": send("refusal", stream=True, model="test-refusal"),
        "legacy": send("legacy"),
        "fallback": send("fallback", model="test-fallback"),  # its 500 quotes the prompt
    }
    assert set(kept.values()) == {"miss"}
    exercised.error_head_may_hold[exercised.request_ids[-1]] = {"fallback"}
    not_kept = {
        "embed": send("embed"),  # kept, but an embedding holds no completion canary
        "break": send("break", stream=True, model="test-break"),
        "error-event": send("error-event", stream=True, model="test-error-event"),
        "bypass": send("bypass", extra_headers={"x-dynoyard-cache": "bypass"}),
        "other-org": send("other-org", account=other),
    }
    assert not_kept["bypass"] == not_kept["other-org"] == "bypass"
    # A hit: served from the entry, the upstream not called again.
    repeat = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=cached.key, max_retries=0)
    chat_prompt = f"PROMPT-CANARY-chat-{canaries.secrets['chat']}"
    hit = repeat.chat.completions.with_raw_response.create(
        model="test-chat",
        messages=[{"role": "user", "content": chat_prompt}],
        user=markers["chat"],
    )
    assert hit.headers["x-dynoyard-cache"] == "hit"
    exercised.request_ids.append(hit.headers["x-request-id"])
    assert len(provider.requests_for(markers["chat"])) == 1

    for label, marker in markers.items():
        generated = provider.canaries_for(marker)
        for index, secret in enumerate(generated):
            name = f"completion-{label}-{index}"
            canaries.add(name, secret)
            if label in kept:
                exercised.cache_may_hold[partition].add(name)
        if label in kept:
            # The canary the answer carried: the last one (a refusal's text replaces the first).
            exercised.cache_must_hold.add(f"completion-{label}-{len(generated) - 1}")
    assert len(exercised.cache_must_hold) == len(kept)
    logs = wait_for_log_lines(gateway.logs, exercised)
    assert_nothing_kept(tables, logs, canaries, exercised)

    # An entry past its expiry, not yet removed by DynamoDB's TTL, is never served.
    [entry] = [
        item
        for item in tables.scan_table(tables.names["CACHE_TABLE"])
        if item["pk"]["S"] == partition
        and canaries.found_in(item_text(item), {"completion-chat-0"})
    ]
    tables.client.update_item(
        TableName=tables.names["CACHE_TABLE"],
        Key={"pk": entry["pk"], "sk": entry["sk"]},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 1)}},
    )
    expired = repeat.chat.completions.with_raw_response.create(
        model="test-chat",
        messages=[{"role": "user", "content": chat_prompt}],
        user=markers["chat"],
    )
    assert expired.headers["x-dynoyard-cache"] == "miss"
    assert not canaries.found_in(expired.text, {"completion-chat-0"})
    [fresh] = provider.canaries_for(markers["chat"])[1:]
    canaries.add("completion-chat-1", fresh)
    exercised.request_ids.append(expired.headers["x-request-id"])

    # Opting out deletes them: then no completion is kept anywhere.
    shown = dynoyard_cli(gateway.env, "org", "set", cached.org_id, "--cache", "off")
    assert shown["settings"]["cache_enabled"] is False
    exercised.cache_may_hold, exercised.cache_must_hold = {}, set()
    logs = wait_for_log_lines(gateway.logs, exercised)
    assert_nothing_kept(tables, logs, canaries, exercised)
