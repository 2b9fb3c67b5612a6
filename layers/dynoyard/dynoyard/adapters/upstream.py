"""OpenAI-compatible upstreams over the shared aiohttp session (see http_session.py).
One attempt per `send`: timeouts, connect errors and resets become the domain's errors,
and retrying is the domain's one policy (domain/resilience.py), which reads the upstream's
`retry-after`. Compressed answers are decoded by the session, so what is read is what is
charged."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import aiohttp

from dynoyard.adapters.http_session import SessionPerLoop
from dynoyard.domain.catalog import Provider
from dynoyard.domain.ports import SecretUnavailable, UpstreamTimeout, UpstreamUnavailable
from dynoyard.observability import subsegment

READ_CHUNK = 64 * 1024


def retry_after_of(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """Seconds an upstream asks to wait: OpenAI's `retry-after-ms`, else `retry-after` in
    seconds or as an HTTP date; None when absent or unreadable."""
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = headers.get("retry-after")
    seconds = _seconds(value)
    if seconds is not None or not value:
        return seconds
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value else None
    except ValueError:
        return None
    return None if seconds is None or math.isnan(seconds) or seconds < 0 else seconds


class AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status = response.status
        self.retry_after = retry_after_of(response.headers) if response.status >= 400 else None

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
            try:
                key = self._api_key_for(provider.api_key_env)
            except SecretUnavailable as exc:  # like an unreachable provider: retried, fallen back
                raise UpstreamUnavailable(f"provider key unreadable: {exc}") from None
            if key:
                headers["authorization"] = f"Bearer {key}"
        session = self._sessions.get()
        # `total` bounds the whole exchange, the body read to its end included.
        limits = aiohttp.ClientTimeout(
            total=seconds_left, sock_connect=self._connect_timeout, sock_read=self._read_timeout
        )
        try:
            # Traced up to the answer's headers (a stream's body is read later).
            with subsegment(f"upstream {provider.name}"):
                response = await session.post(
                    provider.base_url + path, data=body, headers=headers, timeout=limits
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(str(exc)) from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(str(exc)) from None
        return AiohttpResponse(response)

    async def aclose(self) -> None:
        await self._sessions.close()
