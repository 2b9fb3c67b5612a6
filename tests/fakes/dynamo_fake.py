"""DynamoDB's HTTP side, faked for the client's tests: real aiohttp servers on 127.0.0.1,
each on an event loop and thread of its own, so a test drives the client with asyncio.run.

- `FakeDynamo`: the JSON endpoint (POST /) answering from a script, one step per request
  (an error, a dropped connection, a gzip-encoded answer), then 200; it checks every
  request's SigV4 signature with botocore. Also an ECS container-credentials endpoint
  (GET /creds) that issues a new key at every fetch, with the lifetimes it is given.
- `ConflictingProxy`: forwards to DynamoDB Local but, as DynamoDB does, refuses a write to an
  item that an unfinished TransactWriteItems holds (TransactionConflictException, or
  TransactionCanceledException with a TransactionConflict reason). DynamoDB Local itself
  serializes writes and never answers a conflict.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

TYPE_PREFIX = "com.amazonaws.dynamodb.v20120810#"
JSON_TYPE = "application/x-amz-json-1.0"
Step = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<day>\d{8})/(?P<region>[^/]+)/dynamodb/"
    r"aws4_request, SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


class ServerThread:
    """An aiohttp.web application on 127.0.0.1, on a free port, in a thread."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


# -- script steps -------------------------------------------------------------------


def error(code: str, status: int = 400, **extra: Any) -> Step:
    """DynamoDB's error answer: {"__type": "...#Code", "message": ..., **extra}."""

    async def step(request: web.Request) -> web.StreamResponse:
        body = {"__type": TYPE_PREFIX + code, "message": f"fake {code}", **extra}
        return web.json_response(body, status=status, content_type=JSON_TYPE)

    return step


def bare(status: int) -> Step:
    """A status without a DynamoDB body (a load balancer's 503)."""

    async def step(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="<html>unavailable</html>")

    return step


def drop() -> Step:
    """Reads the whole request, then closes the connection without an answer."""

    async def step(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()  # never sent

    return step


def gzipped(answer: dict[str, Any]) -> Step:
    """A 200 whose body is gzip-encoded (Content-Encoding: gzip)."""

    async def step(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=gzip.compress(json.dumps(answer).encode()),
            headers={"Content-Type": JSON_TYPE, "Content-Encoding": "gzip"},
        )

    return step


def cancelled(*reasons: str) -> Step:
    """TransactionCanceledException with these cancellation reason codes, in order."""
    return error(
        "TransactionCanceledException",
        CancellationReasons=[{"Code": code} for code in reasons],
    )


# -- the fake endpoint ----------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake DynamoDB received it."""

    operation: str
    access_key: str
    token: str | None
    signature_ok: bool | None  # None: a key this fake did not issue
    body: dict[str, Any]


@dataclass
class FakeDynamo:
    script: list[Step] = field(default_factory=list)
    answer: dict[str, Any] = field(default_factory=dict)
    lifetimes: list[timedelta] = field(default_factory=lambda: [timedelta(hours=1)])
    seen: list[Seen] = field(default_factory=list)
    issued: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> secret, token
    fetches: list[datetime] = field(default_factory=list)
    expirations: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/", self._dynamo)
        self.app.router.add_get("/creds", self._credentials)
        self.server = ServerThread(self.app)

    def __enter__(self) -> FakeDynamo:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def credentials_url(self) -> str:
        return self.server.url + "/creds"

    def keys_used(self) -> list[str]:
        return [seen.access_key for seen in self.seen]

    async def _dynamo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            Seen(
                operation=request.headers.get("X-Amz-Target", "").rpartition(".")[2],
                access_key=_access_key(request.headers.get("Authorization", "")),
                token=request.headers.get("X-Amz-Security-Token"),
                signature_ok=self._verify(request, body),
                body=json.loads(body),
            )
        )
        if self.script:
            return await self.script.pop(0)(request)
        return web.json_response(self.answer, content_type=JSON_TYPE)

    async def _credentials(self, request: web.Request) -> web.StreamResponse:
        number = len(self.fetches) + 1
        lifetime = self.lifetimes[min(number, len(self.lifetimes)) - 1]
        now = datetime.now(UTC)
        key, secret, token = f"AKIDFAKE{number}", f"secret-{number}", f"token-{number}"
        self.issued[key] = (secret, token)
        self.fetches.append(now)
        self.expirations.append(now + lifetime)
        return web.json_response(
            {
                "AccessKeyId": key,
                "SecretAccessKey": secret,
                "Token": token,
                "Expiration": (now + lifetime).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )

    def _verify(self, request: web.Request, body: bytes) -> bool | None:
        """Recomputes the signature with botocore's SigV4 from the issued secret."""
        match = AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
        if match is None or match["key"] not in self.issued:
            return None
        secret, token = self.issued[match["key"]]
        if request.headers.get("X-Amz-Security-Token") != token:
            return False
        signed = match["signed"].split(";")
        # aiodynamo signs the endpoint's host without its port (a real DynamoDB endpoint has
        # none); botocore takes the host from the URL when no Host header is given.
        aws = AWSRequest(
            method="POST",
            url=f"http://{request.url.host}/",
            data=body,
            headers={name: request.headers[name] for name in signed if name != "host"},
        )
        aws.context["timestamp"] = request.headers.get("X-Amz-Date", "")
        auth = SigV4Auth(BotoCredentials(match["key"], secret, token), "dynamodb", match["region"])
        if auth.signed_headers(auth.headers_to_sign(aws)) != match["signed"]:
            return False
        expected = auth.signature(auth.string_to_sign(aws, auth.canonical_request(aws)), aws)
        return bool(expected == match["signature"])


def _access_key(authorization: str) -> str:
    match = AUTHORIZATION.fullmatch(authorization)
    return match["key"] if match else ""


# -- conflicts in front of DynamoDB Local ----------------------------------------------


@dataclass
class ConflictingProxy:
    upstream: str
    transaction_seconds: float = 0.005  # how long a transaction holds its items
    conflicts: int = 0
    forwarded: int = 0
    _held: set[str] = field(default_factory=set)
    _session: aiohttp.ClientSession | None = None

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_post("/", self._forward)
        self.server = ServerThread(self.app)

    def __enter__(self) -> ConflictingProxy:
        self.server.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._session is not None:
            asyncio.run_coroutine_threadsafe(self._session.close(), self.server.loop).result(5)
        self.server.__exit__(*exc)

    @property
    def url(self) -> str:
        return self.server.url

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        operation = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        params = json.loads(body)
        writes = _written_items(operation, params)
        if any(item in self._held for item in writes):
            self.conflicts += 1
            if operation == "TransactWriteItems":
                reasons = ["TransactionConflict" if i in self._held else "None" for i in writes]
                return await cancelled(*reasons)(request)
            return await error("TransactionConflictException")(request)
        transaction = operation == "TransactWriteItems"
        if transaction:
            self._held.update(writes)
        try:
            if transaction:
                await asyncio.sleep(self.transaction_seconds)
            return await self._send(request, body)
        finally:
            if transaction:
                self._held.difference_update(writes)

    async def _send(self, request: web.Request, body: bytes) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        hop = {"host", "content-length", "connection", "accept-encoding", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in hop}
        async with self._session.post(self.upstream + "/", data=body, headers=headers) as answer:
            raw = await answer.read()
            self.forwarded += 1
            return web.Response(body=raw, status=answer.status, content_type=JSON_TYPE)


def _written_items(operation: str, params: dict[str, Any]) -> list[str]:
    def item_id(table: str, key: dict[str, Any]) -> str:
        return table + "|" + json.dumps({k: key[k] for k in ("pk", "sk") if k in key})

    if operation in ("UpdateItem", "DeleteItem"):
        return [item_id(params["TableName"], params["Key"])]
    if operation == "PutItem":
        return [item_id(params["TableName"], params["Item"])]
    if operation == "TransactWriteItems":
        found = []
        for entry in params["TransactItems"]:
            ((_, action),) = entry.items()
            found.append(item_id(action["TableName"], action.get("Key") or action["Item"]))
        return found
    return []
