"""OpenAI-compatible upstreams over one shared `httpx.AsyncClient` per event loop.

Connections (and TLS sessions) are reused across requests and, on Lambda, across
invocations of a warm instance. Connect failures are retried once by the transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import httpx

from dynoyard.domain.catalog import Provider
from dynoyard.domain.ports import UpstreamTimeout, UpstreamUnavailable


class HttpxResponse:
    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self.status = response.status_code

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.aiter_raw():
                yield chunk
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from None
        except (httpx.TransportError, httpx.StreamError) as exc:
            raise UpstreamUnavailable(str(exc)) from None

    async def read(self, limit: int) -> bytes:
        """At most `limit` bytes of the body; reading stops there."""
        body = bytearray()
        async for chunk in self.iter_bytes():
            body += chunk
            if len(body) >= limit:
                break
        return bytes(body[:limit])

    async def close(self) -> None:
        await self._response.aclose()


class HttpxUpstream:
    def __init__(
        self,
        api_key_for: Callable[[str], str | None],
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self._api_key_for = api_key_for
        self._timeout = httpx.Timeout(
            connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout
        )
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _client_for_loop(self) -> httpx.AsyncClient:
        # A pooled connection belongs to the loop that opened it; tests and some hosts
        # run more than one loop per process.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                http2=True,
                transport=httpx.AsyncHTTPTransport(retries=1, http2=True),
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=128),
                follow_redirects=False,
            )
            self._loop = loop
        return self._client

    async def send(self, provider: Provider, path: str, body: bytes, stream: bool) -> HttpxResponse:
        headers = {"content-type": "application/json", "accept": "application/json"}
        if stream:
            headers["accept"] = "text/event-stream"
        if provider.api_key_env:
            key = self._api_key_for(provider.api_key_env)
            if key:
                headers["authorization"] = f"Bearer {key}"
        client = self._client_for_loop()
        request = client.build_request(
            "POST", provider.base_url + path, content=body, headers=headers
        )
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from None
        except httpx.TransportError as exc:
            raise UpstreamUnavailable(str(exc)) from None
        return HttpxResponse(response)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
