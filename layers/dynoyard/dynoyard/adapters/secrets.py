"""Provider API keys: the environment first (local), then one Secrets Manager secret
holding a JSON object of `{"OPENAI_API_KEY": "...", ...}` (AWS), cached by Powertools."""

from __future__ import annotations

import os
from typing import Any

from dynoyard.domain.ports import SecretUnavailable

SECRET_MAX_AGE_SECONDS = 300


class ProviderKeys:
    def __init__(self, secret_name: str | None) -> None:
        self._secret_name = secret_name

    def __call__(self, env_name: str) -> str | None:
        value = os.environ.get(env_name)
        if value:
            return value
        if not self._secret_name:
            return None
        secret = self._secret()
        found = secret.get(env_name) if isinstance(secret, dict) else None
        return str(found) if found else None

    def available(self, env_name: str) -> bool:
        return self(env_name) is not None

    def _secret(self) -> Any:
        # Imported here: only functions that use a secret pay for the import.
        from aws_lambda_powertools.utilities import parameters

        try:
            return parameters.get_secret(
                self._secret_name or "", transform="json", max_age=SECRET_MAX_AGE_SECONDS
            )
        except (
            parameters.exceptions.GetParameterError,
            parameters.exceptions.TransformParameterError,
        ) as error:
            # Named by class only: the message may quote the secret's name or value.
            raise SecretUnavailable(type(error).__name__) from None
