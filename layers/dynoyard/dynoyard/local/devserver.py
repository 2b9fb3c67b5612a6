"""`make dev`: the whole system on one local port, with the built-in demo upstream."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from dynoyard.adapters.dynamo.store import blocking_store
from dynoyard.api.app import create_app
from dynoyard.billing.webhook import PATH as WEBHOOK_PATH
from dynoyard.billing.webhook import create_webhook_app
from dynoyard.console.app import ConsoleBeside, create_console_app
from dynoyard.local import demo_upstream, stripe_standin
from dynoyard.local.seed import ensure_demo_org
from dynoyard.settings import GatewaySettings

LOCAL_DIR = Path(".local")


def build_dev_app(port: int):  # type: ignore[no-untyped-def]
    os.environ.setdefault("DYNOYARD_DEMO_API_KEY", "demo")
    os.environ.setdefault("DYNOYARD_DEMO_BASE_URL", f"http://127.0.0.1:{port}/demo/v1")
    os.environ.setdefault("DYNOYARD_PUBLIC_URL", f"http://127.0.0.1:{port}")
    app = create_app(GatewaySettings())
    app.mount("/demo", demo_upstream.create_app())
    # The console API (/api/...) on the same port; email goes to DYNOYARD_OUTBOX_DIR.
    app.add_middleware(ConsoleBeside, console=create_console_app())
    # Stripe's events (the webhook function's app) on the same port.
    app.add_middleware(WebhookBeside, webhook=create_webhook_app())
    return app


class WebhookBeside:
    """ASGI middleware: `/webhooks/stripe` to the webhook app, all else to the app it wraps."""

    def __init__(self, app: ASGIApp, webhook: ASGIApp) -> None:
        self.app = app
        self.webhook = webhook

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == WEBHOOK_PATH:
            await self.webhook(scope, receive, send)
        else:
            await self.app(scope, receive, send)


# Not secrets: the stand-in takes only this key, and signs with this fake webhook secret.
STANDIN_SECRET_KEY = "sk_test_standin"  # noqa: S105
STANDIN_WEBHOOK_SECRET = "whsec_standin_local_only"  # noqa: S105


def start_stripe_standin(port: int, host: str = "127.0.0.1") -> uvicorn.Server | None:
    """The Stripe stand-in on its own port (STRIPE_STANDIN_PORT, else a free one), its
    events delivered to this server's /webhooks/stripe, and STRIPE_API_BASE,
    STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET pointing at it. None (real Stripe, in test
    mode) when STRIPE_API_BASE or STRIPE_SECRET_KEY is set already."""
    if os.environ.get("STRIPE_API_BASE") or os.environ.get("STRIPE_SECRET_KEY"):
        return None
    secret = os.environ.setdefault("STRIPE_WEBHOOK_SECRET", STANDIN_WEBHOOK_SECRET)
    app = stripe_standin.create_app(
        f"http://{host}:{port}{WEBHOOK_PATH}", secret, STANDIN_SECRET_KEY
    )
    own_port = int(os.environ.get("STRIPE_STANDIN_PORT") or 0)
    config = uvicorn.Config(
        app, host=host, port=own_port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True, name="stripe-standin").start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the Stripe stand-in did not start")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    os.environ["STRIPE_API_BASE"] = f"http://{host}:{bound}"
    os.environ["STRIPE_SECRET_KEY"] = STANDIN_SECRET_KEY
    return server


def serve(port: int = 8080, host: str = "127.0.0.1") -> None:
    standin = start_stripe_standin(port, host)
    app = build_dev_app(port)
    demo = ensure_demo_org(blocking_store(GatewaySettings()), LOCAL_DIR / "demo-org")
    base = f"http://{host}:{port}"
    print(f"\nDynoyard is serving on {base}  (Ctrl-C stops it)")
    print(f"  demo organization: {demo.org_id}")
    if demo.api_key:
        print(f"  demo API key (shown once, keep it): {demo.api_key}")
    else:
        print("  demo API key: shown on the first run only; make another with")
        print(f"    .venv/bin/dynoyard key create --org {demo.org_id}")
    outbox = os.environ.get("DYNOYARD_OUTBOX_DIR") or ".local/outbox"
    print(f"  console API: {base}/api  (sign-in emails are written to {outbox})")
    if standin is not None:
        standin_url = os.environ["STRIPE_API_BASE"]
        print(f"  Stripe stand-in (local, not Stripe; no money moves): {standin_url}")
        print(f"    top-ups pay on its page; its signed events go to {base}{WEBHOOK_PATH}")
    else:
        print(f"  Stripe: {os.environ.get('STRIPE_API_BASE') or 'https://api.stripe.com'}")
    print(
        "  operator CLI from another shell: "
        f"export AWS_ENDPOINT_URL_DYNAMODB={os.environ.get('AWS_ENDPOINT_URL_DYNAMODB', '')}"
    )
    print(
        f"  try: curl {base}/v1/chat/completions -H 'Authorization: Bearer <key>' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model":"dynoyard-demo","messages":[{"role":"user","content":"Hi"}]}\'\n',
        flush=True,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        if standin is not None:
            standin.should_exit = True
