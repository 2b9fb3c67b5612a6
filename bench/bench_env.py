"""Per-run DynamoDB tables, a seeded organization and key, and the catalog for the bench.

    python bench/bench_env.py setup --prefix bench-20261125-101500 \
        --upstream-base http://127.0.0.1:18000/v1 --dir /tmp/dynoyard-bench.xyz
    python bench/bench_env.py teardown --prefix bench-20261125-101500

`setup` creates <prefix>-accounts, -usage, -cache and -idempotency (through
`dynoyard.local.tables`, from template.yaml), creates an organization with 1,000,000 USD of
credits and one key, writes `<dir>/models.yaml` routing `gpt-4o-mini` to the fake upstream,
and prints shell assignments (BENCH_KEY, BENCH_ORG, DYNOYARD_MODELS_FILE and the four table
variables) for `eval`. DynamoDB (Local, or bench/dynamo_standin.py) is reached through
AWS_ENDPOINT_URL_DYNAMODB, as the gateway does.

The variants, each set the way an operator would, through the CLI (`python -m dynoyard`):
  --cache          `org set ORG --cache on`: the org's response cache (the bench sends the
                   same body every time, so every request after the first is a hit)
  --org-rpm N      `org set ORG --rpm N`: the org's requests-per-minute limit
  --key-limits     `key create --rpm --tpm --daily-usd --monthly-usd` with KEY_LIMITS: every
                   limit and cap counted on every request, none ever reached
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

from botocore.exceptions import ClientError

from dynoyard.adapters.dynamo.store import blocking_store
from dynoyard.local.tables import ensure_tables, local_client
from dynoyard.settings import GatewaySettings

TABLE_VARS = ("ACCOUNTS_TABLE", "USAGE_TABLE", "CACHE_TABLE", "IDEMPOTENCY_TABLE")
CREDITS = Decimal("1000000")
# High enough that a bench run never reaches them (at most ~60,000 requests a minute, each
# holding < 200 tokens and settling 32, < $0.0001), so each is counted on every request and
# none refuses. 10,000,000 is the most `--rpm`/`--tpm` take.
KEY_LIMITS = {
    "--rpm": "1000000",
    "--tpm": "10000000",
    "--daily-usd": "100000",
    "--monthly-usd": "500000",
}

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
    org_settings = (["--cache", "on"] if args.cache else []) + (
        ["--rpm", str(args.org_rpm)] if args.org_rpm else []
    )
    if org_settings:
        cli(names, ["org", "set", org, *org_settings])
    if args.key_limits:
        limits = [part for pair in KEY_LIMITS.items() for part in pair]
        made = cli(names, ["key", "create", "--org", org, "--name", "bench", *limits])
        key = str(made["api_key"])
    else:
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


def cli(names: dict[str, str], argv: list[str]) -> dict[str, object]:
    """`python -m dynoyard --json ARGV` against this run's tables: its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "dynoyard", "--json", *argv],
        env={**os.environ, **names},
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"dynoyard {' '.join(argv)}: {done.stderr.strip() or done.stdout}")
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    shown = {name: value for name, value in answer.items() if name != "api_key"}
    print(f"dynoyard {' '.join(argv)}: {shown}", file=sys.stderr)
    return answer


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
    one.add_argument("--cache", action="store_true", help="the org's response cache on")
    one.add_argument("--org-rpm", type=int, default=0, help="the org's rpm limit (0: none)")
    one.add_argument("--key-limits", action="store_true", help="every per-key limit and cap")
    two = sub.add_parser("teardown")
    two.add_argument("--prefix", required=True)
    args = parser.parse_args()
    setup(args) if args.command == "setup" else teardown(args)


if __name__ == "__main__":
    main()
