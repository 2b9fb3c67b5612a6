"""A fast, fixed-size OpenAI-compatible upstream for the overhead benchmark.

Raw ASGI (no framework) under uvicorn, with uvloop and httptools when installed, so the
upstream itself costs as little as possible and the `direct` baseline is tight.

Routes:
  POST /v1/chat/completions  JSON with `usage`; with `"stream": true`, SSE: a role chunk,
                             --chunks content chunks, a finish chunk, a usage chunk when
                             `stream_options.include_usage`, then `data: [DONE]`
  POST /v1/embeddings        one 8-dimension vector per input
  GET  /v1/models            the one model
  GET  /health               {"status": "ok"}
  GET  /stats                call counters, e.g. {"chat": 3, "chat_stream": 1}
  POST /stats                reset the counters (answers the counters before the reset)
  POST /control              {"latency_ms": 50, "chunks": 20, "chunk_delay_ms": 0}: change
                             the behaviour without a restart (answers the new settings)

    python bench/fake_upstream.py --port 18000 --latency-ms 0 --chunks 20
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
from collections import Counter
from typing import Any

MODEL = "gpt-4o-mini"
ANSWER = "Hello from the fake upstream."
CREATED = 1_700_000_000
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


CHAT_BODY = _dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    choices = [] if usage is not None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + _dumps(payload) + b"\n\n"


ROLE_EVENT = _chunk({"role": "assistant", "content": ""})
CONTENT_EVENT = _chunk({"content": "tok "})
FINISH_EVENT = _chunk({}, finish="stop")
USAGE_EVENT = _chunk({}, usage=USAGE)
DONE_EVENT = b"data: [DONE]\n\n"


def _embeddings_body(count: int) -> bytes:
    data = [
        {"object": "embedding", "index": i, "embedding": [0.125] * 8} for i in range(max(count, 1))
    ]
    return _dumps(
        {
            "object": "list",
            "data": data,
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 8, "total_tokens": 8},
        }
    )


class FakeUpstream:
    def __init__(self, latency_ms: float, chunks: int, chunk_delay_ms: float) -> None:
        self.latency_ms = latency_ms
        self.chunks = chunks
        self.chunk_delay_ms = chunk_delay_ms
        self.calls: Counter[str] = Counter()

    def settings(self) -> dict[str, float]:
        return {
            "latency_ms": self.latency_ms,
            "chunks": self.chunks,
            "chunk_delay_ms": self.chunk_delay_ms,
        }

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        body = await _read_body(receive) if method == "POST" else b""
        if method == "POST" and path.endswith("/chat/completions"):
            await self._chat(body, send)
        elif method == "POST" and path.endswith("/embeddings"):
            await self._embeddings(body, send)
        elif path == "/health":
            await _respond(send, 200, b'{"status":"ok"}')
        elif path == "/stats":
            current = _dumps(dict(sorted(self.calls.items())))
            if method == "POST":
                self.calls.clear()
            await _respond(send, 200, current)
        elif path == "/control" and method == "POST":
            await self._control(body, send)
        elif path.endswith("/models") and method == "GET":
            models = {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0}]}
            await _respond(send, 200, _dumps(models))
        else:
            await _respond(send, 404, b'{"error":{"message":"not found","type":"not_found"}}')

    async def _chat(self, body: bytes, send: Any) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            await _respond(send, 400, b'{"error":{"message":"bad json","type":"invalid"}}')
            return
        stream = bool(request.get("stream"))
        self.calls["chat_stream" if stream else "chat"] += 1
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        if not stream:
            await _respond(send, 200, CHAT_BODY)
            return
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        delay = self.chunk_delay_ms / 1000
        await send({"type": "http.response.body", "body": ROLE_EVENT, "more_body": True})
        for _ in range(self.chunks):
            if delay > 0:
                await asyncio.sleep(delay)
            await send({"type": "http.response.body", "body": CONTENT_EVENT, "more_body": True})
        tail = FINISH_EVENT + (USAGE_EVENT if include_usage else b"") + DONE_EVENT
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _embeddings(self, body: bytes, send: Any) -> None:
        try:
            request = json.loads(body)
        except ValueError:
            request = {}
        self.calls["embeddings"] += 1
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
        given = request.get("input") if isinstance(request, dict) else None
        count = len(given) if isinstance(given, list) and given and isinstance(given[0], str) else 1
        await _respond(send, 200, _embeddings_body(count))

    async def _control(self, body: bytes, send: Any) -> None:
        try:
            changes = json.loads(body or b"{}")
            for name in ("latency_ms", "chunks", "chunk_delay_ms"):
                if name in changes:
                    setattr(self, name, type(getattr(self, name))(changes[name]))
        except (ValueError, TypeError, AttributeError):
            await _respond(send, 400, b'{"error":{"message":"bad control","type":"invalid"}}')
            return
        await _respond(send, 200, _dumps(self.settings()))


async def _read_body(receive: Any) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            return body


async def _respond(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18000)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="sleep before answering")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per stream")
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0, help="sleep between chunks")
    args = parser.parse_args()

    import uvicorn

    has = importlib.util.find_spec
    uvicorn.run(
        FakeUpstream(args.latency_ms, args.chunks, args.chunk_delay_ms),
        host=args.host,
        port=args.port,
        loop="uvloop" if has("uvloop") else "asyncio",
        http="httptools" if has("httptools") else "h11",
        lifespan="off",
        access_log=False,
        log_level="warning",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
