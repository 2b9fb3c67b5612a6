"""`make dev`'s driver for real: DynamoDB Local started from the npm package, tables from the
template, a demo org whose key is printed once, the demo model answering with no provider
key, Ctrl-C stopping everything, and a second run reusing what is there. Also: a bad
catalog stops the server at start with the bad entry named."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from dynoyard.local.dynamodb_local import is_answering
from tests.conftest import ROOT, free_port, wait_healthy


def dev_env(port: int, ddb_port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_TABLE") and k != "AWS_ENDPOINT_URL_DYNAMODB"
    }
    env |= {
        "PORT": str(port),
        "DYNAMODB_PORT": str(ddb_port),
        "DYNOYARD_MODELS_FILE": str(ROOT / "config" / "models.yaml"),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("DYNOYARD_DEMO_API_KEY", None)
    env.pop("DYNOYARD_DEMO_BASE_URL", None)
    return env


def run_dev(cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "dynoyard.local", "dev"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = ""
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    while "try: curl" not in seen:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            raise AssertionError("make dev stopped:\n" + seen)
        seen += line
        assert time.monotonic() < deadline, seen
    assert wait_healthy(f"http://127.0.0.1:{env['PORT']}", process), seen
    # Keep reading what it prints: a full pipe would block the server mid-request (its
    # logs run past the pipe's 64 KB in a long browser test run).
    threading.Thread(target=process.stdout.read, daemon=True, name="make-dev-output").start()
    return process, seen


def chat(port: int, key: str) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        headers={"authorization": f"Bearer {key}"},
        json={"model": "dynoyard-demo", "messages": [{"role": "user", "content": "Hello!"}]},
        timeout=10,
    )


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGINT)
    process.wait(timeout=20)


def test_given_a_fresh_folder_when_make_dev_runs_twice_then_it_serves_and_reuses(tmp_path):
    port, ddb_port = free_port(), free_port()
    env = dev_env(port, ddb_port)
    process, output = run_dev(tmp_path, env)
    try:
        key = re.search(r"demo API key \(shown once, keep it\): (sk-dy-\S+)", output).group(1)
        answer = chat(port, key)
        assert answer.status_code == 200, answer.text
        assert "demo model" in answer.json()["choices"][0]["message"]["content"]
        models = httpx.get(
            f"http://127.0.0.1:{port}/v1/models", headers={"authorization": f"Bearer {key}"}
        )
        assert {m["id"] for m in models.json()["data"]} == {"dynoyard-demo", "dynoyard-demo-embed"}
        assert (tmp_path / ".local" / "dynamodb").is_dir()
    finally:
        stop(process)
    assert not is_answering(ddb_port) and not is_answering(port)  # Ctrl-C stopped it all

    process, output = run_dev(tmp_path, env)
    try:
        assert "sk-dy-" not in output and "shown on the first run only" in output
        assert chat(port, key).status_code == 200  # the same org, key and credits
    finally:
        stop(process)


def test_given_a_bad_catalog_when_the_server_starts_then_it_fails_naming_the_entry(tmp_path):
    catalog = tmp_path / "models.yaml"
    catalog.write_text(
        json.dumps(
            {
                "providers": {"p": {"base_url": "http://127.0.0.1:1/v1"}},
                "models": [
                    {
                        "id": "broken",
                        "provider": "nope",
                        "upstream": "u",
                        "price": {"input_per_mtok": "1"},
                    }
                ],
            }
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "dynoyard.api.app:create_app",
            "--factory",
            "--port",
            str(free_port()),
        ],
        env={**os.environ, "DYNOYARD_MODELS_FILE": str(catalog)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert "dynoyard: bad model catalog:" in done.stderr
    assert "models[0] (id 'broken'): provider 'nope' is not defined" in done.stderr
    assert "Traceback" not in done.stderr
