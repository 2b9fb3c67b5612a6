"""The model catalog: which client-facing model goes to which upstream, at what price."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dynoyard.domain.money import parse_usd

ModelKind = Literal["chat", "embedding"]
# The request field that limits generated tokens, as each upstream reads it.
OutputLimitField = Literal["max_tokens", "max_completion_tokens"]
_ENV_REF = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class CatalogError(ValueError):
    """The catalog can not be used; the message names the bad entry."""


class _PriceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_per_mtok: Decimal
    output_per_mtok: Decimal = Decimal(0)

    @field_validator("input_per_mtok", "output_per_mtok", mode="before")
    @classmethod
    def _decimal_string(cls, value: Any) -> Decimal:
        amount = parse_usd(value)
        if amount < 0:
            raise ValueError("a price can not be negative")
        return amount


class _ProviderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    base_url: str
    api_key_env: str | None = None
    label: str | None = None
    output_limit_field: OutputLimitField = "max_tokens"


class _ModelIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(min_length=1)
    provider: str
    upstream: str = Field(min_length=1)
    price: _PriceIn
    kind: ModelKind | None = None  # absent: any endpoint, the upstream decides
    max_output_tokens: int = Field(default=4096, ge=1)
    context_window: int | None = Field(default=None, ge=1)
    fallbacks: list[str] = Field(default_factory=list)
    label: str | None = None


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: Decimal
    output_per_mtok: Decimal


@dataclass(frozen=True, slots=True)
class Provider:
    name: str
    base_url: str
    api_key_env: str | None
    label: str | None = None
    output_limit_field: OutputLimitField = "max_tokens"


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    provider: Provider
    upstream: str
    price: Price
    kind: ModelKind | None
    max_output_tokens: int
    context_window: int | None
    fallbacks: tuple[str, ...]
    label: str | None


class Catalog:
    """Models by client-facing id. A model whose provider has no key is not offered."""

    def __init__(self, models: list[Model], key_available: Callable[[str], bool]) -> None:
        self._all = {model.id: model for model in models}
        self._key_available = key_available

    def _offered(self, model: Model) -> bool:
        env_name = model.provider.api_key_env
        return env_name is None or self._key_available(env_name)

    def get(self, model_id: str) -> Model | None:
        model = self._all.get(model_id)
        return model if model is not None and self._offered(model) else None

    def offered(self) -> list[Model]:
        return [m for m in self._all.values() if self._offered(m)]

    def route(self, model: Model, allowed: Callable[[str], bool]) -> list[Model]:
        """The model, then those of its available fallbacks that `allowed` (the caller's
        key) permits and that serve the same endpoints, in order: where a request may go."""
        chain = [model]
        for fallback_id in model.fallbacks:
            fallback = self.get(fallback_id)
            if fallback is not None and fallback.kind == model.kind and allowed(fallback.id):
                chain.append(fallback)
        return chain


def _expand_env(value: str, environ: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        raise CatalogError(f"environment variable {name} is referenced but not set")

    return _ENV_REF.sub(replace, value)


def _describe(errors: ValidationError) -> str:
    first = errors.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]


def parse_catalog(
    data: Any,
    environ: dict[str, str] | None = None,
    key_available: Callable[[str], bool] | None = None,
) -> Catalog:
    """Validate a decoded catalog document; every problem names its entry.

    `key_available(env_name)` tells whether a provider key can be had (environment
    locally, Secrets Manager on AWS); a provider without one is not offered.
    """
    env = dict(os.environ) if environ is None else environ
    has_key = key_available or (lambda name: bool(env.get(name)))
    if not isinstance(data, dict):
        raise CatalogError("the catalog must be a mapping with 'providers' and 'models'")
    raw_providers = data.get("providers")
    raw_models = data.get("models")
    if not isinstance(raw_providers, dict) or not raw_providers:
        raise CatalogError("'providers' must be a non-empty mapping")
    if not isinstance(raw_models, list) or not raw_models:
        raise CatalogError("'models' must be a non-empty list")

    providers: dict[str, Provider] = {}
    for name, raw in raw_providers.items():
        try:
            parsed = _ProviderIn.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"providers.{name}: {_describe(exc)}") from exc
        base_url = _expand_env(parsed.base_url, env).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise CatalogError(f"providers.{name}: base_url must be an http(s) URL")
        providers[name] = Provider(
            str(name), base_url, parsed.api_key_env, parsed.label, parsed.output_limit_field
        )

    models: list[Model] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_models):
        label = f"models[{index}]"
        if isinstance(raw, dict) and isinstance(raw.get("id"), str):
            label += f" (id '{raw['id']}')"
        try:
            parsed_model = _ModelIn.model_validate(raw)
        except ValidationError as exc:
            raise CatalogError(f"{label}: {_describe(exc)}") from exc
        if parsed_model.id in seen:
            raise CatalogError(f"{label}: duplicate model id")
        provider = providers.get(parsed_model.provider)
        if provider is None:
            raise CatalogError(f"{label}: provider '{parsed_model.provider}' is not defined")
        seen.add(parsed_model.id)
        models.append(
            Model(
                id=parsed_model.id,
                provider=provider,
                upstream=_expand_env(parsed_model.upstream, env),
                price=Price(parsed_model.price.input_per_mtok, parsed_model.price.output_per_mtok),
                kind=parsed_model.kind,
                max_output_tokens=parsed_model.max_output_tokens,
                context_window=parsed_model.context_window,
                fallbacks=tuple(parsed_model.fallbacks),
                label=parsed_model.label,
            )
        )
    for model in models:
        for fallback in model.fallbacks:
            if fallback not in seen:
                raise CatalogError(
                    f"model '{model.id}': fallback '{fallback}' is not in the catalog"
                )

    return Catalog(models, has_key)
