"""The console's Lambda handler (functions/console/app.py), driven through Mangum with the
real-shaped API Gateway events of events/console_*.json, as API Gateway would call it,
against DynamoDB Local, with email written to an outbox directory."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import sys
import uuid
from collections.abc import Iterator
from email import policy
from email.parser import BytesParser
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from dynoyard.console.auth import LINK_SENT, SESSION_COOKIE
from tests.conftest import ROOT, FakeContext, Tables, lambda_header
from tests.conftest import lambda_event as event

PUBLIC_URL = "https://console.example.com"


@contextlib.contextmanager
def loaded_console_handler(tables: Tables, outbox: Path) -> Iterator[Any]:
    """functions/console/app.py's handler, imported as Lambda would, with the environment
    set while it is in use: the test tables, no email provider (so the outbox), an https
    public URL."""
    patch = pytest.MonkeyPatch()
    for variable, value in {
        **tables.env,
        "DYNOYARD_OUTBOX_DIR": str(outbox),
        "DYNOYARD_PUBLIC_URL": PUBLIC_URL,
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "DynoyardTest",
    }.items():
        patch.setenv(variable, value)
    for variable in ("RESEND_API_KEY", "AWS_LAMBDA_FUNCTION_NAME", "DYNOYARD_CONSOLE_SECRET"):
        patch.delenv(variable, raising=False)
    name = "console_lambda_app"
    spec = importlib.util.spec_from_file_location(name, ROOT / "functions" / "console" / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module.handler
    finally:
        patch.undo()
        sys.modules.pop(name, None)


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console-outbox")


@pytest.fixture(scope="module")
def handler(tables: Tables, outbox: Path) -> Iterator[Any]:
    with loaded_console_handler(tables, outbox) as loaded:
        yield loaded


def error_of(response: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(response["body"])
    assert set(body) == {"error"} and set(body["error"]) >= {"message", "type", "code"}
    return dict(body["error"])


def with_cookie(data: dict[str, Any], session: str) -> dict[str, Any]:
    data["headers"]["Cookie"] = f"{SESSION_COOKIE}={session}"
    data["multiValueHeaders"]["Cookie"] = [f"{SESSION_COOKIE}={session}"]
    return data


def callback_event(token: str) -> dict[str, Any]:
    data = event("console_openapi.json")
    data["path"] = "/api/auth/email-link/callback"
    data["pathParameters"] = {"proxy": "auth/email-link/callback"}
    data["queryStringParameters"] = {"token": token}
    data["multiValueQueryStringParameters"] = {"token": [token]}
    return data


def link_in_outbox(outbox: Path, address: str) -> str:
    for path in sorted(outbox.glob("*.eml")):
        mail = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        if mail["To"] == address:
            text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
            found = re.search(
                re.escape(PUBLIC_URL) + r"/api/auth/email-link/callback\?token=(\S+)", text
            )
            assert found, text
            return found.group(1)
    raise AssertionError(f"no email to {address} in {outbox}")


def test_given_the_openapi_event_when_handled_then_the_document_lists_the_console_routes(
    handler: Any,
) -> None:
    response = handler(event("console_openapi.json"), FakeContext())
    assert response["statusCode"] == 200
    document = json.loads(response["body"])
    assert document["openapi"].startswith("3.")
    for path in ("/api/auth/email-link", "/api/auth/email-link/callback", "/api/me"):
        assert path in document["paths"], path


def test_given_the_me_event_without_a_valid_session_when_handled_then_401_in_the_console_shape(
    handler: Any,
) -> None:
    for data in (event("console_me.json"), with_cookie(event("console_me.json"), "x" * 300)):
        response = handler(data, FakeContext())
        assert response["statusCode"] == 401
        assert error_of(response)["code"] == "not_signed_in"


def test_given_the_email_link_event_when_handled_then_202_the_outbox_has_the_link_and_it_signs_in(
    handler: Any, outbox: Path
) -> None:
    address = f"ada-{uuid.uuid4().hex[:8]}@example.com"
    response = handler(event("console_email_link.json", email=address), FakeContext())
    assert response["statusCode"] == 202, response["body"]
    assert json.loads(response["body"]) == LINK_SENT
    token = link_in_outbox(outbox, address)

    signed_in = handler(callback_event(token), FakeContext())
    assert signed_in["statusCode"] == 303 and lambda_header(signed_in, "location") == "/console"
    cookie_header = lambda_header(signed_in, "set-cookie")
    assert "; secure" in cookie_header.lower() and "httponly" in cookie_header.lower()
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(cookie_header)
    session = cookie[SESSION_COOKIE].value

    me = handler(with_cookie(event("console_me.json"), session), FakeContext())
    assert me["statusCode"] == 200, me["body"]
    body = json.loads(me["body"])
    assert body["user"]["email"] == address and body["user"]["name"] == "Ada"
    assert [org["role"] for org in body["orgs"]] == ["owner"] and len(body["csrf_token"]) == 64

    replay = handler(callback_event(token), FakeContext())
    assert replay["statusCode"] == 400 and error_of(replay)["code"] == "link_invalid"


def test_given_a_bad_body_in_the_email_link_event_when_handled_then_400_naming_the_field(
    handler: Any,
) -> None:
    for raw, param in (
        ('{"email": 5}', "email"),
        ('{"email": "not an address"}', "email"),
        ("{not json", None),
        ('{"email": "a@example.com", "admin": true}', "admin"),
    ):
        response = handler(event("console_email_link.json", raw_body=raw), FakeContext())
        assert response["statusCode"] == 400, (raw, response["body"])
        assert error_of(response).get("param") == param, raw
