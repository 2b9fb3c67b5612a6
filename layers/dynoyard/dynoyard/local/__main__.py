"""`python -m dynoyard.local {bootstrap,dev,test}`: what `make dev` and `make test` run."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from dynoyard.local import dynamodb_local
from dynoyard.local.tables import default_table_names, ensure_tables, local_client

LOCAL_DIR = Path(".local")
BIN = Path(sys.executable).parent
# Each step of `make test`, in order; the first failure stops the run.
TEST_STEPS: list[tuple[str, list[str]]] = [
    ("ruff check", [str(BIN / "ruff"), "check", "."]),
    ("ruff format", [str(BIN / "ruff"), "format", "--check", "."]),
    ("mypy", [str(BIN / "mypy")]),
    ("cfn-lint", [str(BIN / "cfn-lint"), "template.yaml"]),
    ("pytest", [str(BIN / "pytest"), "-q", "-p", "no:cacheprovider"]),
]


def bootstrap() -> subprocess.Popen[bytes] | None:
    """DynamoDB Local running, the environment pointing at it, every table created."""
    port = dynamodb_local.port_from_env()
    process = dynamodb_local.ensure_running(port, LOCAL_DIR / "dynamodb")
    os.environ.setdefault("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local.endpoint(port))
    os.environ["DYNAMODB_PORT"] = str(port)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", "local"),
        ("AWS_SECRET_ACCESS_KEY", "local"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        os.environ.setdefault(name, value)
    created = ensure_tables(local_client(), default_table_names())
    state = "started" if process else "already running"
    print(f"DynamoDB Local {state} on port {port}; tables created: {', '.join(created) or 'none'}")
    return process


def run_tests(extra: list[str]) -> int:
    for label, argv in TEST_STEPS:
        command = argv + extra if label == "pytest" else argv
        print(f"==> {label}", flush=True)
        code = subprocess.call(command)  # noqa: S603 - our own tools
        if code != 0:
            print(f"make test: step '{label}' failed (exit {code})", file=sys.stderr)
            return code or 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dynoyard.local")
    parser.add_argument("command", choices=["bootstrap", "dev", "test"])
    parser.add_argument("extra", nargs=argparse.REMAINDER, help="after --: passed to pytest")
    args = parser.parse_args(argv)
    extra = [a for a in args.extra if a != "--"]
    process = bootstrap()
    try:
        if args.command == "dev":
            from dynoyard.local.devserver import serve

            serve(port=int(os.environ.get("PORT", "8080")))
            return 0
        if args.command == "test":
            return run_tests(extra)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if args.command != "bootstrap":
            dynamodb_local.stop(process)


if __name__ == "__main__":
    sys.exit(main())
