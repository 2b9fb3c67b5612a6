"""Usage in the console: an organization's records for a date range, filtered by key and by
model, a page at a time, its daily totals, and an export of every record of a range as a
download (CSV or JSON Lines). Members may read them."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from starlette.responses import StreamingResponse

from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.console.auth import runtime
from dynoyard.console.errors import bad_request
from dynoyard.console.orgs import KEY_ID, OrgAccess, allowed
from dynoyard.domain.audit import free_text
from dynoyard.domain.rollup import daily_usage
from dynoyard.domain.usage import (
    RETENTION_DAYS,
    ExportFormat,
    UsageRecord,
    export_header,
    export_lines,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/orgs/{org_id}/usage")
ReadUsage = Annotated[OrgAccess, allowed("read_usage", write=False)]
MAX_PAGE = 500
DAILY_RECORDS_CAP = 100_000  # daily totals read at most this many records
EXPORT_PAGE = 1000  # records read per Query while exporting (each page ends under 1 MB)
MAX_MODEL_FILTER = 200
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `format=json` is JSON Lines too: one record per line, as `dynoyard usage export` writes.
FORMAT_NAMES: dict[str, ExportFormat] = {"csv": "csv", "json": "jsonl", "jsonl": "jsonl"}
MEDIA_TYPES: dict[ExportFormat, str] = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson",
}


def _moment(value: str | None, param: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        moment = datetime.fromisoformat(value)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: year 1 or 9999 moved to UTC
        raise bad_request(f"'{param}' must be an ISO 8601 date or time.", param=param) from None


def _range(since: str | None, until: str | None) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    start = _moment(since, "since", now - timedelta(days=RETENTION_DAYS))
    end = _moment(until, "until", now + timedelta(minutes=1))
    if start >= end:
        raise bad_request("'since' must be before 'until'.", param="since")
    return start, end


@router.get("")
async def usage_records(
    request: Request,
    access: ReadUsage,
    since: str | None = None,
    until: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
    order: Literal["oldest", "newest"] = "oldest",
) -> dict[str, Any]:
    """Records of [since, until) (default: everything kept, 90 days), oldest first as
    exported, or `order=newest` (the console's table); `next` continues the list in the
    same order (null on the last page)."""
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"'limit' is 1 to {MAX_PAGE}.", param="limit")
    start, end = _range(since, until)
    try:
        records, following = await runtime(request).admin.usage_page(
            access.org_id, start, end, limit, cursor, key_id, model, newest_first=order == "newest"
        )
    except ValueError:
        raise bad_request("'cursor' is not one this list gave.", param="cursor") from None
    return {"records": [r.export() for r in records], "next": following}


@router.get("/daily")
async def usage_daily(
    request: Request, access: ReadUsage, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """One line per UTC day and model (today so far included); totals equal the records'.
    Rolled-up days come from their daily aggregates (domain/rollup.py), so they stay past
    the records' 90 days; the rest is totalled from the records."""
    start, end = _range(since, until)
    store = runtime(request).admin
    return {"days": await daily_usage(store, access.org_id, start, end, DAILY_RECORDS_CAP)}


@router.get(
    "/export",
    response_class=StreamingResponse,
    responses={200: {"content": {media: {} for media in MEDIA_TYPES.values()}}},
)
async def usage_export(
    request: Request,
    access: ReadUsage,
    export_format: Annotated[str, Query(alias="format")] = "csv",
    since: str | None = None,
    until: str | None = None,
    key_id: str | None = None,
    model: str | None = None,
) -> StreamingResponse:
    """Every record of [since, until) (default: everything kept, 90 days), oldest first,
    filtered by key and model, as a download: CSV with a header row, or JSON Lines
    (`format=json` or `jsonl`), in the CONTRACT's field order. Streamed a page at a time,
    so memory stays flat whatever the range. Each export is recorded in the audit log."""
    chosen = FORMAT_NAMES.get(export_format)
    if chosen is None:
        raise bad_request(f"'format' is one of {', '.join(sorted(FORMAT_NAMES))}.", param="format")
    start, end = _range(since, until)
    if key_id is not None and not KEY_ID.fullmatch(key_id):
        raise bad_request("'key_id' is not a key id (key_ and 16 hex digits).", param="key_id")
    if model is not None and (
        not 1 <= len(model) <= MAX_MODEL_FILTER or CONTROL.search(model) is not None
    ):
        raise bad_request(
            f"'model' is 1 to {MAX_MODEL_FILTER} characters, without control characters.",
            param="model",
        )
    rt = runtime(request)
    await rt.administration.record(
        access.actor,
        access.org_id,
        "export",
        access.org_id,
        what="usage",
        format=chosen,
        since=_iso(start),
        until=_iso(end),
        key_id=key_id,
        model=free_text(model) if model is not None else None,
    )
    pages = _pages(rt.admin, access.org_id, start, end, key_id, model)
    first = await anext(pages)  # a store that fails now is a 503, not a broken download

    async def body() -> AsyncIterator[str]:
        yield export_header(chosen)
        yield export_lines(first, chosen)
        async for page in pages:
            yield export_lines(page, chosen)

    extension = "csv" if chosen == "csv" else "jsonl"
    filename = f"usage-{access.org_id}-{_stamp(start)}-{_stamp(end)}.{extension}"
    return StreamingResponse(
        body(),
        media_type=MEDIA_TYPES[chosen],
        headers={
            "content-disposition": f'attachment; filename="{filename}"',
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


async def _pages(
    store: DynamoStore,
    org_id: str,
    start: datetime,
    end: datetime,
    key_id: str | None,
    model: str | None,
) -> AsyncIterator[list[UsageRecord]]:
    """The range's records a Query page at a time (a page may be empty when filtered)."""
    records, cursor = await store.usage_page(org_id, start, end, EXPORT_PAGE, None, key_id, model)
    yield records
    while cursor is not None:
        try:
            records, cursor = await store.usage_page(
                org_id, start, end, EXPORT_PAGE, cursor, key_id, model
            )
        except Exception as error:
            # The download has begun: it can only be cut short, which the client sees as
            # an incomplete transfer (never a file that looks whole).
            log.warning("console: usage export of %s cut short: %s", org_id, type(error).__name__)
            raise
        yield records


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def _stamp(moment: datetime) -> str:
    """A moment for a file name: the date alone at midnight UTC, else down to the second."""
    moment = moment.astimezone(UTC)
    if moment == moment.replace(hour=0, minute=0, second=0, microsecond=0):
        return moment.strftime("%Y-%m-%d")
    return moment.strftime("%Y-%m-%dT%H%M%SZ")
