"""The streaming entrance's start script (functions/gateway/run.sh), as the Lambda Web
Adapter runs it: the same app under uvicorn, trusting the adapter's X-Forwarded-For."""

from __future__ import annotations

import os
import subprocess

import httpx

from tests.conftest import GATEWAY_SETTINGS, ROOT, UPSTREAM_SECRET, free_port, wait_healthy


def test_given_run_sh_when_started_then_it_streams_and_records_the_forwarded_client_ip(
    tables, catalog_path, make_account
):
    port = free_port()
    env = {
        **os.environ,
        **tables.env,
        **GATEWAY_SETTINGS,
        "PORT": str(port),
        "DYNOYARD_MODELS_FILE": str(catalog_path),
        "FAKE_PROVIDER_KEY": UPSTREAM_SECRET,
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
    }
    process = subprocess.Popen(
        ["bash", str(ROOT / "functions" / "gateway" / "run.sh")],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_healthy(base, process)
        account = make_account("1")
        with httpx.stream(
            "POST",
            base + "/v1/chat/completions",
            json={
                "model": "test-chat",
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
            },
            headers={"authorization": f"Bearer {account.key}", "x-forwarded-for": "203.0.113.9"},
            timeout=10,
        ) as response:
            events = [line for line in response.iter_lines() if line.startswith("data: ")]
            request_id = response.headers["x-request-id"]
        assert events[-1] == "data: [DONE]" and len(events) > 3
        assert tables.usage_item(request_id)["client_ip"]["S"] == "203.0.113.9"
    finally:
        process.terminate()
        process.wait(timeout=10)
