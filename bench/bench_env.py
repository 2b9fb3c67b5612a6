"""Per-run DynamoDB tables, a seeded organization and key, and the catalog for the bench.

    python bench/bench_env.py setup --prefix bench-20261125-101500 \
        --upstream-base http://127.0.0.1:18000/v1 --dir /tmp/dynoyard-bench.xyz
    python bench/bench_env.py teardown --prefix bench-20261125-101500

`setup` creates <prefix>-accounts, -usage, -cache and -idempotency (through
`dynoyard.local.tables` when that module exists, else with the same schema here), creates
an organization with 1,000,000 USD of credits and one key, writes `<dir>/models.yaml`
routing `gpt-4o-mini` to the fake upstream, and prints shell assignments (BENCH_KEY,
BENCH_ORG, DYNOYARD_MODELS_FILE and the four table variables) for `eval`.
DynamoDB is reached through AWS_ENDPOINT_URL_DYNAMODB, as the gateway does.
"""

from __future__ import annotations

import argparse
import shlex
import time
from decimal import Decimal
from pathlib import Path

from botocore.exceptions import ClientError

from dynoyard.adapters.dynamo import blocking_store
from dynoyard.local.tables import ensure_tables, local_client
from dynoyard.settings import GatewaySettings

TABLE_VARS = ("ACCOUNTS_TABLE", "USAGE_TABLE", "CACHE_TABLE", "IDEMPOTENCY_TABLE")
CREDITS = Decimal("1000000")

CATALOG = """\
# Written by bench/bench_env.py for one bench run.
providers:
  bench:
    base_url: {base}
    label: Fake upstream of the overhead benchmark (bench/fake_upstream.py)
models:
  - id: gpt-4o-mini
    provider: bench
    upstream: gpt-4o-mini
    price: {{input_per_mtok: "0.15", output_per_mtok: "0.60"}}
    max_output_tokens: 16384
    context_window: 128000
  - id: text-embedding-3-small
    provider: bench
    upstream: text-embedding-3-small
    kind: embedding
    price: {{input_per_mtok: "0.02"}}
"""


def table_names(prefix: str) -> dict[str, str]:
    return {var: f"{prefix}-{var.removesuffix('_TABLE').lower()}" for var in TABLE_VARS}


def setup(args: argparse.Namespace) -> None:
    client = local_client()
    names = table_names(args.prefix)
    ensure_tables(client, names)
    settings = GatewaySettings(
        accounts_table=names["ACCOUNTS_TABLE"], usage_table=names["USAGE_TABLE"]
    )
    store = blocking_store(settings)
    org = store.create_org("Bench", "bench@localhost")
    store.grant_credits(org, CREDITS, "bench")
    key = store.create_key(org, name="bench").secret
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    catalog = directory / "models.yaml"
    catalog.write_text(CATALOG.format(base=args.upstream_base), encoding="utf-8")
    values = {
        **names,
        "BENCH_KEY": key,
        "BENCH_ORG": org,
        "DYNOYARD_MODELS_FILE": str(catalog),
    }
    for name, value in values.items():
        print(f"{name}={shlex.quote(value)}")


def teardown(args: argparse.Namespace) -> None:
    client = local_client()
    for name in table_names(args.prefix).values():
        try:
            client.delete_table(TableName=name)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
    time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description="bench tables, seed and catalog")
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("setup")
    one.add_argument("--prefix", required=True)
    one.add_argument("--upstream-base", required=True)
    one.add_argument("--dir", required=True)
    two = sub.add_parser("teardown")
    two.add_argument("--prefix", required=True)
    args = parser.parse_args()
    setup(args) if args.command == "setup" else teardown(args)


if __name__ == "__main__":
    main()
