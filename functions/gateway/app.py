"""Gateway Lambda: the FastAPI app behind API Gateway (REST), buffered responses."""

from mangum import Mangum

from dynoyard.api.app import create_app
from dynoyard.observability import logger, tracer

app = create_app()
_asgi = Mangum(app, lifespan="off")


@logger.inject_lambda_context(clear_state=True)
@tracer().capture_lambda_handler
def handler(event: dict, context: object) -> dict:  # type: ignore[type-arg]
    return _asgi(event, context)  # type: ignore[arg-type]
