"""Security headers on every answer of the console function (pages, assets and API): a
strict Content-Security-Policy (scripts only from this origin, no inline script), no
framing, no sniffing, a same-origin referrer, and HSTS when served over https (on AWS)."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(analytics_origin: str | None) -> str:
    connect = "'self'" + (f" {analytics_origin}" if analytics_origin else "")
    return "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "font-src 'self'",
            f"connect-src {connect}",
            "form-action 'self'",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "manifest-src 'self'",
        )
    )


class SecurityHeaders:
    def __init__(self, app: ASGIApp, *, analytics_origin: str | None, https: bool) -> None:
        self.app = app
        self.headers = [
            (b"content-security-policy", content_security_policy(analytics_origin).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", b"same-origin"),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
        ]
        if https:
            self.headers.append(
                (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in self.headers if n not in present]
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)
