"""The console app's frame: routes under /api, the OpenAPI document, one error shape for
every status, the Lambda handler (Mangum), and `make dev`'s app serving it beside the
gateway."""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dynoyard.console.app import create_console_app
from dynoyard.console.settings import ConsoleSettings
from tests.conftest import EVENTS, ROOT, FakeContext, Tables


def settings_for(tables: Tables, **changes: Any) -> ConsoleSettings:
    return ConsoleSettings(
        accounts_table=tables.names["ACCOUNTS_TABLE"],
        usage_table=tables.names["USAGE_TABLE"],
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=tables.env["AWS_ENDPOINT_URL_DYNAMODB"],
        **changes,
    )


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return dict(error)


@pytest.fixture(scope="module")
def app(tables: Tables) -> Any:
    return create_console_app(settings_for(tables))


def test_openapi_document_is_served_under_api_and_lists_the_routes(app: Any) -> None:
    response = call(app, "GET", "/api/openapi.json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/api/auth/email-link", "/api/auth/email-link/callback", "/api/me"):
        assert path in paths
    assert all(p.startswith("/api/") for p in paths)


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json", "/api/docs", "/api/nope"])
def test_no_docs_pages_and_unknown_paths_are_404_in_the_error_shape(app: Any, path: str) -> None:
    assert_error(call(app, "GET", path), 404, "unknown_url")


def test_wrong_method_is_405_in_the_error_shape(app: Any) -> None:
    assert_error(call(app, "PUT", "/api/auth/email-link"), 405, "unknown_url")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "email"),
        ({"email": 42, "accept_terms": True}, "email"),
        ({"email": ["a@b.co"]}, "email"),
        ({"email": "a@example.com", "accept_terms": "yes"}, "accept_terms"),
        ({"email": "a@example.com", "accept_terms": 1}, "accept_terms"),
        ({"email": "a@example.com", "name": {"x": 1}}, "name"),
        ({"email": "a@example.com", "admin": True}, "admin"),
    ],
)
def test_validation_errors_are_400_naming_the_field(
    app: Any, body: dict[str, Any], param: str
) -> None:
    error = assert_error(call(app, "POST", "/api/auth/email-link", json=body), 400)
    assert error["param"] == param


@pytest.mark.parametrize("raw", [b"{", b"null", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_bodies_that_are_not_objects_are_400(app: Any, raw: bytes) -> None:
    response = call(
        app,
        "POST",
        "/api/auth/email-link",
        content=raw,
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400)


def test_a_missing_session_is_401(app: Any) -> None:
    assert_error(call(app, "GET", "/api/me"), 401, "not_signed_in")


@pytest.fixture
def console_handler(tables: Tables, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """functions/console/app.py's handler, imported as Lambda would."""
    for variable, value in tables.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    spec = importlib.util.spec_from_file_location(
        "console_lambda", ROOT / "functions" / "console" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["console_lambda"] = module
    try:
        spec.loader.exec_module(module)
        yield module.handler
    finally:
        sys.modules.pop("console_lambda", None)


def rest_event(method: str, path: str, body: str | None = None) -> dict[str, Any]:
    event: dict[str, Any] = copy.deepcopy(json.loads((EVENTS / "healthz.json").read_text()))
    event |= {
        "resource": "/api/{proxy+}",
        "path": path,
        "httpMethod": method,
        "pathParameters": {"proxy": path.removeprefix("/api/")},
        "body": body,
        "isBase64Encoded": False,
    }
    event["requestContext"] = {**event.get("requestContext", {}), "httpMethod": method}
    event["requestContext"]["path"] = path
    headers = {"Content-Type": "application/json"}
    event["headers"] = headers
    event["multiValueHeaders"] = {k: [v] for k, v in headers.items()}
    return event


def test_the_lambda_handler_serves_the_console(console_handler: Any) -> None:
    answer = console_handler(rest_event("GET", "/api/me"), FakeContext())
    assert answer["statusCode"] == 401
    assert json.loads(answer["body"])["error"]["code"] == "not_signed_in"
    answer = console_handler(rest_event("GET", "/api/openapi.json"), FakeContext())
    assert answer["statusCode"] == 200
    assert "/api/me" in json.loads(answer["body"])["paths"]
    answer = console_handler(
        rest_event("POST", "/api/auth/email-link", json.dumps({"email": "x"})), FakeContext()
    )
    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["error"]["param"] == "email"


def test_make_dev_serves_the_console_beside_the_gateway(
    tables: Tables, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dynoyard.local.devserver import build_dev_app

    for variable, value in tables.env.items():
        monkeypatch.setenv(variable, value)
    for variable in ("DYNOYARD_DEMO_API_KEY", "DYNOYARD_DEMO_BASE_URL", "DYNOYARD_PUBLIC_URL"):
        # Set, then delete: monkeypatch then removes what build_dev_app's setdefault puts
        # in the environment, so later tests never see this port.
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    app = build_dev_app(18080)
    assert call(app, "GET", "/healthz").status_code == 200
    assert_error(call(app, "GET", "/api/me"), 401, "not_signed_in")
    assert call(app, "GET", "/api/openapi.json").status_code == 200
    # The gateway keeps its own answers (OpenAI's shape) outside /api.
    assert call(app, "GET", "/v1/models").json()["error"]["code"] == "invalid_api_key"
    assert call(app, "GET", "/apix").json()["error"]["code"] == "unknown_url"


def test_dynamodb_unreachable_is_503_with_retry_after_never_500(tables: Tables) -> None:
    from tests.conftest import free_port

    down = create_console_app(
        settings_for(tables).model_copy(
            update={"dynamodb_endpoint": f"http://127.0.0.1:{free_port()}"}
        )
    )
    for method, path, kwargs in (
        ("POST", "/api/auth/email-link", {"json": {"email": "a@example.com"}}),
        ("GET", "/api/auth/email-link/callback?token=abc", {}),
        ("GET", "/api/me", {"headers": {"cookie": "dynoyard_session=abc"}}),
    ):
        response = call(down, method, path, **kwargs)
        assert_error(response, 503, "service_unavailable")
        assert response.headers["retry-after"] == "1"
