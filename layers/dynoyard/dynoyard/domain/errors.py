"""Errors the gateway answers with, in OpenAI's shape and with OpenAI's status codes.
`GatewayError.body()` is the one place that shape is built: JSON answers, a stream's last
event and the middleware's last-resort 500 all use it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dynoyard.domain.ports import LimitState, RateLimited


class GatewayError(Exception):
    """An error a client sees as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid_api_key(message: str = "Incorrect API key provided.") -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


def model_not_allowed(model: str) -> GatewayError:
    return GatewayError(
        403, f"This API key is not allowed to use the model '{model}'.", code="model_not_allowed"
    )


def model_not_found(model: str) -> GatewayError:
    return GatewayError(
        404,
        f"The model '{model}' does not exist or you do not have access to it.",
        code="model_not_found",
        param="model",
    )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> GatewayError:
    return GatewayError(400, message, param=param, code=code)


def request_too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large"
    )


def insufficient_quota() -> GatewayError:
    return GatewayError(
        429,
        "Your balance is too low to cover this request. Add credits to continue.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def rate_limit_headers(states: Iterable[LimitState]) -> dict[str, str]:
    """OpenAI's x-ratelimit-* headers for the limits a request counted against."""
    headers: dict[str, str] = {}
    for state in states:
        headers[f"x-ratelimit-limit-{state.kind}"] = str(state.limit)
        headers[f"x-ratelimit-remaining-{state.kind}"] = str(state.remaining)
        headers[f"x-ratelimit-reset-{state.kind}"] = f"{state.reset_seconds}s"
    return headers


def rate_limited(limited: RateLimited) -> GatewayError:
    state = limited.state
    headers = rate_limit_headers([state] if state is not None else [])
    headers["retry-after"] = str(limited.retry_after_seconds)
    return GatewayError(
        429,
        f"{limited.message} Retry after the time in 'retry-after'.",
        type=state.kind if state is not None else "requests",
        code="rate_limit_exceeded",
        headers=headers,
    )


def spend_cap_reached(cap: str, retry_after_seconds: int) -> GatewayError:
    period = "day" if cap == "daily_usd" else "month"
    return GatewayError(
        429,
        f"This API key has reached its spend cap for the {period} (UTC). Retry after the"
        " time in 'retry-after', or raise the cap.",
        type="insufficient_quota",
        code="spend_cap_reached",
        headers={"retry-after": str(retry_after_seconds)},
    )


def store_unavailable() -> GatewayError:
    return GatewayError(
        503,
        "The gateway can not reach its data store right now. Please retry shortly.",
        type="api_error",
        code="service_unavailable",
        headers={"retry-after": "1"},
    )


def upstream_error(message: str = "The upstream provider failed to answer.") -> GatewayError:
    return GatewayError(502, message, type="api_error", code="upstream_error")


def upstream_timeout(
    message: str = "The upstream provider did not answer in time.",
) -> GatewayError:
    return GatewayError(504, message, type="api_error", code="upstream_timeout")


def provider_credentials_refused(provider: str, status: int) -> GatewayError:
    """The provider refused the gateway's own key: the operator's fault, not the client's.
    Nothing of the provider's text is passed on: it can quote part of that key."""
    return upstream_error(
        f"The upstream provider '{provider}' refused the gateway's provider credentials"
        f" (status {status}). This is a configuration problem of the gateway, not of your"
        " API key."
    )


def deadline_exceeded(seconds: float) -> GatewayError:
    return upstream_timeout(
        f"The request could not finish within the gateway's deadline of {seconds:g} seconds."
    )


def client_closed() -> GatewayError:
    """Recorded, never sent: the client went away first (nginx's 499)."""
    return GatewayError(499, "The client closed the request.", code="client_closed")


def internal_error() -> GatewayError:
    return GatewayError(
        500,
        "The server had an error while processing your request.",
        type="api_error",
        code="internal_error",
    )
