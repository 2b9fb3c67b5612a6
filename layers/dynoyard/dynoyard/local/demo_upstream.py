"""A small OpenAI-compatible upstream with canned answers, so that `make dev` works on a
machine with no provider key and no internet. Not a model: it never reads the prompt
beyond counting its words. The test suite's fake providers build on its response shapes."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEMO_REPLY = "Hello from the Dynoyard demo model. Set a provider key to reach a real one."
EMBEDDING_DIMENSIONS = 8


def count_words(payload: dict[str, Any]) -> int:
    """The demo's 'tokens': words of the prompt (messages, prompt or input)."""
    texts: list[str] = []
    for message in payload.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts += [p.get("text", "") for p in content if isinstance(p, dict)]
    for field in ("prompt", "input"):
        value = payload.get(field)
        if isinstance(value, str):
            texts.append(value)
        elif isinstance(value, list):
            texts += [v for v in value if isinstance(v, str)]
    return max(1, sum(len(t.split()) for t in texts))


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-demo{time.time_ns()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": usage(prompt_tokens, len(text.split())),
    }


def text_completion(model: str, text: str, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": f"cmpl-demo{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}],
        "usage": usage(prompt_tokens, len(text.split())),
    }


def embeddings(model: str, inputs: Any, prompt_tokens: int) -> dict[str, Any]:
    count = (
        len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
    )
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": [round((i + 1) * 0.01 * (d + 1), 4) for d in range(EMBEDDING_DIMENSIONS)],
        }
        for i in range(count)
    ]
    return {"object": "list", "data": data, "model": model, "usage": usage(prompt_tokens, 0)}


def sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def chat_chunks(
    model: str, pieces: list[str], prompt_tokens: int, include_usage: bool
) -> Iterator[bytes]:
    """A chat stream as OpenAI sends it: role chunk, content chunks, finish chunk, optional
    usage chunk (empty choices), then [DONE]."""
    base = {
        "id": f"chatcmpl-demo{time.time_ns()}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    yield sse(
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    )
    for piece in pieces:
        yield sse(
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        )
    yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    if include_usage:
        yield sse({**base, "choices": [], "usage": usage(prompt_tokens, len(pieces))})
    yield b"data: [DONE]\n\n"


def split_words(text: str) -> list[str]:
    words = text.split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


async def _chat(request: Request) -> Response:
    payload = await request.json()
    model, words = str(payload.get("model")), count_words(payload)
    if payload.get("stream"):
        include = bool((payload.get("stream_options") or {}).get("include_usage"))
        return StreamingResponse(
            chat_chunks(model, split_words(DEMO_REPLY), words, include),
            media_type="text/event-stream",
        )
    return JSONResponse(chat_completion(model, DEMO_REPLY, words))


async def _completions(request: Request) -> Response:
    payload = await request.json()
    return JSONResponse(
        text_completion(str(payload.get("model")), DEMO_REPLY, count_words(payload))
    )


async def _embeddings(request: Request) -> Response:
    payload = await request.json()
    return JSONResponse(
        embeddings(str(payload.get("model")), payload.get("input"), count_words(payload))
    )


def create_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", _chat, methods=["POST"]),
            Route("/v1/completions", _completions, methods=["POST"]),
            Route("/v1/embeddings", _embeddings, methods=["POST"]),
        ]
    )
