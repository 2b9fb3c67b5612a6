"""A small async DynamoDB client: the JSON 1.0 protocol over the shared aiohttp stack, with
aiodynamo's credentials chain and SigV4 signer, and retry rules of our own.

Why not botocore on the hot path: it costs ~1.6 ms of CPU per call on a small core
(serialization, event hooks, signing, urllib3) plus a worker-thread hop, and ~125 ms of
imports at cold start; a gateway request makes two calls. The request and answer bodies are
exactly botocore's low-level parameters and results, so items keep DynamoDB's JSON shape.

From aiodynamo we take the credentials (environment, ECS container metadata, EC2 instance
metadata; temporary ones are fetched again before they expire) and `signed_dynamo_request`,
which derives the signing key from the key it is given on every call. Not its
`Client.send_request`: it retries every transport error, which would send a write that may
have been applied a second time, and it drops the error body the ledger reads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiodynamo.credentials import (
    ChainCredentials,
    ContainerMetadataCredentials,
    Credentials,
    EnvironmentCredentials,
    InstanceMetadataCredentialsV1,
    InstanceMetadataCredentialsV2,
    Key,
    StaticCredentials,
)
from aiodynamo.http.aiohttp import AIOHTTP
from aiodynamo.http.types import Request, Response
from aiodynamo.sign import signed_dynamo_request
from yarl import URL

from dynoyard.adapters.http_session import SessionPerLoop
from dynoyard.domain.ports import StoreUnavailable
from dynoyard.observability import subsegment

log = logging.getLogger(__name__)

# Transport errors: a call whose request may have reached DynamoDB is retried only when
# idempotent; one whose connection was never made always is.
MAX_TRANSPORT_ATTEMPTS = 3
# Throttling and 5xx answers (DynamoDB applied nothing).
MAX_THROTTLED_ATTEMPTS = 4
THROTTLED = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "LimitExceededException",
}
# Write conflicts (applied nothing): retried until RETRY_SECONDS have passed since the call
# began. Cancellation reasons that mean the same thing: TransactionConflict and throttling.
CONFLICT = "TransactionConflictException"
CANCELLED = "TransactionCanceledException"
RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
RETRY_SECONDS = 2.0
# Answers that fresh credentials may cure: one refresh and one retry per call.
STALE_CREDENTIALS = {
    "ExpiredTokenException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
}
LOCAL_KEY = Key("local", "local")  # DynamoDB Local accepts any


class DynamoError(Exception):
    def __init__(self, code: str, message: str, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.body = body

    @property
    def condition_failed(self) -> bool:
        if self.code == "ConditionalCheckFailedException":
            return True
        return self.code == CANCELLED and "ConditionalCheckFailed" in _reasons(self.body)


class DynamoClient:
    def __init__(self, endpoint: str | None, region: str) -> None:
        """`endpoint` None: DynamoDB's own in `region` (both from the settings)."""
        self.region = region
        self.endpoint = (endpoint or f"https://dynamodb.{region}.amazonaws.com").rstrip("/")
        self._url = URL(self.endpoint + "/")
        self._sessions = SessionPerLoop(limit=256)
        self._timeout = aiohttp.ClientTimeout(total=5.0, sock_connect=2.0)
        # A metadata refresh is an asyncio task, so each loop keeps its own chain; the
        # botocore-backed profile source has no loop state and is shared.
        self._chains: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[ChainCredentials, Sequence[Credentials]]
        ] = weakref.WeakKeyDictionary()
        self._profile = ProfileCredentials()

    async def call(
        self, operation: str, params: dict[str, Any], idempotent: bool = True
    ) -> dict[str, Any]:
        """One DynamoDB API call. Throttling, 5xx answers and write conflicts are retried
        with jittered exponential backoff (DynamoDB did not apply the write), and so are
        transport errors when the call is idempotent or the connection was never made; a
        write that may have been applied is not sent twice. Raises StoreUnavailable when
        DynamoDB can not be reached or the retries run out, DynamoError for other errors."""
        began = time.monotonic()
        transport_failures = throttled = conflicts = 0
        refreshed = False
        while True:
            request = signed_dynamo_request(
                key=await self._key(),
                payload=params,
                action=operation,
                region=self.region,
                endpoint=self._url,
            )
            try:
                with subsegment(f"DynamoDB {operation}"):
                    async with self._sessions.get().post(
                        self._url,
                        data=request.body,
                        headers=request.headers,
                        timeout=self._timeout,
                        auto_decompress=True,  # whatever the shared session's default
                    ) as response:
                        status, raw = response.status, await response.read()
            except (aiohttp.ClientError, TimeoutError) as exc:
                transport_failures += 1
                never_sent = isinstance(
                    exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
                )
                if transport_failures >= MAX_TRANSPORT_ATTEMPTS or not (idempotent or never_sent):
                    raise StoreUnavailable(f"{operation}: {type(exc).__name__}") from None
                delay = _backoff(transport_failures, 0.05, 0.4)
                await self._pause(operation, began, delay, type(exc).__name__)
                continue
            try:
                answer: dict[str, Any] = json.loads(raw) if raw else {}
            except ValueError:
                if status == 200:
                    raise StoreUnavailable(f"{operation}: unreadable answer") from None
                answer = {}
            if status == 200:
                return answer
            code = str(answer.get("__type", "")).rpartition("#")[2] or f"HTTP{status}"
            if code in STALE_CREDENTIALS and not refreshed and self._invalidate():
                refreshed = True  # fetched afresh by the next _key()
                continue
            if code in THROTTLED or status >= 500:
                throttled += 1
                if throttled >= MAX_THROTTLED_ATTEMPTS:
                    raise StoreUnavailable(f"{operation}: {code}")
                await self._pause(operation, began, _backoff(throttled, 0.05, 1.0), code)
                continue
            if _write_conflict(code, answer):
                conflicts += 1
                await self._pause(operation, began, _backoff(conflicts, 0.01, 0.2), code)
                continue
            message = str(answer.get("message") or answer.get("Message") or "")
            raise DynamoError(code, message, answer)

    async def aclose(self) -> None:
        await self._sessions.close()

    async def _pause(self, operation: str, began: float, delay: float, cause: str) -> None:
        """Waits before the next attempt, unless that would take the call past
        RETRY_SECONDS: then StoreUnavailable."""
        if time.monotonic() + delay - began > RETRY_SECONDS:
            raise StoreUnavailable(f"{operation}: {cause}, retried for {RETRY_SECONDS} s")
        await asyncio.sleep(delay)

    async def _key(self) -> Key:
        chain = self._chain()[0]
        try:
            key = await chain.get_key(self._fetch)
        except Exception as exc:  # a metadata endpoint that failed during a refresh
            raise StoreUnavailable(f"AWS credentials: {type(exc).__name__}: {exc}") from None
        if key is None:
            raise StoreUnavailable("no AWS credentials found for DynamoDB")
        return key

    def _invalidate(self) -> bool:
        """Drops every refreshable source's credentials; False when none could be."""
        return any([source.invalidate() for source in self._chain()[1]])

    def _chain(self) -> tuple[ChainCredentials, Sequence[Credentials]]:
        loop = asyncio.get_running_loop()
        found = self._chains.get(loop)
        if found is None:
            sources = self._sources()
            found = self._chains[loop] = (ChainCredentials(sources), sources)
        return found

    def _sources(self) -> list[Credentials]:
        """Where credentials come from, in botocore's order. Against DynamoDB Local
        (loopback) only what the environment names is used (keys, a container credentials
        URI, AWS_PROFILE), else any key does: the CLI and tests need no AWS profile."""
        environment = EnvironmentCredentials()
        container = ContainerMetadataCredentials()
        if _loopback(self.endpoint):
            named: list[Credentials] = [environment, container]
            if os.environ.get("AWS_PROFILE"):
                named.append(self._profile)
            return [*named, StaticCredentials(LOCAL_KEY)]
        return [
            environment,
            self._profile,
            container,
            InstanceMetadataCredentialsV2(),
            InstanceMetadataCredentialsV1(),
        ]

    async def _fetch(self, request: Request) -> Response:
        """aiodynamo's HTTP interface for the metadata endpoints, on the shared session."""
        return await AIOHTTP(self._sessions.get())(request)


class ProfileCredentials(Credentials):
    """AWS profiles (SSO, assume-role, credential_process, keys in ~/.aws) and web identity,
    through botocore's resolver, which refreshes temporary credentials before they expire
    (aiodynamo reads only static keys from the credentials file). botocore is imported on
    first use, in a worker thread, only when a profile is configured."""

    def __init__(self) -> None:
        self._found: Any = None  # botocore.credentials.Credentials

    def is_disabled(self) -> bool:
        if os.environ.get("AWS_PROFILE") or os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE"):
            return False
        files = (
            os.environ.get("AWS_CONFIG_FILE", "~/.aws/config"),
            os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
        )
        return not any(Path(name).expanduser().is_file() for name in files)

    async def get_key(self, http: Any) -> Key | None:
        found = self._found
        if found is None or getattr(found, "refresh_needed", lambda: False)():
            return await asyncio.to_thread(self._resolve)  # botocore refreshes blocking
        return _frozen(found)

    def invalidate(self) -> bool:
        refreshable = hasattr(self._found, "refresh_needed")
        if refreshable:
            self._found = None
        return refreshable

    def _resolve(self) -> Key | None:
        try:
            if self._found is None:
                import botocore.session

                self._found = botocore.session.get_session().get_credentials()
            return _frozen(self._found) if self._found is not None else None
        except Exception as exc:  # an unknown profile, an expired SSO login
            log.warning("AWS profile credentials unavailable: %s", exc)
            return None


def _frozen(found: Any) -> Key:
    frozen = found.get_frozen_credentials()
    return Key(str(frozen.access_key), str(frozen.secret_key), frozen.token)


def _loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    return host in ("127.0.0.1", "localhost", "::1")


def _reasons(body: dict[str, Any]) -> set[str]:
    return {str(r.get("Code")) for r in body.get("CancellationReasons") or () if r}


def _write_conflict(code: str, answer: dict[str, Any]) -> bool:
    """The write met another transaction and nothing was applied."""
    if code == CONFLICT:
        return True
    if code != CANCELLED:
        return False
    reasons = _reasons(answer) - {"None"}
    return bool(reasons) and reasons <= RETRYABLE_REASONS


def _backoff(attempt: int, base: float, cap: float) -> float:
    """Full jitter: uniform over [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))
