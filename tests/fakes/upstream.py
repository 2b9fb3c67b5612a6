"""A fake OpenAI-compatible provider: a real HTTP server on 127.0.0.1 whose behaviour is
chosen by the upstream model name the gateway sends. It builds its answers with the demo
upstream's response shapes, and remembers every request body it got."""

from __future__ import annotations

import asyncio
import json
import uuid
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
)

SLOW_SECONDS = 5.0
ERROR_PADDING = 3000


def completion_canary() -> str:
    """Unique text the fake puts in every completion, for the privacy scans."""
    return f"COMPLETION-CANARY-{uuid.uuid4().hex}"


def pieces_of(text: str, count: int = 5) -> list[str]:
    step = max(1, len(text) // count)
    return [text[i : i + step] for i in range(0, len(text), step)]


def last_prompt_text(payload: dict[str, Any]) -> str:
    messages = payload.get("messages") or []
    if messages and isinstance(messages[-1].get("content"), str):
        return str(messages[-1]["content"])
    prompt = payload.get("prompt")
    return prompt if isinstance(prompt, str) else ""


class FakeProvider:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self.chat, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
                Route("/v1/embeddings", self.embeddings, methods=["POST"]),
            ]
        )

    async def _payload(self, request: Request) -> dict[str, Any]:
        payload: dict[str, Any] = await request.json()
        self.requests.append(
            {
                "path": request.url.path,
                "payload": payload,
                "auth": request.headers.get("authorization"),
            }
        )
        return payload

    async def chat(self, request: Request) -> Response:
        payload = await self._payload(request)
        behaviour = str(payload.get("model"))
        failure = await self._failure(behaviour, payload)
        if failure is not None:
            return failure
        words = count_words(payload)
        text = f"Here you are: {completion_canary()} ok"
        if not payload.get("stream"):
            return JSONResponse(chat_completion(behaviour, text, words))
        include = bool((payload.get("stream_options") or {}).get("include_usage"))
        if behaviour == "no-usage":
            include = False
        events = chat_chunks(behaviour, pieces_of(text), words, include)
        if behaviour == "stream-break":
            return StreamingResponse(_break_after(events, 3), media_type="text/event-stream")
        if behaviour == "slow-chunks":
            return StreamingResponse(
                _slowly(chat_chunks(behaviour, [f" tok{i}" for i in range(200)], words, include)),
                media_type="text/event-stream",
            )
        if behaviour == "error-event":
            return StreamingResponse(_error_after(events, 3), media_type="text/event-stream")
        return StreamingResponse(_iterate(events), media_type="text/event-stream")

    async def completions(self, request: Request) -> Response:
        payload = await self._payload(request)
        failure = await self._failure(str(payload.get("model")), payload)
        if failure is not None:
            return failure
        text = f"Completed: {completion_canary()}"
        return JSONResponse(text_completion(str(payload.get("model")), text, count_words(payload)))

    async def embeddings(self, request: Request) -> Response:
        payload = await self._payload(request)
        failure = await self._failure(str(payload.get("model")), payload)
        if failure is not None:
            return failure
        return JSONResponse(
            embeddings(str(payload.get("model")), payload.get("input"), count_words(payload))
        )

    async def _failure(self, behaviour: str, payload: dict[str, Any]) -> Response | None:
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
        if behaviour == "slow":
            await asyncio.sleep(SLOW_SECONDS)
        return None


async def _iterate(events: Any) -> Any:
    for event in events:
        yield event


async def _slowly(events: Any) -> Any:
    for event in events:
        yield event
        await asyncio.sleep(0.05)


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
