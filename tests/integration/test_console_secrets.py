"""The console's credentials on AWS: the Resend key and the Google/Discord OAuth clients read
from one Secrets Manager secret (DYNOYARD_CONSOLE_SECRET, template.yaml's ConsoleSecretName)
through Powertools Parameters, the environment winning over it; and DYNOYARD_EMAIL_BACKEND
narrowing the choice of sender. moto stands in for Secrets Manager and SES (no local server
exists for either)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import boto3
import pytest
from aws_lambda_powertools.utilities import parameters
from fastapi.testclient import TestClient
from moto import mock_aws

from dynoyard.adapters.email import OutboxSender, ResendSender, SesSender
from dynoyard.adapters.email_settings import EmailSettings
from dynoyard.adapters.oauth import oauth_providers
from dynoyard.adapters.oauth_settings import CREDENTIALS, oauth_settings
from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.adapters.upstream import AiohttpUpstream
from dynoyard.console.app import create_console_app
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.catalog import Provider
from dynoyard.domain.ports import SecretUnavailable, UpstreamUnavailable

SECRET_NAME = "dynoyard/console"
RESEND_KEY = "re_from_the_secret_0123456789"
VARIABLES = (
    "RESEND_API_KEY",
    "DYNOYARD_EMAIL_FROM",
    "DYNOYARD_EMAIL_BACKEND",
    "DYNOYARD_CONSOLE_SECRET",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    *CREDENTIALS,
)


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """The console's secret, holding what the environment leaves unset."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DYNOYARD_CONSOLE_SECRET", SECRET_NAME)
    values = {
        "RESEND_API_KEY": RESEND_KEY,
        "GOOGLE_CLIENT_ID": "google-id-from-secret",
        "GOOGLE_CLIENT_SECRET": "google-secret-from-secret",
    }
    with mock_aws():
        boto3.client("secretsmanager", region_name="us-east-1").create_secret(
            Name=SECRET_NAME, SecretString=json.dumps(values)
        )
        parameters.clear_caches()
        oauth_settings.cache_clear()
        yield values
        parameters.clear_caches()
        oauth_settings.cache_clear()


def test_given_the_secret_holds_a_resend_key_when_the_sender_is_chosen_then_resend_uses_it(
    secret: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")
    monkeypatch.setenv("DYNOYARD_EMAIL_FROM", "Dynoyard <no-reply@example.com>")
    settings = EmailSettings()
    sender = settings.sender()
    assert isinstance(sender, ResendSender) and sender._api_key == RESEND_KEY
    assert RESEND_KEY not in repr(settings)
    monkeypatch.setenv("RESEND_API_KEY", "re_from_the_environment")
    again = EmailSettings().sender()
    assert isinstance(again, ResendSender) and again._api_key == "re_from_the_environment"


@pytest.mark.parametrize(
    ("backend", "on_lambda", "expected"),
    [
        ("auto", True, ResendSender),
        ("resend", False, ResendSender),
        ("ses", True, SesSender),  # the key in the secret is not taken
        ("ses", False, OutboxSender),  # SES only on Lambda
        ("outbox", True, OutboxSender),
    ],
)
def test_given_a_backend_when_the_sender_is_chosen_then_only_that_one_is_considered(
    secret: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    on_lambda: bool,
    expected: type,
) -> None:
    monkeypatch.setenv("DYNOYARD_EMAIL_BACKEND", backend)
    monkeypatch.setenv("DYNOYARD_EMAIL_FROM", "Dynoyard <no-reply@example.com>")
    if on_lambda:
        monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")
    assert type(EmailSettings().sender()) is expected


def test_given_a_backend_without_what_it_needs_when_chosen_then_the_outbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")
    for backend in ("resend", "ses"):  # no key, no sender address, no secret
        monkeypatch.setenv("DYNOYARD_EMAIL_BACKEND", backend)
        assert isinstance(EmailSettings().sender(), OutboxSender)
    monkeypatch.setenv("DYNOYARD_EMAIL_BACKEND", "smtp")
    with pytest.raises(ValueError, match="DYNOYARD_EMAIL_BACKEND"):
        EmailSettings()


def test_given_the_secret_holds_an_oauth_client_when_read_then_that_provider_is_offered(
    secret: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = oauth_settings()
    assert settings.google_client_id == "google-id-from-secret"
    assert settings.google_client_secret is not None
    assert settings.google_client_secret.get_secret_value() == "google-secret-from-secret"
    assert "google-secret-from-secret" not in repr(settings)
    assert set(oauth_providers(settings)) == {"google"}
    # The environment wins, and completes what the secret lacks.
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "google-id-from-env")
    monkeypatch.setenv("DISCORD_CLIENT_ID", "discord-id")
    monkeypatch.setenv("DISCORD_CLIENT_SECRET", "discord-secret")
    oauth_settings.cache_clear()
    both = oauth_settings()
    assert both.google_client_id == "google-id-from-env"
    assert set(oauth_providers(both)) == {"google", "discord"}


def test_given_no_secret_name_when_read_then_no_provider_and_no_aws_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DYNOYARD_CONSOLE_SECRET", "")  # the template's default
    # Nowhere to call: any AWS call would fail here.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    oauth_settings.cache_clear()
    try:
        assert oauth_providers(oauth_settings()) == {}
        assert isinstance(EmailSettings().sender(), OutboxSender)
    finally:
        oauth_settings.cache_clear()


def test_given_an_unreadable_secret_when_sign_in_starts_then_503_never_500(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Secrets Manager failing (here: the secret is missing) is a temporary 503 in the
    console's shape with retry-after, naming neither the secret nor the AWS error."""
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("DYNOYARD_CONSOLE_SECRET", "dynoyard/not-there")
    with mock_aws():
        parameters.clear_caches()
        oauth_settings.cache_clear()
        with pytest.raises(SecretUnavailable):
            ProviderKeys("dynoyard/not-there")("RESEND_API_KEY")
        app = create_console_app(ConsoleSettings())
        with TestClient(app) as client:
            answer = client.get("/api/auth/google/start", follow_redirects=False)
        oauth_settings.cache_clear()
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    error = answer.json()["error"]
    assert error["code"] == "service_unavailable" and error["type"] == "api_error"
    assert "not-there" not in answer.text and "ResourceNotFound" not in answer.text


def test_given_an_unreadable_provider_key_when_the_upstream_is_called_then_it_is_unavailable() -> (
    None
):
    """On the gateway, a provider key that can not be read is an unreachable provider
    (retried, fallen back, a 502/503 in OpenAI's shape), never an unhandled error."""

    def unreadable(env_name: str) -> str | None:
        raise SecretUnavailable("GetParameterError")

    upstream = AiohttpUpstream(unreadable)
    provider = Provider("p", "http://127.0.0.1:9/v1", "P_API_KEY")
    with pytest.raises(UpstreamUnavailable, match="provider key unreadable"):
        asyncio.run(upstream.send(provider, "/chat/completions", b"{}", False, 5.0))
