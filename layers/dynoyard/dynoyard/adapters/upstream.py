"""OpenAI-compatible upstreams over the shared aiohttp session (see http_session.py).
Connect failures are retried once; timeouts and resets become the domain's errors.
Compressed answers are decoded by the session, so what is read is what is charged."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp

from dynoyard.adapters.http_session import SessionPerLoop
from dynoyard.domain.catalog import Provider
from dynoyard.domain.ports import UpstreamTimeout, UpstreamUnavailable

CONNECT_ATTEMPTS = 2
READ_CHUNK = 64 * 1024


class AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status

    async def iter_bytes(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from None
        except aiohttp.ClientError as exc:
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
        # Releasing a response that was not read to the end closes its connection, which
        # tells the upstream to stop generating.
        self._response.release()


class AiohttpUpstream:
    def __init__(
        self,
        api_key_for: Callable[[str], str | None],
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        self._api_key_for = api_key_for
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._sessions = SessionPerLoop()

    async def send(
        self, provider: Provider, path: str, body: bytes, stream: bool, seconds_left: float
    ) -> AiohttpResponse:
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
        }
        if provider.api_key_env:
            key = self._api_key_for(provider.api_key_env)
            if key:
                headers["authorization"] = f"Bearer {key}"
        session = self._sessions.get()
        # `total` bounds the whole exchange, the body read to its end included.
        limits = aiohttp.ClientTimeout(
            total=seconds_left, sock_connect=self._connect_timeout, sock_read=self._read_timeout
        )
        for attempt in range(1, CONNECT_ATTEMPTS + 1):
            try:
                response = await session.post(
                    provider.base_url + path, data=body, headers=headers, timeout=limits
                )
                return AiohttpResponse(response)
            except aiohttp.ClientConnectorError as exc:
                if attempt == CONNECT_ATTEMPTS:
                    raise UpstreamUnavailable(str(exc)) from None
            except TimeoutError as exc:
                raise UpstreamTimeout(str(exc)) from None
            except aiohttp.ClientError as exc:
                raise UpstreamUnavailable(str(exc)) from None
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._sessions.close()
