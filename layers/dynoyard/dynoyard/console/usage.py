"""Usage in the console: an organization's records for a date range, filtered by key and by
model, a page at a time, and its daily totals. Members may read them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Request

from dynoyard.console.auth import runtime
from dynoyard.console.errors import bad_request
from dynoyard.console.orgs import OrgAccess, allowed
from dynoyard.domain.usage import RETENTION_DAYS, daily_totals

router = APIRouter(prefix="/api/orgs/{org_id}/usage")
ReadUsage = Annotated[OrgAccess, allowed("read_usage", write=False)]
MAX_PAGE = 500
DAILY_RECORDS_CAP = 100_000  # daily totals read at most this many records


def _moment(value: str | None, param: str, default: datetime) -> datetime:
    if value is None:
        return default
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise bad_request(f"'{param}' must be an ISO 8601 date or time.", param=param) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


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
) -> dict[str, Any]:
    """Records of [since, until) (default: everything kept, 90 days), oldest first, as
    exported; `next` continues the list (null on the last page)."""
    if not 1 <= limit <= MAX_PAGE:
        raise bad_request(f"'limit' is 1 to {MAX_PAGE}.", param="limit")
    start, end = _range(since, until)
    try:
        records, following = await runtime(request).admin.usage_page(
            access.org_id, start, end, limit, cursor, key_id, model
        )
    except ValueError:
        raise bad_request("'cursor' is not one this list gave.", param="cursor") from None
    return {"records": [r.export() for r in records], "next": following}


@router.get("/daily")
async def usage_daily(
    request: Request, access: ReadUsage, since: str | None = None, until: str | None = None
) -> dict[str, Any]:
    """One line per UTC day and model (today so far included); totals equal the records'."""
    start, end = _range(since, until)
    store = runtime(request).admin
    records, cursor = await store.usage_page(access.org_id, start, end, 1000)
    while cursor is not None and len(records) < DAILY_RECORDS_CAP:
        more, cursor = await store.usage_page(access.org_id, start, end, 1000, cursor)
        records += more
    return {"days": daily_totals(records)}
