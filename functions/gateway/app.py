"""Gateway Lambda: the FastAPI app behind API Gateway (REST), buffered responses."""

import asyncio
from typing import Any

from mangum import Mangum

from dynoyard.api.app import create_app
from dynoyard.observability import lambda_handler

app = create_app()
_asgi = Mangum(app, lifespan="off")
# One loop for the life of the instance: pooled upstream and DynamoDB connections live on it.
_loop = asyncio.new_event_loop()


def _invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
    asyncio.set_event_loop(_loop)  # Mangum runs the app on the current loop
    return _asgi(event, context)


handler = lambda_handler(_invoke)
