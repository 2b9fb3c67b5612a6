"""The one outbound HTTP stack: an aiohttp session per event loop, reused across requests
and, on Lambda, across invocations of a warm instance.

aiohttp rather than httpx: on this project's 2-core machine a keep-alive POST costs ~0.27 ms
of CPU through aiohttp and ~1.3 ms through httpx (bench/README.md), and a gateway request
makes three (hold, upstream, settle). The price is HTTP/1.1 only toward upstreams.
"""

from __future__ import annotations

import asyncio
import weakref

import aiohttp


class SessionPerLoop:
    """A pooled connection belongs to the loop that opened it; tests, the CLI and some hosts
    run more than one loop per process (even at once, in threads), so each loop gets its own
    session."""

    def __init__(self, limit: int = 512) -> None:
        self._limit = limit
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, aiohttp.ClientSession
        ] = weakref.WeakKeyDictionary()

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=60)
            # aiohttp advertises gzip and deflate, so it must also decode them.
            session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
            self._sessions[loop] = session
        return session

    async def close(self) -> None:
        """Closes the running loop's session."""
        session = self._sessions.pop(asyncio.get_running_loop(), None)
        if session is not None and not session.closed:
            await session.close()
