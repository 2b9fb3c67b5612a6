"""The OpenAI-compatible surface: /v1/chat/completions, /v1/completions, /v1/embeddings,
/v1/models. Each route is a thin adapter from HTTP to the domain's Gateway."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from dynoyard.api.responses import RelayResponse
from dynoyard.api.runtime import Runtime
from dynoyard.domain.cache import HEADER as CACHE_HEADER
from dynoyard.domain.cache import client_allows
from dynoyard.domain.catalog import Model
from dynoyard.domain.errors import (
    GatewayError,
    client_closed,
    rate_limit_headers,
    rate_limited,
    request_too_large,
    store_unavailable,
)
from dynoyard.domain.gateway import Call, Gateway
from dynoyard.domain.keys import ApiKey
from dynoyard.domain.ports import RateLimited, StoreUnavailable
from dynoyard.domain.requests import Endpoint

MODEL_CREATED = 0  # the catalog has no creation dates; OpenAI's field is required


def model_object(model: Model) -> dict[str, Any]:
    return {
        "id": model.id,
        "object": "model",
        "created": MODEL_CREATED,
        "owned_by": model.provider.name,
    }


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to be over the limit."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise request_too_large(limit)
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise request_too_large(limit)
    except ClientDisconnect:
        raise client_closed() from None  # recorded as 499, not an error of ours
    return bytes(body)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def cache_allowed(request: Request) -> bool:
    """False when the client asked to bypass the response cache (neither read nor write)."""
    return client_allows(request.headers.get(CACHE_HEADER), request.headers.get("cache-control"))


class CacheLabelledRoute(APIRoute):
    """Every /v1 answer, errors included, says what the response cache did: `hit`, `miss`
    (looked up, not found), or `bypass` (not consulted: the organization's cache is off,
    the client asked to bypass it, the request is one that is never cached, or the answer
    came before the lookup)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def labelled(request: Request) -> Response:
            try:
                response = await handler(request)
            except GatewayError as error:
                error.headers = {**error.headers, CACHE_HEADER: _cache_status(request)}
                raise
            response.headers.setdefault(CACHE_HEADER, _cache_status(request))
            return response

        return labelled


def _cache_status(request: Request) -> str:
    return str(getattr(request.state, "cache_status", "bypass"))


async def cached_response(gateway: Gateway, call: Call) -> Response:
    """A cache hit, buffered or as a stream, as the client asked."""
    body = await gateway.serve_cached(call)
    headers = rate_limit_headers(call.hold.limits if call.hold is not None else ())
    if call.parsed is not None and call.parsed.stream:
        headers["cache-control"] = "no-cache"
        return Response(body, media_type="text/event-stream", headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def build_router(runtime: Runtime) -> APIRouter:
    router = APIRouter(prefix="/v1", route_class=CacheLabelledRoute)

    async def authenticated(request: Request) -> ApiKey:
        """The caller's key, after the client IP's limits; a failed attempt counts."""
        ip = client_ip(request)
        try:
            runtime.ip_guard.admit(ip)
            try:
                return await runtime.gateway.authenticate(request.headers.get("authorization"))
            except GatewayError as error:
                if error.code == "invalid_api_key":
                    await runtime.ip_guard.failed(ip)
                raise
        except RateLimited as limited:
            raise rate_limited(limited) from None
        except StoreUnavailable:
            raise store_unavailable() from None

    async def proxy(request: Request, endpoint: Endpoint) -> Response:
        gateway = runtime.gateway
        key = await authenticated(request)
        request_id, ip = request.state.request_id, client_ip(request)
        try:
            body = await read_body(request, runtime.settings.max_body_bytes)
        except GatewayError as error:
            await gateway.refuse(key, endpoint, ip, request_id, error)
            raise
        call = await gateway.start(key, endpoint, body, ip, request_id, cache_allowed(request))
        try:
            if call.cache_status == "hit":
                return await cached_response(gateway, call)
            upstream = await gateway.open_upstream(call)
            headers = rate_limit_headers(call.hold.limits if call.hold is not None else ())
            if call.served is not None:  # which provider answered, after any fallback
                headers["x-dynoyard-provider"] = call.served.provider.name
            if call.parsed is not None and call.parsed.stream:
                return RelayResponse(
                    gateway.relay(call, upstream),
                    on_close=lambda: gateway.abandon(call, client_closed()),
                    headers={"cache-control": "no-cache", "x-accel-buffering": "no", **headers},
                )
            raw = await gateway.complete(call, upstream)
            return Response(raw, media_type="application/json", headers=headers)
        except BaseException:
            # Whatever escaped, the hold is returned before the answer (or the cancellation)
            # goes on; a stream settles itself when it closes.
            with anyio.CancelScope(shield=True):
                await gateway.abandon(call)
            raise
        finally:
            request.state.upstream_ms = call.upstream_seconds * 1000
            request.state.cache_status = call.cache_status

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await proxy(request, "chat/completions")

    @router.post("/completions")
    async def completions(request: Request) -> Response:
        return await proxy(request, "completions")

    @router.post("/embeddings")
    async def embeddings(request: Request) -> Response:
        return await proxy(request, "embeddings")

    @router.get("/models")
    async def list_models(request: Request) -> JSONResponse:
        key = await authenticated(request)
        data = [model_object(m) for m in runtime.gateway.models_for(key)]
        return JSONResponse({"object": "list", "data": data})

    @router.get("/models/{model_id:path}")
    async def get_model(model_id: str, request: Request) -> JSONResponse:
        key = await authenticated(request)
        return JSONResponse(model_object(runtime.gateway.model_for(key, model_id)))

    @router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def unknown(path: str, request: Request) -> Response:
        raise GatewayError(
            404,
            f"Invalid URL ({request.method} /v1/{path})",
            code="unknown_url",
        )

    return router
