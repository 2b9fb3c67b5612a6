"""template.yaml is the one schema: cfn-lint passes and local tables come from it."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from dynoyard.local.tables import ensure_tables, local_client, table_env_names, table_specs

ROOT = Path(__file__).resolve().parents[2]


def test_given_the_template_when_linted_then_cfn_lint_is_clean():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    done = subprocess.run(
        [str(cfn_lint), str(ROOT / "template.yaml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_given_the_template_when_read_then_every_table_env_var_maps_to_a_table():
    assert table_env_names() == {
        "ACCOUNTS_TABLE": "AccountsTable",
        "USAGE_TABLE": "UsageTable",
        "CACHE_TABLE": "CacheTable",
        "IDEMPOTENCY_TABLE": "IdempotencyTable",
    }
    specs = table_specs()
    assert specs["UsageTable"].ttl_attribute == "expires_at"
    assert specs["IdempotencyTable"].ttl_attribute == "expiration"


def test_given_fresh_names_when_ensured_twice_then_tables_match_the_template(tables):
    client = local_client()
    prefix = f"tpl{uuid.uuid4().hex[:6]}"
    names = {env: f"{prefix}-{env.lower()}" for env in table_env_names()}
    assert sorted(ensure_tables(client, names)) == sorted(names.values())
    assert ensure_tables(client, names) == []  # idempotent
    accounts = client.describe_table(TableName=names["ACCOUNTS_TABLE"])["Table"]
    assert [k["AttributeName"] for k in accounts["KeySchema"]] == ["pk", "sk"]
    assert accounts["GlobalSecondaryIndexes"][0]["IndexName"] == "gsi1"
    ttl = client.describe_time_to_live(TableName=names["USAGE_TABLE"])["TimeToLiveDescription"]
    assert ttl["AttributeName"] == "expires_at" and ttl["TimeToLiveStatus"] == "ENABLED"
    for name in names.values():
        client.delete_table(TableName=name)
