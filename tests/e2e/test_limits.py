"""Limits through the server: keys made with the CLI's flags, OpenAI's 429 shape and
x-ratelimit-* headers, spend caps that 64 concurrent requests can not overrun, and the
client IP's limits before authentication."""

from __future__ import annotations

import asyncio
import json
import uuid
from decimal import Decimal

import httpx
import pytest

from dynoyard.cli import main
from dynoyard.local.tables import ensure_tables
from tests.conftest import running_gateway

CHAT = {"model": "test-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50}


@pytest.fixture
def cli_key(tables, monkeypatch, capsys):
    """A key made by `dynoyard key create` with the given flags, for a funded org."""

    def make(account, *flags: str) -> str:
        for name, value in tables.env.items():
            monkeypatch.setenv(name, value)
        assert main(["--json", "key", "create", "--org", account.org_id, *flags]) == 0
        return json.loads(capsys.readouterr().out)["api_key"]

    return make


def post(gateway, key: str, body: dict = CHAT) -> httpx.Response:
    return httpx.post(
        f"{gateway.base_url}/v1/chat/completions",
        json=body,
        headers={"authorization": f"Bearer {key}"},
        timeout=20,
    )


def test_given_a_key_with_an_rpm_when_exceeded_then_429_with_openai_headers(
    gateway, make_account, cli_key, tables
):
    account = make_account("1")
    key = cli_key(account, "--rpm", "2", "--tpm", "100000")
    first, second, third = (post(gateway, key) for _ in range(3))
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert first.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 100000
    assert first.headers["x-ratelimit-reset-requests"].endswith("s")
    assert third.status_code == 429
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(third.headers["retry-after"]) <= 60
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    record = tables.usage_item(third.headers["x-request-id"])
    assert record["status"]["N"] == "429"


def test_given_a_key_without_limits_when_answered_then_no_ratelimit_headers(gateway, make_account):
    answer = post(gateway, make_account("1").key)
    assert answer.status_code == 200
    assert not [h for h in answer.headers if h.startswith("x-ratelimit")]


def test_given_a_daily_cap_when_64_requests_come_at_once_then_it_is_never_overrun(
    gateway, make_account, cli_key, tables
):
    account = make_account("10")
    cap = Decimal("0.001")  # a hold here is about 0.0002: the cap covers a few at once
    key = cli_key(account, "--daily-usd", str(cap))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(limits=httpx.Limits(max_connections=64), timeout=60) as c:
            return await asyncio.gather(
                *(
                    c.post(
                        f"{gateway.base_url}/v1/chat/completions",
                        json=CHAT,
                        headers={"authorization": f"Bearer {key}"},
                    )
                    for _ in range(64)
                )
            )

    answers = asyncio.run(burst())
    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert 3 <= len(served) < 64
    for answer in refused:
        assert answer.status_code == 429, answer.text
        assert answer.json()["error"]["code"] == "spend_cap_reached"
        assert int(answer.headers["retry-after"]) > 0
    spent = sum(
        Decimal(tables.usage_item(a.headers["x-request-id"])["cost_usd"]["N"]) for a in served
    )
    assert 0 < spent <= cap
    assert account.balance() == Decimal("10") - spent


@pytest.mark.parametrize(
    "flags",
    [
        ("--rpm", "0"),
        ("--tpm", "-5"),
        ("--daily-usd", "0"),
        ("--monthly-usd", "-1"),
        ("--daily-usd", "abc"),
        ("--rpm", "1.5"),
    ],
)
def test_given_a_hostile_limit_flag_when_creating_a_key_then_it_fails_clearly(
    make_account, tables, monkeypatch, capsys, flags
):
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)
    account = make_account("1")
    try:
        code = main(["key", "create", "--org", account.org_id, *flags])
    except SystemExit as exit_:  # argparse refuses what is not a number at all
        code = exit_.code
    assert code not in (0, None)
    assert capsys.readouterr().err.strip()
    assert tables.store.get_org(account.org_id).org_id  # and nothing else happened


# -- per client IP, before authentication ---------------------------------------------------


@pytest.fixture
def guarded_gateway(request, tables, catalog_path, tmp_path_factory):
    """A gateway of its own per test (an IP it refuses stays refused for the minute). With
    `fresh_accounts`, its accounts table is new, so that no other test's failed attempts
    from 127.0.0.1 are in the count."""
    overrides = {
        "DYNOYARD_IP_FAILED_KEYS_PER_MINUTE": "3",
        "DYNOYARD_IP_REQUESTS_PER_MINUTE": "40",
    }
    fresh = getattr(request, "param", None) == "fresh_accounts"
    if fresh:
        overrides["ACCOUNTS_TABLE"] = f"{tables.accounts}-{uuid.uuid4().hex[:6]}"
        ensure_tables(tables.client, {"ACCOUNTS_TABLE": overrides["ACCOUNTS_TABLE"]})
    with running_gateway(
        tables, catalog_path, tmp_path_factory.mktemp("guarded"), overrides
    ) as process:
        yield process
    if fresh:
        tables.client.delete_table(TableName=overrides["ACCOUNTS_TABLE"])


@pytest.mark.parametrize("guarded_gateway", ["fresh_accounts"], indirect=True)
def test_given_failed_key_attempts_from_one_ip_when_past_the_limit_then_429_not_401(
    guarded_gateway,
):
    bad = "sk-dy-" + "x" * 43
    statuses = [
        httpx.get(
            f"{guarded_gateway.base_url}/v1/models",
            headers={"authorization": f"Bearer {bad}"},
            timeout=10,
        ).status_code
        for _ in range(8)
    ]
    # 3 failures are answered as such; past them the IP is refused (even if the window
    # turns over inside the burst, 8 attempts leave at least one past the limit).
    assert statuses[:3] == [401, 401, 401] and 429 in statuses[3:]
    assert set(statuses) == {401, 429}


def test_given_many_requests_from_one_ip_when_past_its_limit_then_429_in_openai_shape(
    guarded_gateway, make_account
):
    account = make_account("1")
    answers = [
        httpx.get(
            f"{guarded_gateway.base_url}/v1/models",
            headers={"authorization": f"Bearer {account.key}"},
            timeout=10,
        )
        for _ in range(100)
    ]
    limited = [a for a in answers if a.status_code == 429]
    assert len(limited) >= 100 - 2 * 40
    assert {a.status_code for a in answers} == {200, 429}
    error = limited[0].json()["error"]
    assert error["code"] == "rate_limit_exceeded" and "IP address" in error["message"]
    assert int(limited[0].headers["retry-after"]) >= 1
