"""Every response carries `x-request-id` and `server-timing`; no traceback reaches a client."""

from __future__ import annotations

import json
import time
import traceback
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dynoyard.domain.errors import internal_error
from dynoyard.domain.usage import new_request_id
from dynoyard.observability import log_context, logger

INTERNAL_ERROR = json.dumps(internal_error().body()).encode()


def server_timing(gateway_ms: float, upstream_ms: float) -> str:
    return f"gateway;dur={gateway_ms:.1f}, upstream;dur={upstream_ms:.1f}"


class RequestContextMiddleware:
    """Assigns the request id, times the request, and turns any escaped exception into
    OpenAI's 500 shape. Routes report upstream time in `scope["state"]["upstream_ms"]`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        request_id = new_request_id()
        state["request_id"] = request_id
        log_context(request_id=request_id)
        response_started = False

        async def send_with_context(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                total_ms = (time.perf_counter() - started) * 1000
                upstream_ms = float(state.get("upstream_ms", 0.0))
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append(
                    (b"server-timing", server_timing(total_ms - upstream_ms, upstream_ms).encode())
                )
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            # The message of an exception may quote input; log its type and frames only.
            logger.error(
                "unhandled error",
                extra={
                    "request_id": request_id,
                    "error_type": type(exc).__name__,
                    "frames": "".join(traceback.format_tb(exc.__traceback__)),
                },
            )
            if response_started:
                return
            await send_with_context(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send_with_context({"type": "http.response.body", "body": INTERNAL_ERROR})
