"""`make dev`: the whole system on one local port, with the built-in demo upstream."""

from __future__ import annotations

import os
from pathlib import Path

import uvicorn

from dynoyard.adapters.dynamo import BlockingStore
from dynoyard.api.app import create_app
from dynoyard.console.app import ConsoleBeside, create_console_app
from dynoyard.local import demo_upstream
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
    return app


def serve(port: int = 8080, host: str = "127.0.0.1") -> None:
    app = build_dev_app(port)
    demo = ensure_demo_org(BlockingStore(app.state.runtime.store), LOCAL_DIR / "demo-org")
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
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
