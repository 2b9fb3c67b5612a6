"""Provider keys: the environment first, then one Secrets Manager secret (moto: Secrets
Manager has no local server), read through Powertools Parameters and cached."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from dynoyard.adapters.secrets import ProviderKeys
from dynoyard.domain.catalog import parse_catalog


@pytest.fixture
def secret(monkeypatch):
    for name in ("AWS_ENDPOINT_URL_DYNAMODB", "OPENAI_API_KEY", "GROQ_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="us-east-1")
        client.create_secret(
            Name="dynoyard/provider-keys",
            SecretString=json.dumps({"OPENAI_API_KEY": "sk-from-secret"}),
        )
        yield client


def test_given_a_secret_when_a_key_is_asked_then_the_secret_answers_and_env_wins(
    secret, monkeypatch
):
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    keys = ProviderKeys("dynoyard/provider-keys")
    assert keys("OPENAI_API_KEY") == "sk-from-secret"
    assert keys("GROQ_API_KEY") is None and not keys.available("GROQ_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert keys("OPENAI_API_KEY") == "sk-from-env"


def test_given_the_secret_when_the_catalog_is_read_then_only_providers_with_keys_are_offered(
    secret,
):
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    keys = ProviderKeys("dynoyard/provider-keys")
    catalog = parse_catalog(
        {
            "providers": {
                "openai": {
                    "base_url": "https://api.openai.com/v1",
                    "api_key_env": "OPENAI_API_KEY",
                },
                "groq": {
                    "base_url": "https://api.groq.com/openai/v1",
                    "api_key_env": "GROQ_API_KEY",
                },
            },
            "models": [
                {
                    "id": "a",
                    "provider": "openai",
                    "upstream": "a",
                    "price": {"input_per_mtok": "1"},
                },
                {"id": "b", "provider": "groq", "upstream": "b", "price": {"input_per_mtok": "1"}},
            ],
        },
        environ={},
        key_available=keys.available,
    )
    assert [m.id for m in catalog.offered()] == ["a"]


def test_given_no_secret_configured_when_asked_then_only_the_environment_counts(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert ProviderKeys(None)("OPENAI_API_KEY") is None
