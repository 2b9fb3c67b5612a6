"""The one FastAPI application: served by Mangum on Lambda, by the Lambda Web Adapter for
streams, and by uvicorn for `make dev`."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from dynoyard import __version__
from dynoyard.api.middleware import RequestContextMiddleware
from dynoyard.api.openai_routes import build_router
from dynoyard.api.responses import error_response
from dynoyard.api.runtime import Runtime
from dynoyard.domain.catalog import CatalogError
from dynoyard.domain.errors import GatewayError, bad_request
from dynoyard.settings import GatewaySettings


def create_app(settings: GatewaySettings | None = None, *, load_catalog: bool = True) -> FastAPI:
    """Builds the app. The catalog is loaded now (a bad one fails at start, naming the bad
    entry); clients are made on first use."""
    runtime = Runtime(settings or GatewaySettings())
    if load_catalog:
        try:
            _ = runtime.catalog
        except CatalogError as exc:
            # A clear line, not a traceback, wherever the app is started.
            raise SystemExit(f"dynoyard: bad model catalog: {exc}") from None
    app = FastAPI(
        title="Dynoyard",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.runtime = runtime
    app.include_router(build_router(runtime))

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok", "models": len(runtime.catalog.offered())})

    @app.exception_handler(GatewayError)
    async def on_gateway_error(request: Request, error: GatewayError) -> Response:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        return error_response(bad_request("Invalid request.", param=loc[0] if loc else None))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, error: HTTPException) -> Response:
        message = (
            f"Invalid URL ({request.method} {request.url.path})"
            if error.status_code in (404, 405)
            else str(error.detail)
        )
        code = "unknown_url" if error.status_code in (404, 405) else None
        return error_response(GatewayError(error.status_code, message, code=code))

    app.add_middleware(RequestContextMiddleware)
    return app
