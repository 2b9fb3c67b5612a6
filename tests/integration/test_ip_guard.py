"""Limits per client IP before authentication, on a fake clock, with the failure counter
in DynamoDB Local."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.ip_guard import IpGuard
from dynoyard.domain.ports import RateLimited
from tests.conftest import ddb_endpoint


class FakeClock:
    def __init__(self) -> None:
        self.now = 60 * 29_000_000.0 + 5

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def guard(tables):
    clock = FakeClock()
    store = DynamoStore(DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage)
    return IpGuard(store, requests_per_minute=5, failures_per_minute=3, clock=clock), clock


def test_given_failed_key_attempts_when_past_the_limit_then_the_ip_is_refused_this_minute(guard):
    ip_guard, clock = guard
    ip, other = f"198.51.100.{uuid.uuid4().int % 250}", "203.0.113.7"

    async def scenario() -> None:
        for _ in range(3):
            await ip_guard.failed(ip)  # counted, still a plain 401 for the client
        with pytest.raises(RateLimited) as info:
            await ip_guard.failed(ip)
        assert info.value.retry_after_seconds == 55 and info.value.state.limit == 3
        with pytest.raises(RateLimited):
            ip_guard.admit(ip)  # refused before its key is even looked up
        ip_guard.admit(other)  # another IP is not affected
        clock.now += 55
        ip_guard.admit(ip)  # a new minute
        await ip_guard.failed(ip)  # counts from one again

    asyncio.run(scenario())


def test_given_failures_seen_by_another_instance_when_one_more_comes_then_it_is_refused(
    guard, tables
):
    first, clock = guard
    store = DynamoStore(DynamoClient(ddb_endpoint(), "us-east-1"), tables.accounts, tables.usage)
    second = IpGuard(store, requests_per_minute=5, failures_per_minute=3, clock=clock)
    ip = f"192.0.2.{uuid.uuid4().int % 250}"

    async def scenario() -> None:
        for _ in range(3):
            await first.failed(ip)
        with pytest.raises(RateLimited):
            await second.failed(ip)  # the count lives in DynamoDB, not in one instance

    asyncio.run(scenario())


def test_given_many_requests_from_one_ip_when_past_the_limit_then_refused_until_the_minute_ends(
    guard,
):
    ip_guard, clock = guard
    for _ in range(5):
        ip_guard.admit("198.51.100.1")
    with pytest.raises(RateLimited) as info:
        ip_guard.admit("198.51.100.1")
    assert "requests from your IP address" in info.value.message
    clock.now += 60
    ip_guard.admit("198.51.100.1")
    ip_guard.admit("")  # no address known (an in-process call): nothing to limit
