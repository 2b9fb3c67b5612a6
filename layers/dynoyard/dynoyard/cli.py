"""`dynoyard`: the operator CLI. Same configuration as the server (tables, DynamoDB
endpoint); `--json` before the command makes every command print JSON and nothing else."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from dynoyard.console.validation import clean_name
from dynoyard.domain.accounts import (
    MAX_CACHE_TTL_SECONDS,
    MAX_LOW_BALANCE_USD,
    MIN_CACHE_TTL_SECONDS,
    UNCHANGED,
    InvalidSetting,
    Org,
    UnknownKey,
    UnknownOrg,
    parse_low_balance,
)
from dynoyard.domain.administration import (
    MAX_GRACE_SECONDS,
    OPERATOR,
    Administration,
    InvalidRequest,
    KeyNotActive,
    NotAllowed,
)
from dynoyard.domain.alerts import ALERT_KINDS
from dynoyard.domain.audit import MAX_PAGE, InvalidAuditQuery
from dynoyard.domain.billing import MAX_HISTORY_PAGE, Entry, InvalidLedgerQuery
from dynoyard.domain.limits import InvalidLimit, key_limits
from dynoyard.domain.money import format_usd, parse_usd
from dynoyard.domain.reconcile import Reconciliation, reconcile_org
from dynoyard.domain.rollup import KEEP_DAYS, daily_usage
from dynoyard.domain.usage import (
    EXPORT_FORMATS,
    RETENTION_DAYS,
    export_header,
    export_lines,
)

if TYPE_CHECKING:
    from dynoyard.adapters.dynamo.store import BlockingStore

T = TypeVar("T")


# `billing reconcile` found a difference (its lines are printed all the same); errors exit 1.
DIFFERENCE_EXIT = 3


class CliError(Exception):
    """A problem with what the operator asked for: one line on stderr, exit 1."""


def _store() -> BlockingStore:
    # Imported here so that `dynoyard --help` loads no HTTP client.
    from dynoyard.adapters.dynamo.store import blocking_store
    from dynoyard.settings import GatewaySettings

    settings = GatewaySettings()
    return blocking_store(settings)


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError("expected 'on' or 'off'")
    return value == "on"


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _non_negative_int(value: str) -> int:
    return 0 if value.strip() == "0" else _positive_int(value)


def _amount(value: str) -> Decimal:
    try:
        return parse_usd(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _org_name(value: str) -> str:
    name = clean_name(value)  # as the console takes a name
    if not name:
        raise argparse.ArgumentTypeError("1 to 100 characters, without control characters")
    return name


def _low_balance(value: str) -> Decimal | None:
    if value == "off":
        return None
    try:
        return parse_low_balance(value)
    except InvalidSetting as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _since(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {value!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynoyard", description="Operate a Dynoyard gateway.")
    parser.add_argument("--json", action="store_true", help="print JSON only (before the command)")
    commands = parser.add_subparsers(dest="group", required=True)

    org = commands.add_parser("org", help="organizations").add_subparsers(
        dest="action", required=True
    )
    create = org.add_parser("create", help="create an organization")
    create.add_argument("--name", required=True)
    create.add_argument("--email", required=True)
    show = org.add_parser("show", help="show an organization")
    show.add_argument("org_id")
    settings = org.add_parser("set", help="change an organization's settings")
    settings.add_argument("org_id")
    settings.add_argument("--name", type=_org_name, help="rename the organization")
    settings.add_argument(
        "--cache", type=_on_off, help="on/off: the opt-in response cache (off deletes its entries)"
    )
    settings.add_argument(
        "--cache-ttl",
        type=_positive_int,
        help=f"cache TTL in seconds, {MIN_CACHE_TTL_SECONDS}..{MAX_CACHE_TTL_SECONDS}",
    )
    settings.add_argument(
        "--rpm", type=_non_negative_int, help="requests per minute for the org (0: no limit)"
    )
    settings.add_argument(
        "--low-balance-usd",
        type=_low_balance,
        default=UNCHANGED,
        metavar="X",
        help=f"email an alert below this balance, 0..{MAX_LOW_BALANCE_USD} USD (off: no alert)",
    )

    key = commands.add_parser("key", help="API keys").add_subparsers(dest="action", required=True)
    key_create = key.add_parser("create", help="create an API key (shown once)")
    key_create.add_argument("--org", required=True)
    key_create.add_argument("--name", default="")
    key_create.add_argument("--models", help="comma-separated model ids the key may use")
    key_create.add_argument("--expires-in", type=_positive_int, metavar="DAYS")
    key_create.add_argument("--rpm", type=_positive_int, help="requests per minute")
    key_create.add_argument("--tpm", type=_positive_int, help="tokens per minute")
    key_create.add_argument("--daily-usd", type=_amount, help="spend cap per UTC day")
    key_create.add_argument("--monthly-usd", type=_amount, help="spend cap per UTC month")
    revoke = key.add_parser("revoke", help="revoke an API key")
    revoke.add_argument("key_id")
    rotate = key.add_parser(
        "rotate", help="a new key in place of one (shown once); the old one is revoked"
    )
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace-seconds",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help=f"the old key keeps working N seconds, 0..{MAX_GRACE_SECONDS} (default 0)",
    )

    credits = commands.add_parser("credits", help="balance").add_subparsers(
        dest="action", required=True
    )
    grant = credits.add_parser(
        "grant", help="add credits (a negative amount takes them back, and needs --reason)"
    )
    grant.add_argument("--org", required=True)
    grant.add_argument("--usd", required=True, type=_amount, help="decimal amount, e.g. 25.00")
    grant.add_argument("--reason", default="")

    usage = commands.add_parser("usage", help="usage records").add_subparsers(
        dest="action", required=True
    )
    export = usage.add_parser("export", help="export usage records, one per line")
    export.add_argument("--org", required=True)
    export.add_argument("--since", type=_since, help="ISO 8601 date or time (UTC if naive)")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        default="jsonl",
        help="jsonl (default) or csv (text cells starting with = + - @ get a leading ')",
    )
    daily = usage.add_parser("daily", help="totals per UTC day and model, today so far included")
    daily.add_argument("--org", required=True)
    daily.add_argument("--since", type=_since, help="ISO 8601 date (UTC)")

    billing = commands.add_parser("billing", help="money: alerts and recharges").add_subparsers(
        dest="action", required=True
    )
    billing.add_parser(
        "alerts",
        help="email the due low-balance alerts and run the due auto-recharges, once each",
    )
    history = billing.add_parser(
        "history", help="an organization's ledger, newest first, one movement per line"
    )
    history.add_argument("--org", required=True)
    history.add_argument("--limit", type=_positive_int, help="at most N movements (default all)")
    history.add_argument("--before", help="the cursor printed after an earlier listing")
    reconcile = billing.add_parser(
        "reconcile",
        help="balance + holds in flight against the ledger, one line per organization;"
        f" exit {DIFFERENCE_EXIT} when any difference is not zero",
    )
    reconcile.add_argument(
        "--org", help="one organization (default: every one, by a scan of the accounts table)"
    )

    cleanup = commands.add_parser("cleanup", help="the scheduled cleanup").add_subparsers(
        dest="action", required=True
    )
    cleanup.add_parser(
        "run",
        help="the scheduled cleanup function's job, run now (safe to run twice or concurrently)",
    )

    audit = commands.add_parser("audit", help="an organization's audit log, newest first")
    audit.add_argument("--org", required=True)
    audit.add_argument("--limit", type=_positive_int, default=50, help="entries (default 50)")
    audit.add_argument("--before", help="the cursor printed after an earlier listing")
    return parser


def _org_command(args: argparse.Namespace, store: BlockingStore) -> dict[str, Any]:
    if args.action == "create":
        return {"org_id": store.create_org(args.name, args.email)}
    if args.action == "show":
        org: Org = store.get_org(args.org_id)
        return org.show()
    org = _administer(
        store,
        lambda admin: admin.change_settings(
            OPERATOR,
            args.org_id,
            args.cache,
            args.cache_ttl,
            args.rpm,
            args.low_balance_usd,
            name=args.name,
        ),
    )
    return org.show()


def _key_command(args: argparse.Namespace, store: BlockingStore) -> dict[str, Any]:
    if args.action == "revoke":
        org_id = store.key_org_id(args.key_id)
        if org_id is None:
            raise UnknownKey(args.key_id)
        _administer(store, lambda admin: admin.revoke_key(OPERATOR, org_id, args.key_id))
        return {"key_id": args.key_id, "revoked": True}
    if args.action == "rotate":
        org_id = store.key_org_id(args.key_id)
        if org_id is None:
            raise UnknownKey(args.key_id)
        rotated = _administer(
            store,
            lambda admin: admin.rotate_key(OPERATOR, org_id, args.key_id, args.grace_seconds),
        )
        return {
            "key_id": rotated.new.key_id,
            "api_key": rotated.new.secret,
            "rotated_from": args.key_id,
        }
    models = frozenset(m.strip() for m in (args.models or "").split(",") if m.strip())
    try:
        limits = key_limits(args.rpm, args.tpm, args.daily_usd, args.monthly_usd)
    except InvalidLimit as exc:
        raise CliError(str(exc)) from None
    new = _administer(
        store,
        lambda admin: admin.create_key(
            OPERATOR, args.org, args.name, models, args.expires_in, limits
        ),
    )
    return {"key_id": new.key_id, "api_key": new.secret}


def _grant(args: argparse.Namespace, store: BlockingStore) -> dict[str, Any]:
    org = _administer(
        store, lambda admin: admin.grant_credits(OPERATOR, args.org, args.usd, args.reason)
    )
    # A grant that lifts the balance above a threshold re-arms its alert.
    for kind in ALERT_KINDS:
        store.rearm_alert(org.org_id, kind)
    return {"org_id": org.org_id, "balance_usd": format_usd(org.balance_usd)}


def _alerts() -> dict[str, Any]:
    """`billing alerts`: what the scheduled cleanup's alerts step runs, now, built the same
    way (maintenance/alerts_step.py)."""
    from dynoyard.maintenance.alerts_step import alerts_of
    from dynoyard.maintenance.run import job_context
    from dynoyard.maintenance.settings import CleanupSettings

    async def run() -> dict[str, Any]:
        async with job_context(CleanupSettings(), now=time.time()) as ctx:
            alerts = alerts_of(ctx)
            sent = await alerts.send_due_alerts(ctx.now)
            recharges = await alerts.run_due_recharges(ctx.now)
            return {"low_balance": sent.show(), "recharge": recharges.show()}

    return asyncio.run(run())


def _administer(store: BlockingStore, use: Callable[[Administration], Awaitable[T]]) -> T:
    """Runs one of the account use cases (domain/administration.py) as the operator: the
    same rules the console applies."""

    async def run() -> T:
        try:
            return await use(Administration(store.store, audit=store.store.audit_log))
        finally:
            await store.store.aclose()

    try:
        return asyncio.run(run())
    except (InvalidRequest, NotAllowed) as exc:
        raise CliError(str(exc)) from None
    except KeyNotActive as exc:
        raise CliError(f"API key {exc} is revoked, expired or already rotated") from None


def _pages(
    store: BlockingStore,
    page: Callable[[str | None, int], Awaitable[tuple[list[Any], str | None]]],
    before: str | None,
    limit: int | None,
    max_page: int,
) -> tuple[list[Any], str | None]:
    """Pages read from `before` until `limit` items (None: all) or the end, and the cursor
    to continue with (None at the end)."""

    async def read() -> tuple[list[Any], str | None]:
        items: list[Any] = []
        cursor = before
        try:
            while limit is None or len(items) < limit:
                wanted = max_page if limit is None else min(max_page, limit - len(items))
                found, cursor = await page(cursor, wanted)
                items += found
                if cursor is None:
                    break
            return items, cursor
        finally:
            await store.store.aclose()

    return asyncio.run(read())


def _audit(args: argparse.Namespace, store: BlockingStore, out: TextIO) -> None:
    """The newest `--limit` entries (older than `--before`), one per line; where more
    remain, the cursor to continue with goes to stderr."""
    store.get_org(args.org)  # an unknown org is an error, not an empty log

    audit = Administration(store.store, audit=store.store.audit_log)

    async def page(cursor: str | None, size: int) -> tuple[list[Any], str | None]:
        return await audit.audit_entries(OPERATOR, args.org, cursor, size)

    try:
        entries, cursor = _pages(store, page, args.before, args.limit, MAX_PAGE)
    except InvalidAuditQuery as exc:
        raise CliError(f"--{exc.param}: {exc}") from None
    for entry in entries:
        shown = entry.show()
        if args.json:
            out.write(json.dumps(shown) + "\n")
        else:
            parts = [shown["at"], shown["actor"], shown["action"], shown["target"]]
            parts += [f"ip={shown['ip']}"] if shown["ip"] else []
            parts += [f"{k}={v}" for k, v in shown["details"].items()]
            out.write("  ".join(parts) + "\n")
    if cursor is not None:
        print(f"more: --before {cursor}", file=sys.stderr)


def _history(args: argparse.Namespace, store: BlockingStore, out: TextIO) -> None:
    """The ledger, newest first (all of it, or `--limit` movements older than `--before`);
    where more remain, the cursor to continue with goes to stderr."""
    store.get_org(args.org)  # an unknown org is an error, not an empty ledger
    ledger = store.store.billing

    async def page(cursor: str | None, size: int) -> tuple[list[Entry], str | None]:
        return await ledger.history(args.org, cursor, size)

    try:
        entries, cursor = _pages(store, page, args.before, args.limit, MAX_HISTORY_PAGE)
    except InvalidLedgerQuery as exc:
        raise CliError(f"--{exc.param}: {exc}") from None
    for entry in entries:
        shown = entry.show()
        if args.json:
            out.write(json.dumps(shown) + "\n")
        else:
            out.write("  ".join([shown.pop("at"), shown.pop("kind"), shown.pop("amount_usd")]))
            out.write("  " + "  ".join(f"{k}={v}" for k, v in shown.items()) + "\n")
    if cursor is not None:
        print(f"more: --before {cursor}", file=sys.stderr)


def _reconcile(args: argparse.Namespace, store: BlockingStore, out: TextIO) -> int:
    """One line per organization (`--org`, else every one, printed as it is reconciled);
    DIFFERENCE_EXIT when any difference is not zero."""
    dynamo = store.store
    differs = False

    def report(found: Reconciliation) -> None:
        nonlocal differs
        differs = differs or found.difference_usd != 0
        shown = found.show()
        if args.json:
            out.write(json.dumps(shown) + "\n")
        else:
            out.write("  ".join([shown.pop("org_id")] + [f"{k}={v}" for k, v in shown.items()]))
            out.write("\n")
        out.flush()
        if not found.stable:
            print(
                f"dynoyard: {found.org_id}: its money moved during every reading;"
                " reconcile it again when it is quiet",
                file=sys.stderr,
            )

    async def run() -> None:
        try:
            if args.org is not None:
                report(await reconcile_org(dynamo, dynamo.billing, args.org))
                return
            async for org_id in dynamo.org_ids():
                try:
                    report(await reconcile_org(dynamo, dynamo.billing, org_id))
                except UnknownOrg:
                    continue  # gone since the scan saw it
        finally:
            await dynamo.aclose()

    asyncio.run(run())
    return DIFFERENCE_EXIT if differs else 0


def _cleanup(args: argparse.Namespace, out: TextIO) -> int:
    """`cleanup run`: one line per step's report; exit 1 when a step failed."""
    from dynoyard.maintenance.run import run_cleanup
    from dynoyard.maintenance.settings import CleanupSettings

    result = asyncio.run(run_cleanup(CleanupSettings()))
    for report in result.reports:
        shown = report.show()
        if args.json:
            out.write(json.dumps(shown) + "\n")
        else:
            counts = "  ".join(f"{k}={v}" for k, v in shown.pop("counts").items())
            out.write("  ".join(f"{k}={v}" for k, v in shown.items()) + f"  {counts}\n")
    return 1 if result.failed else 0


def _daily(args: argparse.Namespace, store: BlockingStore, out: TextIO) -> None:
    store.get_org(args.org)  # an unknown org is an error, not an empty list
    dynamo = store.store
    now = datetime.now(UTC)
    start = args.since or now - timedelta(days=RETENTION_DAYS + KEEP_DAYS)

    async def read() -> list[dict[str, Any]]:
        try:
            # The rolled-up days from their aggregates, the others from their records.
            return await daily_usage(dynamo, args.org, start, now + timedelta(days=1), 10**9)
        finally:
            await dynamo.aclose()

    for line in asyncio.run(read()):
        out.write((json.dumps(line) if args.json else _human(line)) + "\n")


def _export(args: argparse.Namespace, store: BlockingStore, out: TextIO) -> None:
    store.get_org(args.org)  # an unknown org is an error, not an empty export
    records = store.usage_records(args.org, args.since)
    # The one way to format records, the console's /usage/export's too (domain/usage.py).
    out.write(export_header(args.format) + export_lines(records, args.format))


def _human(result: dict[str, Any]) -> str:
    lines = []
    for name, value in result.items():
        if isinstance(value, dict):
            lines += [f"{name}.{k}: {v}" for k, v in value.items()]
        else:
            lines.append(f"{name}: {value}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        store = _store()
        if args.group == "usage":
            (_export if args.action == "export" else _daily)(args, store, sys.stdout)
            return 0
        if args.group == "cleanup":
            return _cleanup(args, sys.stdout)
        if args.group == "audit":
            _audit(args, store, sys.stdout)
            return 0
        if args.group == "billing" and args.action == "history":
            _history(args, store, sys.stdout)
            return 0
        if args.group == "billing" and args.action == "reconcile":
            return _reconcile(args, store, sys.stdout)
        if args.group == "billing" and args.action == "alerts":
            result = _alerts()
        else:
            handlers = {"org": _org_command, "key": _key_command, "credits": _grant}
            result = handlers[args.group](args, store)
    except CliError as exc:
        return _fail(str(exc))
    except UnknownOrg as exc:
        return _fail(f"no organization {exc.args[0]}")
    except UnknownKey as exc:
        return _fail(f"no API key {exc.args[0]}")
    except Exception as exc:  # store unreachable, bad credentials: one line, no traceback
        return _fail(f"{type(exc).__name__}: {exc}")
    if args.json:
        print(json.dumps(result))
    else:
        print(_human(result))
        if "api_key" in result:
            print("This is the only time the API key is shown: keep it now.", file=sys.stderr)
    return 0


def _fail(message: str) -> int:
    print(f"dynoyard: error: {message}", file=sys.stderr)
    return 1
