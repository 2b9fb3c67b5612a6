"""The usage record: metadata of one request, never its content; and the one way records
are exported (the CLI's `usage export` and the console's `/usage/export` alike)."""

from __future__ import annotations

import csv
import io
import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal, get_args

from dynoyard.domain.money import format_usd

RETENTION_DAYS = 90
ERROR_HEAD_BYTES = 1024

# Status for a stream the client closed before it ended (nginx's convention).
CLIENT_CLOSED = 499

EXPORT_FIELDS = (
    "request_id",
    "timestamp",
    "org_id",
    "key_id",
    "model",
    "provider",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "latency_ms",
    "cached",
    "stream",
    "usage_estimated",
    "endpoint",
    "error_code",
)


ExportFormat = Literal["csv", "jsonl"]
EXPORT_FORMATS: tuple[ExportFormat, ...] = get_args(ExportFormat)
# What a spreadsheet reads as the start of a formula (OWASP, "CSV injection"). A record's
# text can come from a client (an unknown model's id is recorded as sent), so in CSV a
# text cell starting with one of these gets a leading "'" and stays text. JSON Lines keep
# every value as it is: their readers are programs, not spreadsheets.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A CSV cell that a spreadsheet shows as text, never runs as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_header(export_format: ExportFormat) -> str:
    """What comes before the records: CSV's header row (EXPORT_FIELDS), nothing in JSONL."""
    return ",".join(EXPORT_FIELDS) + "\n" if export_format == "csv" else ""


def export_lines(records: Iterable[UsageRecord], export_format: ExportFormat) -> str:
    """The records as exported, one line each, in EXPORT_FIELDS' order: CSV rows (text
    cells made spreadsheet-safe) or JSON Lines; money as decimal strings."""
    if export_format == "jsonl":
        return "".join(json.dumps(record.export()) + "\n" for record in records)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerows([spreadsheet_safe(v) for v in r.export().values()] for r in records)
    return buffer.getvalue()


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def error_head(body: bytes) -> str:
    """The documented exception: at most the first 1 KB of an upstream error body."""
    return body[:ERROR_HEAD_BYTES].decode("utf-8", errors="ignore")


@dataclass(slots=True)
class UsageRecord:
    request_id: str
    started_at: datetime
    org_id: str
    key_id: str
    endpoint: str
    model: str
    provider: str = ""
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: int = 0
    upstream_ms: int = 0
    attempts: int = 0  # upstream attempts made, retries and fallbacks included (not exported)
    cached: bool = False
    stream: bool = False
    usage_estimated: bool = False
    client_ip: str = ""
    error_code: str | None = None
    upstream_error_status: int | None = None  # the upstream answer error_head comes from
    error_head: str | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def timestamp(self) -> str:
        return self.started_at.astimezone(UTC).isoformat(timespec="milliseconds")

    @property
    def expires_at(self) -> int:
        return int(self.started_at.timestamp()) + RETENTION_DAYS * 86_400

    def fields(self) -> dict[str, Any]:
        """The exported fields with their own types (cost as Decimal)."""
        return {name: getattr(self, name) for name in EXPORT_FIELDS}

    def export(self) -> dict[str, Any]:
        """The record as users export it: money as a decimal string."""
        return {**self.fields(), "cost_usd": format_usd(self.cost_usd)}


def utcnow() -> datetime:
    return datetime.now(UTC)


DAILY_FIELDS = (
    "date",
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "errors",
    "cache_hits",
)


def daily_totals(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    """One line per UTC day and model, oldest first: what `usage daily` and the console
    show. Its totals equal the records' (money as decimal strings)."""
    totals: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        day = record.started_at.astimezone(UTC).date().isoformat()
        line = totals.setdefault(
            (day, record.model),
            {name: 0 for name in DAILY_FIELDS} | {"date": day, "model": record.model},
        )
        line["requests"] += 1
        line["prompt_tokens"] += record.prompt_tokens
        line["completion_tokens"] += record.completion_tokens
        line["cost_usd"] += record.cost_usd
        line["errors"] += 1 if record.status >= 400 else 0
        line["cache_hits"] += 1 if record.cached else 0
    return [
        {**line, "cost_usd": format_usd(Decimal(line["cost_usd"]))}
        for _, line in sorted(totals.items())
    ]
