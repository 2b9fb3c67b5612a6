"""The console API's FastAPI application: routes under `/api`, the OpenAPI document at
`/api/openapi.json` (no docs pages), every error in the console's one shape."""

from __future__ import annotations

import time
from collections.abc import Callable

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from dynoyard import __version__
from dynoyard.console import (
    auth,
    auto_recharge,
    billing,
    keys,
    oauth_routes,
    orgs,
    rights,
    team,
    unsubscribe,
    usage,
)
from dynoyard.console.errors import install_error_handlers
from dynoyard.console.runtime import ConsoleRuntime
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.email import EmailSender
from dynoyard.web import assets, pages, site
from dynoyard.web.security import SecurityHeaders


def create_console_app(
    settings: ConsoleSettings | None = None,
    *,
    email_sender: EmailSender | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    """`email_sender` defaults to EmailSettings' choice (Resend, SES, or the outbox in
    DYNOYARD_OUTBOX_DIR); tests pass their own sender and a fake clock."""
    app = FastAPI(
        title="Dynoyard console API",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    settings = settings or ConsoleSettings()
    app.state.console = ConsoleRuntime(settings, email_sender, clock)
    app.include_router(auth.router)
    app.include_router(oauth_routes.router)
    app.include_router(orgs.router)
    app.include_router(keys.router)
    app.include_router(team.router)
    app.include_router(usage.router)
    app.include_router(rights.router)
    app.include_router(billing.router)
    app.include_router(auto_recharge.router)
    app.include_router(unsubscribe.router)
    app.include_router(pages.router)
    app.include_router(site.router)
    app.include_router(assets.router)
    install_error_handlers(app)
    app.add_middleware(
        SecurityHeaders,
        analytics_origin=settings.analytics_origin,
        https=not settings.local_http,
    )
    return app


def served_by_console(path: str) -> bool:
    """The console function's paths: its API, the web pages and their assets."""
    return (
        path == "/api"
        or path.startswith("/api/")
        or path in pages.PAGE_PATHS
        or path == "/console"
        or path.startswith(pages.PAGE_PREFIXES)
    )


class ConsoleBeside:
    """ASGI middleware serving the console's paths (`served_by_console`: the API, the pages,
    their assets) from the console app and all else from the app it wraps: `make dev` serves
    both on one port."""

    def __init__(self, app: ASGIApp, console: ASGIApp) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] in ("http", "websocket") else ""
        if served_by_console(path):
            await self.console(scope, receive, send)
        else:
            await self.app(scope, receive, send)
