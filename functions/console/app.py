"""Console Lambda: the console API's FastAPI app behind API Gateway (REST, `/api/{proxy+}`)."""

import asyncio
from typing import Any

from mangum import Mangum

from dynoyard.console.app import create_console_app
from dynoyard.observability import lambda_handler

app = create_console_app()
_asgi = Mangum(app, lifespan="off")
# One loop for the life of the instance: pooled DynamoDB connections live on it.
_loop = asyncio.new_event_loop()


def _invoke(event: dict[str, Any], context: Any) -> dict[str, Any]:
    asyncio.set_event_loop(_loop)  # Mangum runs the app on the current loop
    return _asgi(event, context)


handler = lambda_handler(_invoke)
