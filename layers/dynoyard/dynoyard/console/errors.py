"""The console's one error shape, `{"error": {"message", "type", "code", "param"}}`, for
every status: FastAPI's own 404/405/422 answers are rewritten into it (a validation error is
a 400 naming the field), and nothing unexpected leaves as anything but this shape."""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from dynoyard.domain.ports import SecretUnavailable, StoreUnavailable

log = logging.getLogger(__name__)


class ConsoleError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers or {}
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "code": self.code,
                "param": self.param,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(
    message: str, param: str | None = None, code: str = "invalid_request"
) -> ConsoleError:
    return ConsoleError(400, message, code, param=param)


def not_signed_in() -> ConsoleError:
    return ConsoleError(401, "Sign in first.", "not_signed_in", type="authentication_error")


def csrf_failed() -> ConsoleError:
    return ConsoleError(
        403,
        "Missing or wrong X-CSRF-Token header (use the csrf_token of GET /api/me).",
        "csrf_failed",
        type="permission_error",
    )


def forbidden(message: str, code: str = "forbidden") -> ConsoleError:
    return ConsoleError(403, message, code, type="permission_error")


def not_found(message: str, code: str = "not_found") -> ConsoleError:
    return ConsoleError(404, message, code)


# The sign-in routes a person's browser lands on (an emailed link, a provider's redirect).
# A refusal there sends the browser back to /sign-in, which says why in the person's
# language, rather than showing them JSON; API clients (no text/html) still get the JSON.
BROWSER_SIGN_IN_PATHS = re.compile(r"^/api/auth/(email-link/callback|[a-z]+/(start|callback))$")


def for_browser_sign_in(request: Request, error: ConsoleError) -> Response:
    navigated = "text/html" in request.headers.get("accept", "")
    if request.method == "GET" and navigated and BROWSER_SIGN_IN_PATHS.match(request.url.path):
        return RedirectResponse(
            f"/sign-in?error={quote(error.code)}",
            status_code=303,
            headers={"cache-control": "no-store", "referrer-policy": "no-referrer"},
        )
    return error.response()


def unavailable(request: Request, what: str, retry_after: int) -> Response:
    """503: something the console depends on failed for now (never a 500)."""
    return for_browser_sign_in(
        request,
        ConsoleError(
            503,
            f"The service can not {what} right now. Please retry shortly.",
            "service_unavailable",
            type="api_error",
            headers={"retry-after": str(retry_after)},
        ),
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ConsoleError)
    async def on_console_error(request: Request, error: ConsoleError) -> Response:
        return for_browser_sign_in(request, error)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        kind = str(first.get("type", ""))
        if kind == "json_invalid":
            return bad_request("The body is not valid JSON.", code="invalid_json").response()
        param = ".".join(where) or None
        reason = str(first.get("msg", "invalid value"))
        message = f"Invalid value for '{param}': {reason}." if param else f"Invalid body: {reason}."
        return for_browser_sign_in(request, bad_request(message, param=param))

    @app.exception_handler(HTTPException)
    async def on_http_error(request: Request, error: HTTPException) -> Response:
        if error.status_code in (404, 405):
            message = f"Invalid URL ({request.method} {request.url.path})"
            return ConsoleError(error.status_code, message, "unknown_url").response()
        return ConsoleError(error.status_code, str(error.detail), "http_error").response()

    @app.exception_handler(StoreUnavailable)
    async def on_store_unavailable(request: Request, error: StoreUnavailable) -> Response:
        log.warning("console: data store unavailable: %s", error)
        return unavailable(request, "reach its data store", retry_after=1)

    @app.exception_handler(SecretUnavailable)
    async def on_secret_unavailable(request: Request, error: SecretUnavailable) -> Response:
        log.warning("console: a secret could not be read (%s) on %s", error, request.url.path)
        return unavailable(request, "read its configuration", retry_after=5)

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, error: Exception) -> Response:
        log.error("console: unexpected %s on %s", type(error).__name__, request.url.path)
        return ConsoleError(
            500, "The server had an error.", "internal_error", type="api_error"
        ).response()
