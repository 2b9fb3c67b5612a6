"""Validation of the few request fields the gateway acts on; every other field passes
through to the upstream untouched (tools, response_format, seed, logprobs, ...)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from dynoyard.domain.errors import GatewayError, bad_request

Endpoint = Literal["chat/completions", "completions", "embeddings"]
PositiveInt = Annotated[StrictInt, Field(ge=1)]


class _Common(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: dict[str, Any] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=128)] | None = 1


class _Chat(_Common):
    messages: list[dict[str, Any]] = Field(min_length=1)
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None


class _Completion(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: PositiveInt | None = None
    best_of: PositiveInt | None = None


class _Embedding(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: StrictStr = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]


_SCHEMAS: dict[str, type[BaseModel]] = {
    "chat/completions": _Chat,
    "completions": _Completion,
    "embeddings": _Embedding,
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    endpoint: Endpoint
    payload: dict[str, Any]  # the decoded body, forwarded with the model name replaced
    model_id: str
    stream: bool
    client_wants_usage: bool
    max_output_tokens: int | None
    choices: int
    prompt_chars: int
    image_parts: int


def parse_request(endpoint: Endpoint, body: bytes) -> ParsedRequest:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        ) from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.")
    if "model" not in payload:
        raise bad_request("You must provide a model parameter.", param="model")
    try:
        parsed = _SCHEMAS[endpoint].model_validate(payload)
    except ValidationError as exc:
        raise _first_error(exc) from None

    stream = bool(getattr(parsed, "stream", False))
    options = getattr(parsed, "stream_options", None) or {}
    max_out = getattr(parsed, "max_completion_tokens", None) or getattr(parsed, "max_tokens", None)
    choices = max(getattr(parsed, "n", 1) or 1, getattr(parsed, "best_of", 1) or 1)
    if endpoint == "embeddings":
        max_out, choices = 0, 1
    text, images = _prompt_text(payload, endpoint)
    return ParsedRequest(
        endpoint=endpoint,
        payload=payload,
        model_id=str(payload["model"]),
        stream=stream,
        client_wants_usage=bool(options.get("include_usage")),
        max_output_tokens=max_out,
        choices=choices,
        prompt_chars=text,
        image_parts=images,
    )


def _first_error(exc: ValidationError) -> GatewayError:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"]]
    param = loc[0] if loc else None
    where = ".".join(loc)
    if first["type"] == "missing":
        return bad_request(f"Missing required parameter: '{where}'.", param=param)
    return bad_request(f"Invalid value for '{where}': {first['msg']}.", param=param)


def _prompt_text(payload: dict[str, Any], endpoint: Endpoint) -> tuple[int, int]:
    """Characters of prompt text (for estimates) and the number of image parts (for the hold)."""
    chars = images = 0
    if endpoint == "chat/completions":
        for message in payload.get("messages", []):
            content = message.get("content")
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") == "text" and isinstance(part.get("text"), str):
                        chars += len(part["text"])
                    elif part.get("type") in ("image_url", "input_image", "input_audio"):
                        images += 1
        return chars, images
    prompt = payload.get("prompt") if endpoint == "completions" else payload.get("input")
    if isinstance(prompt, str):
        return len(prompt), 0
    if isinstance(prompt, list):
        return sum(len(p) if isinstance(p, str | list) else 1 for p in prompt), 0
    return 0, 0
