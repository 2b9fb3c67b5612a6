"""A FastAPI app as a Lambda handler behind API Gateway (REST): Mangum, one event loop for
the life of the instance (pooled connections live on it), Powertools' context."""

from __future__ import annotations

import asyncio
from typing import Any

from mangum import Mangum
from starlette.applications import Starlette

from dynoyard.observability import LambdaHandler, lambda_handler


def mangum_handler(app: Starlette) -> LambdaHandler:
    asgi = Mangum(app, lifespan="off")
    loop = asyncio.new_event_loop()

    def invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
        asyncio.set_event_loop(loop)  # Mangum runs the app on the current loop
        return asgi(event, context)

    return lambda_handler(invoke)
