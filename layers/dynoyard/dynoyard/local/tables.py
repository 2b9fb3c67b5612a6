"""DynamoDB tables built from template.yaml's definitions: no second schema to drift."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from botocore.config import Config

TEMPLATE = Path(
    os.environ.get("DYNOYARD_TEMPLATE", Path(__file__).resolve().parents[4] / "template.yaml")
)
DEFAULT_NAMES = {
    "ACCOUNTS_TABLE": "dynoyard-accounts",
    "USAGE_TABLE": "dynoyard-usage",
    "CACHE_TABLE": "dynoyard-cache",
    "IDEMPOTENCY_TABLE": "dynoyard-idempotency",
}


class _CfnLoader(yaml.SafeLoader):
    """Reads CloudFormation short tags (!Ref, !Sub, !GetAtt, ...) as {"Ref": ...} etc."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_CfnLoader.add_multi_constructor("!", _tag)


@dataclass(frozen=True)
class TableSpec:
    logical_id: str
    create_kwargs: dict[str, Any]
    ttl_attribute: str | None


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a template")
    return data


def table_env_names(template_path: Path = TEMPLATE) -> dict[str, str]:
    """Env var name -> logical id, from Globals.Function.Environment.Variables `!Ref`s."""
    template = load_template(template_path)
    resources = template.get("Resources", {})
    variables = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    found: dict[str, str] = {}
    for env_name, value in variables.items():
        ref = value.get("Ref") if isinstance(value, dict) else None
        if ref and resources.get(ref, {}).get("Type") == "AWS::DynamoDB::Table":
            found[env_name] = ref
    return found


def table_specs(template_path: Path = TEMPLATE) -> dict[str, TableSpec]:
    """Logical id -> what create_table needs, taken from the template's table resources."""
    specs: dict[str, TableSpec] = {}
    for logical_id, resource in load_template(template_path).get("Resources", {}).items():
        if resource.get("Type") != "AWS::DynamoDB::Table":
            continue
        props = resource["Properties"]
        kwargs: dict[str, Any] = {
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": "PAY_PER_REQUEST",
        }
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {k: v for k, v in index.items() if k in ("IndexName", "KeySchema", "Projection")}
                for index in props["GlobalSecondaryIndexes"]
            ]
        ttl = props.get("TimeToLiveSpecification") or {}
        specs[logical_id] = TableSpec(
            logical_id, kwargs, ttl.get("AttributeName") if ttl.get("Enabled") else None
        )
    return specs


def default_table_names() -> dict[str, str]:
    return {env: os.environ.get(env, default) for env, default in DEFAULT_NAMES.items()}


def ensure_tables(
    client: Any, table_names: Mapping[str, str], template_path: Path = TEMPLATE
) -> list[str]:
    """Creates each missing table (and its TTL); returns the names it created."""
    specs = table_specs(template_path)
    existing = set(client.list_tables().get("TableNames", []))
    created: list[str] = []
    for env_name, logical_id in table_env_names(template_path).items():
        name = table_names.get(env_name)
        if not name or name in existing:
            continue
        spec = specs[logical_id]
        client.create_table(TableName=name, **spec.create_kwargs)
        _wait_active(client, name)
        if spec.ttl_attribute:
            client.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": spec.ttl_attribute},
            )
        created.append(name)
    return created


def local_client() -> Any:
    """A botocore client for local tooling (creating tables, scanning them in tests); the
    gateway itself talks to DynamoDB through `DynamoClient`."""
    import botocore.session

    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return botocore.session.get_session().create_client(
        "dynamodb",
        region_name=region,
        config=Config(retries={"max_attempts": 3, "mode": "standard"}),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "local"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
    )


def _wait_active(client: Any, name: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while client.describe_table(TableName=name)["Table"]["TableStatus"] != "ACTIVE":
        if time.monotonic() > deadline:
            raise TimeoutError(f"table {name} did not become active")
        time.sleep(0.05)
