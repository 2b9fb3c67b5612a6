"""Server-sent events passing through: forward each event as it completes, read usage.

The gateway always asks the upstream for usage (`stream_options.include_usage`) so that a
stream is charged exactly; a client that did not ask for it does not see the usage chunk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from dynoyard.domain.errors import GatewayError
from dynoyard.domain.metering import TokenCounts, estimate_tokens, generated_chars, usage_from

DONE = b"[DONE]"


@dataclass(slots=True)
class StreamMeter:
    """Splits upstream bytes into SSE events and keeps count of what went by."""

    client_wants_usage: bool
    prompt_chars: int = 0  # for the estimate when no usage ever arrives
    usage: TokenCounts | None = None
    # Chunks and characters of everything generated: content, reasoning, refusals, tool calls.
    content_chunks: int = 0
    content_chars: int = 0
    done: bool = False
    upstream_error: bool = False
    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> bytes:
        """Returns the complete events in `chunk` (plus what was buffered) to forward now."""
        self._buffer += chunk
        out = bytearray()
        while True:
            end, sep_len = _event_end(self._buffer)
            if end < 0:
                break
            event = bytes(self._buffer[:end])
            del self._buffer[: end + sep_len]
            forwarded = self._on_event(event)
            if forwarded is not None:
                out += forwarded + b"\n\n"
        return bytes(out)

    @property
    def produced_anything(self) -> bool:
        return self.usage is not None or self.content_chunks > 0

    def tokens(self) -> TokenCounts:
        """The upstream's usage if it came; else the estimate: prompt chars and one token per
        content chunk (at least the chars estimate)."""
        if self.usage is not None:
            return self.usage
        completion = max(self.content_chunks, estimate_tokens(self.content_chars))
        return TokenCounts(estimate_tokens(self.prompt_chars), completion, estimated=True)

    def _on_event(self, event: bytes) -> bytes | None:
        data = _data_of(event)
        if data is None:
            return event  # comments and other fields pass through untouched
        if data == DONE:
            self.done = True
            return event
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            return event  # not ours to judge: forwarded as it came
        if not isinstance(payload, dict):
            return event
        if "error" in payload:
            self.upstream_error = True
            return event
        self._count(payload)
        usage = usage_from(payload.get("usage"))
        if usage is not None:
            self.usage = usage
            if not self.client_wants_usage:
                if not payload.get("choices"):
                    return None  # the usage-only chunk the client did not ask for
                payload["usage"] = None
                return b"data: " + json.dumps(payload, separators=(",", ":")).encode()
        return event

    def _count(self, payload: dict[str, object]) -> None:
        choices = payload.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            text = choice.get("text")  # legacy completions stream text, not deltas
            chars = generated_chars(delta) if isinstance(delta, dict) else 0
            chars += len(text) if isinstance(text, str) else 0
            if chars:
                self.content_chunks += 1
                self.content_chars += chars


def _event_end(buffer: bytearray) -> tuple[int, int]:
    """Index and length of the first blank-line separator, (-1, 0) if none yet."""
    lf = buffer.find(b"\n\n")
    crlf = buffer.find(b"\r\n\r\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        return crlf, 4
    return (lf, 2) if lf >= 0 else (-1, 0)


def _data_of(event: bytes) -> bytes | None:
    """The joined `data:` lines of one event, or None if it has none."""
    parts = [
        line[5:].lstrip(b" ")
        for line in event.replace(b"\r\n", b"\n").split(b"\n")
        if line.startswith(b"data:")
    ]
    return b"\n".join(parts) if parts else None


def error_event(error: GatewayError) -> bytes:
    """An error in OpenAI's shape as the last event of a broken stream."""
    return b"data: " + json.dumps(error.body()).encode() + b"\n\n"
