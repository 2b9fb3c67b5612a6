"""Shared fixtures: real DynamoDB Local tables built from template.yaml, a fake provider
that is a real HTTP server on 127.0.0.1, and the gateway itself as a uvicorn process."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.store import BlockingStore, DynamoStore
from dynoyard.local.tables import ensure_tables, local_client
from tests import log_scan
from tests.fakes.upstream import FakeProvider

ROOT = Path(__file__).resolve().parents[1]
UPSTREAM_SECRET = f"sk-upstream-SECRET-{uuid.uuid4().hex}"
TABLE_ENV_NAMES = ("ACCOUNTS_TABLE", "USAGE_TABLE", "CACHE_TABLE", "IDEMPOTENCY_TABLE")


# -- the session's log scan (tests/log_scan.py) ---------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    log_scan.start({UPSTREAM_SECRET: "provider key"})


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run when a log line of the session holds a body, a key or a token."""
    leaks = log_scan.finish(session)
    if not leaks:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    lines = [f"log scan: {len(leaks)} line(s) hold a body, a key or a token:"]
    lines += [f"  {what} in {where}: {line}" for where, what, line in leaks[:20]]
    if reporter is not None:
        reporter.write_line("\n".join(lines), red=True)
    else:
        print("\n".join(lines), file=sys.stderr)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def ddb_endpoint() -> str:
    port = os.environ.get("DYNAMODB_PORT", "8000")
    return os.environ.get("AWS_ENDPOINT_URL_DYNAMODB", f"http://127.0.0.1:{port}")


def item_text(item: dict[str, Any]) -> str:
    """An item as text, binary attributes (a cached answer) decoded."""
    return json.dumps(item, default=lambda raw: bytes(raw).decode("utf-8", errors="replace"))


@dataclass
class Tables:
    env: dict[str, str]
    names: dict[str, str]
    client: Any
    store: BlockingStore

    @property
    def accounts(self) -> str:
        return self.names["ACCOUNTS_TABLE"]

    @property
    def usage(self) -> str:
        return self.names["USAGE_TABLE"]

    def scan_all(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for name in self.names.values():
            paginator = self.client.get_paginator("scan")
            for page in paginator.paginate(TableName=name):
                items.extend(page.get("Items", []))
        return items

    def usage_item(self, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The usage record of a request (raw DynamoDB item), waiting briefly for it."""
        deadline = time.monotonic() + timeout
        while True:
            for item in self.scan_table(self.usage):
                if item.get("request_id", {}).get("S") == request_id:
                    return item
            if time.monotonic() > deadline:
                raise AssertionError(f"no usage record for {request_id}")
            time.sleep(0.05)

    def scan_text(self) -> str:
        """Every item of every table as one text, to search for what must not be kept."""
        return "\n".join(item_text(item) for item in self.scan_all())

    def usage_records(self, org_id: str) -> list[dict[str, Any]]:
        """The organization's usage records (raw items); the table also holds the daily
        roll-ups (`DAILY#…`), which are not records."""
        return [
            item
            for item in self.scan_table(self.usage)
            if item.get("org_id", {}).get("S") == org_id
        ]

    def scan_table(self, name: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("scan").paginate(TableName=name):
            out.extend(page.get("Items", []))
        return out


@pytest.fixture(scope="session")
def tables() -> Iterator[Tables]:
    endpoint = ddb_endpoint()
    env = {
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
        "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
    }
    os.environ.update(env)
    try:
        httpx.get(endpoint, timeout=2)
    except httpx.HTTPError:
        pytest.fail(
            f"DynamoDB Local is not answering at {endpoint}: run the suite with `make test`"
        )
    prefix = f"t{uuid.uuid4().hex[:8]}"
    names = {name: f"{prefix}-{name.split('_')[0].lower()}" for name in TABLE_ENV_NAMES}
    client = local_client()
    ensure_tables(client, names)
    env.update(names)
    store = BlockingStore(
        DynamoStore(
            DynamoClient(endpoint, "us-east-1"),
            names["ACCOUNTS_TABLE"],
            names["USAGE_TABLE"],
            cache_table=names["CACHE_TABLE"],
        )
    )
    yield Tables(env=env, names=names, client=client, store=store)
    for name in names.values():
        client.delete_table(TableName=name)


@dataclass
class Account:
    org_id: str
    key: str
    key_id: str
    store: BlockingStore

    def balance(self) -> Decimal:
        return self.store.get_org(self.org_id).balance_usd


@pytest.fixture
def make_account(tables: Tables) -> Callable[..., Account]:
    def make(
        credits: str = "10", models: frozenset[str] = frozenset(), expires_at: int | None = None
    ) -> Account:
        org_id = tables.store.create_org(f"Test {uuid.uuid4().hex[:6]}", "test@example.com")
        if Decimal(credits) != 0:
            tables.store.grant_credits(org_id, Decimal(credits), "test credits")
        new = tables.store.create_key(org_id, "test", models, expires_at)
        return Account(org_id, new.secret, new.key_id, tables.store)

    return make


# -- servers on 127.0.0.1 -----------------------------------------------------------


class ThreadedServer:
    """uvicorn in a thread, on a free port."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return int(self.server.servers[0].sockets[0].getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


class ResettingServer:
    """Accepts connections and resets them at once: a provider that drops the line."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            conn.close()

    def close(self) -> None:
        self._stop = True
        self.sock.close()


@pytest.fixture(scope="session")
def fake_provider() -> Iterator[tuple[FakeProvider, int]]:
    provider = FakeProvider()
    with ThreadedServer(provider.app) as server:
        yield provider, server.port


def wait_healthy(base_url: str, process: subprocess.Popen[Any], seconds: float = 30) -> bool:
    """True once GET /healthz answers 200; False if the process ends or time runs out."""
    deadline = time.monotonic() + seconds
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(base_url + "/healthz", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


TEST_PRICE = {"input_per_mtok": "1.00", "output_per_mtok": "2.00"}
DEAR_PRICE = {"input_per_mtok": "10.00", "output_per_mtok": "20.00"}
# Model id (what clients send) -> upstream name (the fake's behaviour, see tests/fakes).
# Every model costs TEST_PRICE and may answer 1,000 tokens unless its entry says otherwise.
TEST_MODELS: list[dict[str, Any]] = [
    {"id": "test-chat", "upstream": "ok"},
    {"id": "test-embed", "upstream": "embed", "kind": "embedding"},
    {"id": "test-500", "upstream": "fail-500"},
    {"id": "test-400", "upstream": "fail-400"},
    {"id": "test-429", "upstream": "fail-429"},
    {"id": "test-slow", "upstream": "slow"},
    {"id": "test-break", "upstream": "stream-break"},
    {"id": "test-no-usage", "upstream": "no-usage"},
    {"id": "test-slow-chunks", "upstream": "slow-chunks", "max_output_tokens": 300},
    {"id": "test-error-event", "upstream": "error-event"},
    {"id": "test-fallback", "upstream": "fail-500", "fallbacks": ["test-chat"]},
    {"id": "test-reset", "upstream": "ok", "provider": "resetting"},
    {"id": "test-refused", "upstream": "ok", "provider": "nowhere"},
    {"id": "test-hidden", "upstream": "ok", "provider": "keyless"},
    {"id": "test-gzip", "upstream": "gzip"},
    {"id": "test-reasoning", "upstream": "reasoning"},
    {"id": "test-refusal", "upstream": "refusal"},
    {"id": "test-ignores-limit", "upstream": "ignores-limit"},
    {"id": "test-auth-401", "upstream": "auth-401"},
    {"id": "test-auth-403", "upstream": "auth-403"},
    {"id": "test-bad-choices", "upstream": "bad-choices"},
    {"id": "test-deep-nest", "upstream": "deep-nest"},
    {"id": "test-stall", "upstream": "stall"},
    {"id": "test-long", "upstream": "long"},
    {"id": "test-big", "upstream": "big"},
    {"id": "test-dear", "upstream": "ok", "price": DEAR_PRICE},
    {"id": "test-cheap-fallback", "upstream": "fail-500", "fallbacks": ["test-dear"]},
    {
        "id": "test-dear-fallback",
        "upstream": "fail-500",
        "price": DEAR_PRICE,
        "fallbacks": ["test-chat"],
    },
    # Fallbacks on 429, timeout and reset, each landing on a working model.
    {"id": "test-429-fallback", "upstream": "fail-429", "fallbacks": ["test-chat"]},
    {"id": "test-slow-fallback", "upstream": "slow", "fallbacks": ["test-chat"]},
    {
        "id": "test-reset-fallback",
        "upstream": "ok",
        "provider": "resetting",
        "fallbacks": ["test-chat"],
    },
    {"id": "test-400-fallback", "upstream": "fail-400", "fallbacks": ["test-chat"]},
    # A cheap model that times out before a dear fallback: the hold is seen in flight.
    {"id": "test-slow-to-dear", "upstream": "slow", "fallbacks": ["test-dear"]},
    # Only the CONTRACT's keys: no kind, no max_output_tokens, nothing optional.
    {"id": "test-contract-embed", "upstream": "embed", "contract_only": True},
    # Retries, fallbacks and circuit breaking (tests/e2e/test_resilience.py).
    {"id": "test-flaky-500", "upstream": "flaky-500-2"},
    {"id": "test-flaky-429", "upstream": "flaky-429-1"},
    {"id": "test-flaky-slow", "upstream": "flaky-slow-1"},
    {"id": "test-429-long", "upstream": "fail-429-long", "fallbacks": ["test-chat"]},
    {"id": "test-auth-fallback", "upstream": "auth-401", "fallbacks": ["test-chat"]},
    {"id": "test-down", "upstream": "down-a", "fallbacks": ["test-chat"]},
    {"id": "test-down-alone", "upstream": "down-a"},
    {"id": "test-reset-alone", "upstream": "reset-alone", "provider": "resetting"},
    {"id": "test-recovering", "upstream": "flaky-503-5", "fallbacks": ["test-chat"]},
    {"id": "test-garbage-sse", "upstream": "garbage-sse"},
]


def catalog_entry(model: dict[str, Any]) -> dict[str, Any]:
    """A TEST_MODELS row as the catalog holds it, with the defaults filled in."""
    model = dict(model)
    if model.pop("contract_only", False):
        return {"provider": "fake", "price": TEST_PRICE, **model}
    return {"provider": "fake", "price": TEST_PRICE, "max_output_tokens": 1000, **model}


def model_price(model_id: str) -> dict[str, str]:
    """The catalog price of a test model."""
    return catalog_entry(next(m for m in TEST_MODELS if m["id"] == model_id))["price"]


@pytest.fixture(scope="session")
def catalog_path(
    fake_provider: tuple[FakeProvider, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    _, port = fake_provider
    resetting = ResettingServer()
    catalog = {
        "providers": {
            "fake": {"base_url": f"http://127.0.0.1:{port}/v1", "api_key_env": "FAKE_PROVIDER_KEY"},
            "resetting": {"base_url": f"http://127.0.0.1:{resetting.port}/v1"},
            "nowhere": {"base_url": f"http://127.0.0.1:{free_port()}/v1"},
            "keyless": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "UNSET_PROVIDER_KEY"},
        },
        "models": [catalog_entry(m) for m in TEST_MODELS],
    }
    path = tmp_path_factory.mktemp("catalog") / "models.yaml"
    path.write_text(json.dumps(catalog))  # JSON is YAML
    yield path
    resetting.close()


@dataclass
class GatewayProcess:
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str, **kwargs: Any) -> Any:
        import openai

        return openai.OpenAI(base_url=self.base_url + "/v1", api_key=key, max_retries=0, **kwargs)


GATEWAY_SETTINGS = {
    "DYNOYARD_KEY_CACHE_SECONDS": "0",
    "DYNOYARD_UPSTREAM_READ_TIMEOUT": "1.5",
    "DYNOYARD_MAX_BODY_BYTES": "65536",
    # One upstream call per route step, as the tests of fallbacks count them, and no breaker
    # whose state would depend on the order of tests; tests/e2e/test_resilience.py runs
    # gateways with the defaults (2 retries, breaker on).
    "DYNOYARD_UPSTREAM_RETRIES": "0",
    "DYNOYARD_BREAKER_FAILURES": "0",
    # Every test comes from 127.0.0.1: the IP limits get tests (and gateways) of their own.
    "DYNOYARD_IP_REQUESTS_PER_MINUTE": "1000000",
    "DYNOYARD_IP_FAILED_KEYS_PER_MINUTE": "1000000",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "INFO",
    "POWERTOOLS_METRICS_NAMESPACE": "DynoyardTest",
    "PYTHONUNBUFFERED": "1",
}


def gateway_env(
    tables: Tables, catalog_path: Path, overrides: dict[str, str | None] | None = None
) -> dict[str, str]:
    """The environment of a test gateway: GATEWAY_SETTINGS changed by `overrides` (a value
    of None unsets the variable)."""
    env = {
        **os.environ,
        **tables.env,
        **GATEWAY_SETTINGS,
        "DYNOYARD_MODELS_FILE": str(catalog_path),
        "FAKE_PROVIDER_KEY": UPSTREAM_SECRET,
    }
    env.pop("UNSET_PROVIDER_KEY", None)
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


@contextlib.contextmanager
def served(
    argv: list[str], env: dict[str, str], port: int, log_path: Path
) -> Iterator[GatewayProcess]:
    """`argv` serving on `port`, its output in `log_path`; stopped on exit."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(base_url, process):
            raise RuntimeError(f"{argv[-1]} did not start:\n" + log_path.read_text())
        yield GatewayProcess(base_url, log_path, process, env)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@contextlib.contextmanager
def running_gateway(
    tables: Tables,
    catalog_path: Path,
    log_dir: Path,
    overrides: dict[str, str | None] | None = None,
) -> Iterator[GatewayProcess]:
    """The gateway as a uvicorn process on a free port (see gateway_env); stopped on exit."""
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "dynoyard.api.app:create_app", "--factory"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    env = gateway_env(tables, catalog_path, overrides)
    with served(argv, env, port, log_dir / "gateway.log") as process:
        yield process


@pytest.fixture(scope="session")
def gateway(
    tables: Tables, catalog_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    with running_gateway(tables, catalog_path, tmp_path_factory.mktemp("gateway")) as process:
        yield process


# -- the two Lambda entrances --------------------------------------------------------

EVENTS = ROOT / "events"


class FakeContext:
    """The Lambda context object, as the runtime passes it."""

    function_name = "dynoyard-gateway"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:dynoyard-gateway"
    memory_limit_in_mb = 1024
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    log_group_name = "/aws/lambda/dynoyard-gateway"
    log_stream_name = "2026/11/25/[$LATEST]abc"

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


def lambda_event(
    name: str, key: str | None = None, raw_body: str | None = None, **body_changes: Any
) -> dict[str, Any]:
    """An API Gateway event from events/, with the key, a whole new body or some body
    fields changed."""
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    if key is not None:
        (data.get("headers") or {})["Authorization"] = f"Bearer {key}"
        multi = data.get("multiValueHeaders") or {}
        if "Authorization" in multi:
            multi["Authorization"] = [f"Bearer {key}"]
    if raw_body is not None:
        data["body"] = raw_body
    elif body_changes and data.get("body"):
        body = json.loads(data["body"])
        body.update(body_changes)
        data["body"] = json.dumps(body)
    return data


def lambda_header(response: dict[str, Any], name: str) -> str:
    for source in (response.get("headers") or {}, response.get("multiValueHeaders") or {}):
        for key, value in source.items():
            if key.lower() == name:
                return str(value[0] if isinstance(value, list) else value)
    raise KeyError(name)


@contextlib.contextmanager
def loaded_lambda_handler(tables: Tables, catalog_path: Path, name: str) -> Iterator[Any]:
    """functions/gateway/app.py's handler, imported as Lambda would, in this process, with
    the test gateway's settings in the environment while it is in use."""
    import importlib.util

    patch = pytest.MonkeyPatch()
    for variable, value in {**tables.env, **GATEWAY_SETTINGS}.items():
        patch.setenv(variable, value)
    patch.setenv("DYNOYARD_MODELS_FILE", str(catalog_path))
    patch.setenv("FAKE_PROVIDER_KEY", UPSTREAM_SECRET)
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "gateway" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module.handler
    finally:
        patch.undo()
        sys.modules.pop(name, None)


@pytest.fixture(scope="session")
def stream_entrance(
    tables: Tables, catalog_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """functions/gateway/run.sh as the Lambda Web Adapter runs it (uvicorn, trusting the
    adapter's X-Forwarded-For), its output in a log file."""
    port = free_port()
    env = gateway_env(tables, catalog_path)
    env |= {"PORT": str(port), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    argv = ["bash", str(ROOT / "functions" / "gateway" / "run.sh")]
    log_path = tmp_path_factory.mktemp("stream-entrance") / "run.log"
    with served(argv, env, port, log_path) as process:
        yield process
