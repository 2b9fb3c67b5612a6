"""A fake OpenAI-compatible provider: a real HTTP server on 127.0.0.1 whose behaviour is
chosen by the upstream model name the gateway sends. It builds its answers with the demo
upstream's response shapes, and remembers every request body it got.

Each request is recorded with a `marker`: the request's `user` field when it is a string
(tests send `user=<uuid>`), else None. Tests read what the fake saw with
`requests_for(marker)`, never "the last request" of a fake shared by the whole session, and
the completion canaries it generated with `canaries_for(marker)`.

Behaviours (the upstream model name):

- `ok`, `embed`: normal answers; `fail-500`, `fail-400`, `fail-429`: errors in OpenAI's shape
  (the 500 body quotes the prompt and is padded past 1 KB); `slow`: answers after 5 s.
- `stream-break`, `error-event`, `no-usage`, `slow-chunks`: streams that break, end with an
  error event, send no usage, or come slowly (200 chunks, 0.05 s apart).
- `gzip`: the normal answer, body gzip-compressed with `Content-Encoding: gzip` whatever
  the request's Accept-Encoding (chat buffered and streamed, completions, embeddings).
- `reasoning`: 40 `reasoning_content` chunks before 5 content chunks; usage counts 45
  completion tokens, 40 of them `completion_tokens_details.reasoning_tokens`.
- `refusal`: deltas (or a message) carrying `refusal` instead of content.
- `ignores-limit`: ignores max_tokens; its usage says 1,000,000 completion tokens.
- `auth-401`, `auth-403`: the provider refusing the key it got, quoting part of it.
- `bad-choices`: 200 with `choices` holding non-objects.
- `deep-nest`: 200 with a field nested 100,000 levels deep (one event of the stream too).
- `stall`: streams 3 content chunks then nothing for 10 s.
- `long`: 400 chunks 0.02 s apart (the first 200 reasoning, the first one a completion
  canary); `disconnected` / `completed` hold the markers of the streams the gateway closed
  early / read to the end.
- `big`: a buffered answer of about 12 KB.
- `flaky-<status>-<n>`, `flaky-slow-<n>`: the first n requests of a marker (for that name)
  fail with <status> (a 429 says `retry-after: 1`) or answer after 5 s; later ones are `ok`.
- `down-<name>`: always 503; `fail-429-long`: always 429 with `retry-after: 30`.
- `garbage-sse`: a normal stream with usage, garbage events among its chunks.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import string
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dynoyard.local.demo_upstream import (
    chat_chunks,
    chat_completion,
    count_words,
    embeddings,
    sse,
    text_completion,
    usage,
)

SLOW_SECONDS = 5.0
STALL_SECONDS = 10.0
ERROR_PADDING = 3000
DEEP_LEVELS = 100_000
REASONING_CHUNKS = 40
REASONING_CONTENT_CHUNKS = 5
LONG_CHUNKS = 400
LONG_REASONING_CHUNKS = 200
IGNORED_LIMIT_TOKENS = 1_000_000
BIG_WORDS = 2000


CANARY_ALPHABET = string.ascii_letters + string.digits
CANARY_PREFIX = "COMPLETION-CANARY-"


def random_text(length: int = 32) -> str:
    """Random letters and digits: no run of 12 of them turns up anywhere by chance."""
    return "".join(secrets.choice(CANARY_ALPHABET) for _ in range(length))


def completion_canary() -> str:
    """Unique text the fake puts in every completion, for the privacy scans: the prefix,
    then 32 random letters and digits."""
    return CANARY_PREFIX + random_text()


def pieces_of(text: str, count: int = 5) -> list[str]:
    step = max(1, len(text) // count)
    return [text[i : i + step] for i in range(0, len(text), step)]


def split_exactly(text: str, count: int) -> list[str]:
    """`text` in exactly `count` pieces (the last ones empty if it is too short)."""
    step = max(1, -(-len(text) // count))
    pieces = [text[i : i + step] for i in range(0, len(text), step)]
    return pieces + [""] * (count - len(pieces))


def last_prompt_text(payload: dict[str, Any]) -> str:
    messages = payload.get("messages") or []
    if messages and isinstance(messages[-1], dict) and isinstance(messages[-1].get("content"), str):
        return str(messages[-1]["content"])
    prompt = payload.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def _marker(payload: dict[str, Any]) -> str | None:
    user = payload.get("user")
    return user if isinstance(user, str) else None


def masked_key(authorization: str | None) -> str:
    """How OpenAI quotes a wrong key: its first 8 characters, ****, its last 6."""
    key = (authorization or "").removeprefix("Bearer ").strip()
    return f"{key[:8]}****{key[-6:]}"


def deep_json(levels: int = DEEP_LEVELS) -> str:
    return "[" * levels + "]" * levels


class FakeProvider:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.disconnected: set[str | None] = set()
        self.completed: set[str | None] = set()
        self._canaries: dict[str | None, list[str]] = {}
        self._lock = threading.Lock()
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            ]
        )

    def requests_for(self, marker: str | None) -> list[dict[str, Any]]:
        """Every request the fake got whose `user` field was `marker`, oldest first."""
        with self._lock:
            return [r for r in self.requests if r["marker"] == marker]

    def canaries_for(self, marker: str | None) -> list[str]:
        """The completion canaries the fake generated for `marker`'s requests (the random
        part of each, without the prefix), whether or not the client ever saw them."""
        with self._lock:
            return list(self._canaries.get(marker, []))

    def _canary(self, payload: dict[str, Any]) -> str:
        canary = completion_canary()
        with self._lock:
            self._canaries.setdefault(_marker(payload), []).append(
                canary.removeprefix(CANARY_PREFIX)
            )
        return canary

    def wait_finished(self, marker: str | None, timeout: float = 15.0) -> str:
        """Wait until the stream of `marker` ended: 'disconnected' or 'completed'."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.disconnected:
                return "disconnected"
            if marker in self.completed:
                return "completed"
            time.sleep(0.02)
        raise AssertionError(f"the stream of {marker} did not end within {timeout} s")

    async def _payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = await request.json()
        with self._lock:
            self.requests.append(
                {
                    "path": request.url.path,
                    "payload": payload,
                    "auth": request.headers.get("authorization"),
                    "headers": dict(request.headers),
                    "marker": _marker(payload),
                    "at": time.monotonic(),
                }
            )
        return payload

    async def chat(self, request: Request) -> Response:
        payload = await self._payload(request)
        behaviour = str(payload.get("model"))
        failure = await self._failure(behaviour, payload, request)
        if failure is not None:
            return failure
        marker = _marker(payload)
        words = count_words(payload)
        text = f"Here you are: {self._canary(payload)} ok"
        stream = bool(payload.get("stream"))
        include = bool((payload.get("stream_options") or {}).get("include_usage"))
        if behaviour == "no-usage":
            include = False
        special = self._special_chat(behaviour, payload, text, words, stream, include, marker)
        if special is not None:
            return special
        if not stream:
            return _maybe_gzip(behaviour, JSONResponse(chat_completion(behaviour, text, words)))
        events = chat_chunks(behaviour, pieces_of(text), words, include)
        if behaviour == "stream-break":
            return _stream(_break_after(events, 3))
        if behaviour == "slow-chunks":
            chunks = chat_chunks(behaviour, [f" tok{i}" for i in range(200)], words, include)
            return _stream(_slowly(chunks))
        if behaviour == "error-event":
            return _stream(_error_after(events, 3))
        return _maybe_gzip(behaviour, _stream(_iterate(events)))

    def _special_chat(
        self,
        behaviour: str,
        payload: dict[str, Any],
        text: str,
        words: int,
        stream: bool,
        include: bool,
        marker: str | None,
    ) -> Response | None:
        if behaviour == "reasoning":
            reasoning = [f" think{i}" for i in range(REASONING_CHUNKS)]
            content = split_exactly(text, REASONING_CONTENT_CHUNKS)
            total = len(reasoning) + len(content)
            spent = {
                **usage(words, total),
                "completion_tokens_details": {"reasoning_tokens": len(reasoning)},
            }
            if not stream:
                body = chat_completion(behaviour, "".join(content), words)
                body["choices"][0]["message"]["reasoning_content"] = "".join(reasoning)
                body["usage"] = spent
                return JSONResponse(body)
            deltas = [{"reasoning_content": r} for r in reasoning] + [
                {"content": c} for c in content
            ]
            return _stream(_paced(_chunks(behaviour, deltas, spent if include else None), 0.02))
        if behaviour == "refusal":
            refusal = f"I can not help with that. {self._canary(payload)}"
            if not stream:
                body = chat_completion(behaviour, refusal, words)
                message = body["choices"][0]["message"]
                message["content"], message["refusal"] = None, refusal
                return JSONResponse(body)
            spent = usage(words, 5)
            deltas = [{"refusal": piece} for piece in pieces_of(refusal)]
            return _stream(_iterate(_chunks(behaviour, deltas, spent if include else None)))
        if behaviour == "ignores-limit":
            spent = usage(words, IGNORED_LIMIT_TOKENS)
            if not stream:
                body = chat_completion(behaviour, text, words)
                body["usage"] = spent
                return JSONResponse(body)
            deltas = [{"content": piece} for piece in pieces_of(text)]
            return _stream(_iterate(_chunks(behaviour, deltas, spent if include else None)))
        if behaviour == "bad-choices":
            if not stream:
                bad = {
                    "id": f"chatcmpl-bad{time.time_ns()}",
                    "object": "chat.completion",
                    "choices": ["x", 1, None, [2]],
                }
                return JSONResponse(bad)
            base = _chunk_base(behaviour)
            events = [sse({**base, "choices": choices}) for choices in (["x"], [1], [None], [[2]])]
            if include:
                events.append(sse({**base, "choices": [], "usage": usage(words, 4)}))
            return _stream(_iterate([*events, b"data: [DONE]\n\n"]))
        if behaviour == "deep-nest":
            if not stream:
                body = json.dumps(chat_completion(behaviour, text, words))
                deep = body[:-1] + ', "x": ' + deep_json() + "}"
                return Response(deep, media_type="application/json")
            events = list(chat_chunks(behaviour, pieces_of(text), words, include))
            chunk = json.dumps({**_chunk_base(behaviour), "choices": []})
            deep_event = f'data: {chunk[:-1]}, "x": {deep_json()}}}\n\n'.encode()
            return _stream(_iterate([*events[:2], deep_event, *events[2:]]))
        if behaviour == "stall" and stream:
            events = list(chat_chunks(behaviour, split_exactly(text, 3), words, include))
            return _stream(_stall_after(events, 4))  # role chunk + 3 content chunks
        if behaviour == "long" and stream:
            deltas = [
                {"reasoning_content" if i < LONG_REASONING_CHUNKS else "content": f" tok{i}"}
                for i in range(LONG_CHUNKS)
            ]
            deltas[0]["reasoning_content"] = f" {self._canary(payload)}"  # in the first chunk
            spent = usage(words, LONG_CHUNKS)
            events = _chunks(behaviour, deltas, spent if include else None)
            return _stream(self._tracked(_paced(events, 0.02), marker))
        if behaviour == "big" and not stream:
            big = f"{text} " + " ".join(f"word{i}" for i in range(BIG_WORDS))
            return JSONResponse(chat_completion(behaviour, big, words))
        if behaviour == "garbage-sse" and stream:
            events = list(chat_chunks(behaviour, pieces_of(text), words, include))
            return _stream(_iterate([*GARBAGE_EVENTS, *events[:3], *GARBAGE_EVENTS, *events[3:]]))
        return None

    async def _scripted(self, behaviour: str, payload: dict[str, Any]) -> Response | None:
        """`down-*`, `fail-429-long` and `flaky-*-<n>` (see the module docstring)."""
        if behaviour.startswith("down-"):
            return _error(503, "The provider is down.")
        if behaviour == "fail-429-long":
            return _error(429, "Rate limit reached.", {"retry-after": "30"})
        kind, _, count = behaviour.removeprefix("flaky-").partition("-")
        if not behaviour.startswith("flaky-") or not count.isdigit():
            return None
        with self._lock:
            seen = sum(
                1
                for r in self.requests
                if r["marker"] == _marker(payload) and r["payload"].get("model") == behaviour
            )
        if seen > int(count):
            return None
        if kind == "slow":
            await asyncio.sleep(SLOW_SECONDS)
            return None
        headers = {"retry-after": "1"} if kind == "429" else None
        return _error(int(kind), f"Failing {seen} of {count}.", headers)

    async def _tracked(self, events: AsyncIterator[bytes], marker: str | None) -> Any:
        finished = False
        try:
            async for event in events:
                yield event
            finished = True
        finally:
            (self.completed if finished else self.disconnected).add(marker)

    async def completions(self, request: Request) -> Response:
        payload = await self._payload(request)
        behaviour = str(payload.get("model"))
        failure = await self._failure(behaviour, payload, request)
        if failure is not None:
            return failure
        text = f"Completed: {self._canary(payload)}"
        return _maybe_gzip(
            behaviour, JSONResponse(text_completion(behaviour, text, count_words(payload)))
        )

    async def embeddings(self, request: Request) -> Response:
        payload = await self._payload(request)
        behaviour = str(payload.get("model"))
        failure = await self._failure(behaviour, payload, request)
        if failure is not None:
            return failure
        answer = embeddings(behaviour, payload.get("input"), count_words(payload))
        return _maybe_gzip(behaviour, JSONResponse(answer))

    async def _failure(
        self, behaviour: str, payload: dict[str, Any], request: Request
    ) -> Response | None:
        scripted = await self._scripted(behaviour, payload)
        if scripted is not None:
            return scripted
        if behaviour == "fail-500":
            # Error bodies may quote the prompt: the gateway keeps at most the first 1 KB.
            message = "upstream exploded while reading: " + last_prompt_text(payload)
            body = {
                "error": {
                    "message": message,
                    "type": "server_error",
                    "padding": "x" * ERROR_PADDING,
                }
            }
            return JSONResponse(body, status_code=500)
        if behaviour == "fail-400":
            body = {
                "error": {
                    "message": "Invalid value for temperature: must be <= 2.",
                    "type": "invalid_request_error",
                    "param": "temperature",
                    "code": "invalid_value",
                }
            }
            return JSONResponse(body, status_code=400)
        if behaviour == "fail-429":
            body = {
                "error": {
                    "message": "Rate limit reached",
                    "type": "requests",
                    "code": "rate_limit_exceeded",
                }
            }
            return JSONResponse(body, status_code=429)
        if behaviour in ("auth-401", "auth-403"):
            shown = masked_key(request.headers.get("authorization"))
            body = {
                "error": {
                    "message": f"Incorrect API key provided: {shown}. You can find your API key "
                    "at https://platform.openai.com/account/api-keys.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            }
            return JSONResponse(body, status_code=401 if behaviour == "auth-401" else 403)
        if behaviour == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        return None


# Not OpenAI's events, yet what a stream may carry: relayed as they come, never a crash.
GARBAGE_EVENTS = [
    b": keep-alive\n\n",
    b"data: {not json\n\n",
    b"event: ping\ndata: [1, 2]\n\n",
    b'data: {"choices": "nope", "usage": "none"}\n\n',
    b"\xff\xfe no field at all\n\n",
]


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def _stream(events: Any) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream")


def _chunk_base(model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake{time.time_ns()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }


def _chunks(model: str, deltas: list[dict[str, Any]], spent: dict[str, Any] | None) -> list[bytes]:
    """A chat stream of the given deltas: role chunk, deltas, finish, usage if given, [DONE]."""
    base = _chunk_base(model)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk(delta) for delta in deltas]
    events.append(chunk({}, "stop"))
    if spent is not None:
        events.append(sse({**base, "choices": [], "usage": spent}))
    events.append(b"data: [DONE]\n\n")
    return events


def _maybe_gzip(behaviour: str, response: Response) -> Response:
    """For `gzip`: the same answer compressed, whatever the client said it accepts."""
    if behaviour != "gzip":
        return response
    if isinstance(response, StreamingResponse):
        compressed = StreamingResponse(
            _gzipped(response.body_iterator), media_type=response.media_type
        )
    else:
        compressed = Response(gzip.compress(response.body), media_type=response.media_type)
    compressed.headers["content-encoding"] = "gzip"
    return compressed


async def _gzipped(events: AsyncIterator[Any]) -> Any:
    compressor = zlib.compressobj(wbits=31)  # gzip framing
    async for event in events:
        data = event.encode() if isinstance(event, str) else bytes(event)
        yield compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    yield compressor.flush()


async def _iterate(events: Iterable[bytes]) -> Any:
    for event in events:
        yield event


async def _paced(events: Iterable[bytes], seconds: float) -> Any:
    for event in events:
        yield event
        await asyncio.sleep(seconds)


async def _slowly(events: Iterator[bytes]) -> Any:
    for event in events:
        yield event
        await asyncio.sleep(0.05)


async def _stall_after(events: list[bytes], count: int) -> Any:
    for event in events[:count]:
        yield event
    await asyncio.sleep(STALL_SECONDS)
    for event in events[count:]:
        yield event


async def _break_after(events: Any, count: int) -> Any:
    for index, event in enumerate(events):
        if index > count:
            raise ConnectionResetError("fake provider dies mid-stream")
        yield event


async def _error_after(events: Any, count: int) -> Any:
    for index, event in enumerate(events):
        if index > count:
            yield sse({"error": {"message": "overloaded mid-stream", "type": "server_error"}})
            return
        yield event


def dumps(payload: Any) -> str:
    return json.dumps(payload)
