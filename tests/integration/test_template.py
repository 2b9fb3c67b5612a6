"""template.yaml: cfn-lint passes, local tables come from it, and what it deploys is pinned:
each function's IAM, limits, deadlines, tracing settings, alarms and dashboard."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from dynoyard.console.team import ACCEPT_PATH
from dynoyard.local.tables import (
    ensure_tables,
    load_template,
    local_client,
    table_env_names,
    table_specs,
)
from dynoyard.web.pages import PAGE_PATHS

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


# -- what the functions may do --------------------------------------------------------

ACCOUNT_PREFIX = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:"
SECRET = "secret:${ProviderKeysSecretName}-??????"
# The data plane (adapters/dynamo/ledger.py): GetItem on the key item, a conditional
# UpdateItem on the org item (the hold), on the key item (its limits' counters) and on
# IP#<address> (failed key attempts), TransactWriteItems = UpdateItem on the org item +
# PutItem on usage (the settle; IAM authorizes each contained action), PutItem on usage when
# nothing is refunded; the provider keys from one secret; the opt-in response cache
# (adapters/dynamo/cache.py): GetItem and PutItem (in the settle) on ORG#<id> partitions.
# The alerts (adapters/dynamo/alerts_store.py): the crossing request marks one due, the
# org's state (UpdateItem) and its marker ALERT#<kind> (PutItem) in one TransactWriteItems,
# and a credit's next request re-arms it (UpdateItem of ORG#).
# Nothing else: no Query, no index, no idempotency table.
DATA_PLANE_GRANTS = {
    ("AccountsTable", "dynamodb:GetItem", ("KEY#*",)),
    ("AccountsTable", "dynamodb:UpdateItem", ("ORG#*", "KEY#*", "IP#*")),
    ("AccountsTable", "dynamodb:PutItem", ("ALERT#*",)),
    ("UsageTable", "dynamodb:PutItem", None),
    ("CacheTable", "dynamodb:GetItem", ("ORG#*",)),
    ("CacheTable", "dynamodb:PutItem", ("ORG#*",)),
    (SECRET, "secretsmanager:GetSecretValue", None),
}
# The console (adapters/dynamo/console_store.py; admin.py's create_org, get_org,
# update_org_settings, create_key, revoke_key, rotate_key; cache.py's clear_cache): reads of
# users, their address pointers, sessions, orgs, key items (rotation reads what it copies)
# and key-id pointers; writes of exactly the items it makes; links and sessions deleted;
# memberships and an org's keys (gsi1) queried; an org's cache entries deleted on opt-out;
# rights_store.py's export and account deletion (a deleted account's items, a closed org's
# usage records' client IPs); the team's invitations (INVITE#<token hash>) and membership
# changes; the sign-in limits' counters (RATE#); when their parameters are set, SES
# SendEmail from the one identity and its own secret (the Resend key, the OAuth clients). No
# scan, nothing of IP# items, not the provider keys' secret.
SES_IDENTITY = "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/${SesIdentity}"
CONSOLE_SECRET = "secret:${ConsoleSecretName}-??????"
STRIPE_SECRET = "secret:${StripeSecretName}-??????"
CONSOLE_GRANTS = {
    (
        "AccountsTable",
        "dynamodb:GetItem",
        ("USER#*", "EMAIL#*", "SESSION#*", "ORG#*", "KEY#*", "KEYID#*", "INVITE#*", "UNSUB#*"),
    ),
    (
        "AccountsTable",
        "dynamodb:PutItem",
        (
            "USER#*",
            "EMAIL#*",
            "LINK#*",
            "SESSION#*",
            "ORG#*",
            "KEY#*",
            "KEYID#*",
            "OAUTH#*",
            "IDENTITY#*",
            "INVITE#*",
            "WELCOME#*",
        ),
    ),
    (
        "AccountsTable",
        "dynamodb:UpdateItem",
        ("USER#*", "RATE#*", "SESSION#*", "ORG#*", "KEY#*", "KEYID#*"),
    ),
    (
        "AccountsTable",
        "dynamodb:DeleteItem",
        (
            "LINK#*",
            "SESSION#*",
            "OAUTH#*",
            "USER#*",
            "EMAIL#*",
            "IDENTITY#*",
            "ORG#*",
            "INVITE#*",
            "WELCOME#*",
            "UNSUB#*",
        ),
    ),
    ("AccountsTable", "dynamodb:ConditionCheckItem", ("ORG#*",)),
    ("AccountsTable", "dynamodb:Query", ("USER#*", "ORG#*", "EMAIL#*")),
    ("AccountsTable/index/gsi1", "dynamodb:Query", ("ORG#*",)),
    ("CacheTable", "dynamodb:Query", ("ORG#*",)),
    ("CacheTable", "dynamodb:BatchWriteItem", ("ORG#*",)),
    ("UsageTable", "dynamodb:Query", ("ORG#*",)),
    # daily aggregates and the org's mark of rolled-up days (rollup_store.py)
    ("UsageTable", "dynamodb:Query", ("DAILY#*",)),
    ("UsageTable", "dynamodb:GetItem", ("DAILY#*",)),
    ("UsageTable", "dynamodb:UpdateItem", ("ORG#*",)),
    (SES_IDENTITY, "ses:SendEmail", None),
    (CONSOLE_SECRET, "secretsmanager:GetSecretValue", None),
    (STRIPE_SECRET, "secretsmanager:GetSecretValue", None),
}
# The Stripe webhook (domain/billing.py BillingEvents through adapters/dynamo/billing_store.py
# `apply` and `charge`): a movement is one TransactWriteItems of Puts of its guard
# (MOVEMENT#) and its ledger entry (ORG#/LEDGER#) and Updates of the org's balance and of the
# charge (CHARGE#: written with a top-up, its refunded total moved conditionally on what
# GetItem read; a save_card top-up's recharge_card on ORG#), then, after a credit, the
# alerts re-armed (UpdateItem of ORG#); Powertools Idempotency's records on the idempotency
# table; a failed event's id to its dead-letter queue; its own Stripe secret. No Query, no
# scan, no user or key item, no usage table.
WEBHOOK_GRANTS = {
    ("AccountsTable", "dynamodb:GetItem", ("CHARGE#*",)),
    ("AccountsTable", "dynamodb:PutItem", ("ORG#*", "MOVEMENT#*")),
    ("AccountsTable", "dynamodb:UpdateItem", ("ORG#*", "CHARGE#*")),
    ("IdempotencyTable", "dynamodb:GetItem", None),
    ("IdempotencyTable", "dynamodb:PutItem", None),
    ("IdempotencyTable", "dynamodb:UpdateItem", None),
    ("IdempotencyTable", "dynamodb:DeleteItem", None),
    ("WebhookDeadLetterQueue", "sqs:SendMessage", None),
    (STRIPE_SECRET, "secretsmanager:GetSecretValue", None),
}
# The cleanup (dynoyard/maintenance/, functions/cleanup/): each step's checkpoint
# (job_store.py: JOB#<step> read, written, cleared); the due alerts and recharges
# (alerts_store.py through domain/alerts.py: ALERT#<kind> markers queried and deleted once
# sent, the org item read and its alert/recharge state moved by conditional UpdateItem; the
# managers through console_store.py's org_members (Query ORG#) and get_user (GetItem USER#));
# SES from the one identity, the Resend key's secret, the Stripe secret for off-session
# recharges; the stranded holds (reconcile.py org_ids: Scan of the org items, filtered on
# held_usd; ledger.py stranded_holds: GetItem ORG#, return_hold: conditional UpdateItem
# ORG#). CLEANUP_MODULES below pins every DynamoDB call its code makes.
CLEANUP_GRANTS = {
    ("AccountsTable", "dynamodb:GetItem", ("JOB#*",)),
    ("AccountsTable", "dynamodb:PutItem", ("JOB#*",)),
    ("AccountsTable", "dynamodb:DeleteItem", ("JOB#*",)),
    ("AccountsTable", "dynamodb:GetItem", ("ORG#*", "USER#*")),
    ("AccountsTable", "dynamodb:Query", ("ALERT#*", "ORG#*")),
    ("AccountsTable", "dynamodb:UpdateItem", ("ORG#*",)),
    ("AccountsTable", "dynamodb:DeleteItem", ("ALERT#*",)),
    ("AccountsTable", "dynamodb:Scan", None),
    # retention (retention_store.py): expired accounts items (EXPIRING_PREFIXES), usage
    # records of rolled-up days (DAILY# aggregates read), expired cache answers
    (
        "AccountsTable",
        "dynamodb:DeleteItem",
        (
            "SESSION#*",
            "LINK#*",
            "EMAIL#*",
            "OAUTH#*",
            "RATE#*",
            "ORG#*",
            "INVITE#*",
            "UNSUB#*",
            "USER#*",
            "IP#*",
        ),
    ),
    ("UsageTable", "dynamodb:Query", ("ORG#*",)),
    ("UsageTable", "dynamodb:BatchWriteItem", ("ORG#*",)),
    ("UsageTable", "dynamodb:GetItem", ("DAILY#*",)),
    # the roll-up (rollup_store.py): aggregates put, the org's mark moved; the ledger's
    # usage_daily entry (billing_store.py apply: Puts and a ConditionCheck, no balance moved)
    ("UsageTable", "dynamodb:PutItem", ("DAILY#*",)),
    ("UsageTable", "dynamodb:UpdateItem", ("DAILY#*",)),
    ("AccountsTable", "dynamodb:PutItem", ("ORG#*", "MOVEMENT#*")),
    ("AccountsTable", "dynamodb:ConditionCheckItem", ("ORG#*", "MOVEMENT#*")),
    ("CacheTable", "dynamodb:Query", ("ORG#*",)),
    ("CacheTable", "dynamodb:DeleteItem", ("ORG#*",)),
    # the welcome sequence (console_store.py): due days, claims on the user, unsubscribe links
    ("AccountsTable", "dynamodb:Query", ("WELCOME#*",)),
    ("AccountsTable", "dynamodb:DeleteItem", ("WELCOME#*",)),
    ("AccountsTable", "dynamodb:UpdateItem", ("USER#*",)),
    ("AccountsTable", "dynamodb:PutItem", ("UNSUB#*", "USER#*")),
    (SES_IDENTITY, "ses:SendEmail", None),
    (CONSOLE_SECRET, "secretsmanager:GetSecretValue", None),
    (STRIPE_SECRET, "secretsmanager:GetSecretValue", None),
}
# A statement kept only when its parameter is set: its condition -> that parameter.
CONDITIONAL_STATEMENTS = {"HasSesIdentity": "SesIdentity", "HasConsoleSecret": "ConsoleSecretName"}
EXPECTED_GRANTS = {
    "GatewayFunction": DATA_PLANE_GRANTS,
    "GatewayStreamFunction": DATA_PLANE_GRANTS,
    "ConsoleFunction": CONSOLE_GRANTS,
    "StripeWebhookFunction": WEBHOOK_GRANTS,
    "CleanupFunction": CLEANUP_GRANTS,
}
DATA_PLANE_DYNAMODB_CALLS = {"GetItem", "UpdateItem", "TransactWriteItems", "PutItem"}
CONSOLE_STORE_DYNAMODB_CALLS = {
    "GetItem",
    "PutItem",
    "DeleteItem",
    "UpdateItem",
    "TransactWriteItems",
    "Query",
}


def _resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template()["Resources"]
    return resources


def _functions() -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in _resources().items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resource_name(resource: Any) -> str:
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        return str(logical_id) if attribute == "Arn" else f"{logical_id}.{attribute}"
    if isinstance(resource, dict) and isinstance(resource.get("Fn::Sub"), str):
        text = str(resource["Fn::Sub"])
        text = re.sub(r"\$\{(\w+)\.Arn\}", r"\1", text)
        return text.removeprefix(ACCOUNT_PREFIX)
    return repr(resource)


def _leading_keys(condition: Any) -> Any:
    if condition is None:
        return None
    if set(condition) == {"ForAllValues:StringLike"}:
        keys = condition["ForAllValues:StringLike"]
        if set(keys) == {"dynamodb:LeadingKeys"}:
            return tuple(_as_list(keys["dynamodb:LeadingKeys"]))
    return repr(condition)  # anything else shows up in the comparison


def _statements(properties: dict[str, Any]) -> list[dict[str, Any]]:
    """Every inline statement; a conditional one (`!If [Has..., statement, NoValue]`) as it is
    deployed when its parameter is set."""
    statements = []
    for policy in properties.get("Policies", []):
        assert isinstance(policy, dict) and set(policy) == {"Statement"}, (
            f"only inline statements, no managed policies or SAM policy templates: {policy}"
        )
        for statement in policy["Statement"]:
            if set(statement) == {"Fn::If"}:
                condition, when_set, otherwise = statement["Fn::If"]
                assert condition in CONDITIONAL_STATEMENTS, condition
                assert otherwise == {"Ref": "AWS::NoValue"}, statement
                statement = when_set
            statements.append(statement)
    return statements


def _grants(properties: dict[str, Any]) -> set[tuple[str, str, Any]]:
    grants = set()
    for statement in _statements(properties):
        assert statement["Effect"] == "Allow" and "NotAction" not in statement
        assert "NotResource" not in statement
        for action in _as_list(statement["Action"]):
            assert "*" not in action, action
            for resource in _as_list(statement["Resource"]):
                grants.add(
                    (
                        _resource_name(resource),
                        action,
                        _leading_keys(statement.get("Condition")),
                    )
                )
    return grants


def test_given_each_function_when_its_iam_is_read_then_it_is_exactly_what_its_code_uses():
    functions = _functions()
    assert set(functions) == set(EXPECTED_GRANTS), "pin the new function's grants here"
    for name, properties in functions.items():
        assert "Role" not in properties
        assert _grants(properties) == EXPECTED_GRANTS[name], name


def test_given_the_data_plane_when_its_dynamodb_calls_are_listed_then_iam_was_written_for_them():
    """A tripwire: a new call on the hot path needs its grant in template.yaml (and above)."""
    ledger = ROOT / "layers" / "dynoyard" / "dynoyard" / "adapters" / "dynamo" / "ledger.py"
    calls = set(re.findall(r'_db\.call\(\s*"(\w+)"', ledger.read_text()))
    assert calls == DATA_PLANE_DYNAMODB_CALLS


def test_given_the_console_store_when_its_dynamodb_calls_are_listed_then_iam_was_written():
    """A tripwire: a new call in the console's store needs its grant (and a line above)."""
    store = ROOT / "layers" / "dynoyard" / "dynoyard" / "adapters" / "dynamo" / "console_store.py"
    calls = set(re.findall(r'_db\.call\(\s*"(\w+)"', store.read_text()))
    assert calls == CONSOLE_STORE_DYNAMODB_CALLS


def test_given_the_console_when_routed_then_it_serves_api_and_pages_on_the_same_rest_api():
    console = _functions()["ConsoleFunction"]
    assert console["CodeUri"] == "functions/console/" and console["Handler"] == "app.handler"
    routes = {
        (e["Properties"]["Path"], e["Properties"]["Method"])
        for e in console["Events"].values()
        if e["Type"] == "Api" and e["Properties"]["RestApiId"] == {"Ref": "GatewayApi"}
    }
    assert len(routes) == len(console["Events"])
    # The API, and every page the web package serves (its own list), with their assets.
    pages = {(p, "GET") for p in PAGE_PATHS} | {
        ("/console", "GET"),
        ("/console/{page}", "GET"),
        (ACCEPT_PATH, "GET"),  # the emailed invitation's link
        ("/assets/{name}", "GET"),
    }
    assert routes == {("/api/{proxy+}", "ANY")} | pages
    assert _environment(console)["DYNOYARD_PUBLIC_URL"] == {"Ref": "PublicUrl"}


def test_given_the_console_when_email_and_oauth_are_wired_then_each_grant_is_one_resource():
    """SendEmail only from the SesIdentity parameter's identity, the secret read only of the
    ConsoleSecretName parameter's secret, each statement present only when its parameter is
    set (default empty: no grant, provider off); the gateway functions get neither."""
    template = load_template()
    parameters, conditions = template["Parameters"], template["Conditions"]
    console = _functions()["ConsoleFunction"]
    conditional = {}
    for policy in console["Policies"]:
        for statement in policy["Statement"]:
            if set(statement) == {"Fn::If"}:
                condition, when_set, _ = statement["Fn::If"]
                conditional[condition] = when_set
    assert set(conditional) == set(CONDITIONAL_STATEMENTS)
    for condition, parameter in CONDITIONAL_STATEMENTS.items():
        assert conditions[condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, ""]}]}
        assert parameters[parameter]["Type"] == "String"
        assert parameters[parameter]["Default"] == ""
    send = conditional["HasSesIdentity"]
    assert send["Action"] == "ses:SendEmail" and "Condition" not in send
    assert send["Resource"] == {"Fn::Sub": SES_IDENTITY}
    read = conditional["HasConsoleSecret"]
    assert read["Action"] == "secretsmanager:GetSecretValue" and "Condition" not in read
    assert read["Resource"] == {"Fn::Sub": ACCOUNT_PREFIX + CONSOLE_SECRET}
    for name in ("GatewayFunction", "GatewayStreamFunction"):
        resources = {resource for resource, _, _ in EXPECTED_GRANTS[name]}
        actions = {action for _, action, _ in EXPECTED_GRANTS[name]}
        assert "ses:SendEmail" not in actions and CONSOLE_SECRET not in resources
    variables = _environment(console)
    assert variables["DYNOYARD_CONSOLE_SECRET"] == {"Ref": "ConsoleSecretName"}
    assert variables["DYNOYARD_EMAIL_FROM"] == {"Ref": "EmailFrom"}
    assert variables["DYNOYARD_EMAIL_BACKEND"] == {"Ref": "EmailBackend"}
    assert parameters["EmailFrom"]["Default"] == ""
    assert parameters["EmailBackend"]["Default"] == "auto"
    assert set(parameters["EmailBackend"]["AllowedValues"]) == {"auto", "ses", "resend"}


# -- limits, deadlines, tracing ------------------------------------------------------------


def _globals() -> dict[str, Any]:
    function_globals: dict[str, Any] = load_template()["Globals"]["Function"]
    return function_globals


def _environment(properties: dict[str, Any]) -> dict[str, Any]:
    variables = dict(_globals()["Environment"]["Variables"])
    variables.update(properties.get("Environment", {}).get("Variables", {}))
    return variables


def test_given_the_function_url_when_deployed_then_reserved_concurrency_caps_it():
    parameter = load_template()["Parameters"]["StreamReservedConcurrency"]
    assert parameter["Type"] == "Number" and int(parameter["MinValue"]) >= 1
    assert 1 <= int(parameter["Default"]) <= 100
    for name, properties in _functions().items():
        if "FunctionUrlConfig" in properties:
            assert properties["ReservedConcurrentExecutions"] == {
                "Ref": "StreamReservedConcurrency"
            }, name


def test_given_the_rest_stage_when_deployed_then_every_method_is_throttled_by_parameters():
    """The whole stage, and the webhook's own settings (its detailed metrics, which replace
    the stage's for that method) with the same throttling."""
    parameters = load_template()["Parameters"]
    stage, webhook = _resources()["GatewayApi"]["Properties"]["MethodSettings"]
    assert stage["ResourcePath"] == "/*" and stage["HttpMethod"] == "*"
    assert webhook["ResourcePath"] == "/~1webhooks~1stripe" and webhook["HttpMethod"] == "POST"
    assert webhook["MetricsEnabled"] is True and "MetricsEnabled" not in stage
    for settings in (stage, webhook):
        for key, parameter in (
            ("ThrottlingBurstLimit", "ApiThrottlingBurstLimit"),
            ("ThrottlingRateLimit", "ApiThrottlingRateLimit"),
        ):
            assert settings[key] == {"Ref": parameter}
            assert parameters[parameter]["Type"] == "Number"
            assert int(parameters[parameter]["Default"]) >= 1


def test_given_tracing_when_configured_then_no_response_or_error_is_captured():
    for name, properties in _functions().items():
        variables = _environment(properties)
        assert variables["POWERTOOLS_TRACER_CAPTURE_RESPONSE"] == "false", name
        assert variables["POWERTOOLS_TRACER_CAPTURE_ERROR"] == "false", name


def test_given_request_deadlines_when_compared_then_each_leaves_time_to_settle():
    rest_functions = set()
    for name, properties in _functions().items():
        if EXPECTED_GRANTS.get(name) != DATA_PLANE_GRANTS:
            continue  # the console answers from DynamoDB alone: no upstream, no deadline
        variables = _environment(properties)
        timeout = float(properties.get("Timeout", _globals()["Timeout"]))
        assert "DYNOYARD_REQUEST_DEADLINE_SECONDS" in variables, name
        deadline = float(variables["DYNOYARD_REQUEST_DEADLINE_SECONDS"])
        assert deadline + 3 <= timeout, name
        if any(e["Type"] == "Api" for e in properties.get("Events", {}).values()):
            rest_functions.add(name)
            assert deadline < 29, f"{name}: API Gateway's REST integration stops at 29 s"
    assert rest_functions == {"GatewayFunction"}


# -- alarms and dashboard --------------------------------------------------------------


def _alarm(logical_id: str) -> dict[str, Any]:
    resource = _resources()[logical_id]
    assert resource["Type"] == "AWS::CloudWatch::Alarm"
    properties: dict[str, Any] = resource["Properties"]
    return properties


def test_given_the_app_metrics_when_alarmed_then_namespace_and_service_match_powertools():
    variables = _globals()["Environment"]["Variables"]
    for logical_id, resource in _resources().items():
        if resource["Type"] != "AWS::CloudWatch::Alarm":
            continue
        alarm = resource["Properties"]
        if "Metrics" in alarm or alarm["Namespace"].startswith("AWS/"):
            continue  # metric math alarms read AWS/DynamoDB only
        assert alarm["Namespace"] == variables["POWERTOOLS_METRICS_NAMESPACE"], logical_id
        assert alarm["Dimensions"] == [
            {"Name": "service", "Value": variables["POWERTOOLS_SERVICE_NAME"]}
        ], logical_id


def test_given_money_and_store_metrics_when_alarmed_then_thresholds_are_as_documented():
    hold = _alarm("HoldExceededAlarm")
    assert (hold["MetricName"], hold["Statistic"], hold["Period"]) == ("HoldExceeded", "Sum", 300)
    assert (hold["Threshold"], hold["EvaluationPeriods"]) == (1, 1)
    assert hold["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    store = _alarm("StoreUnavailableAlarm")
    assert (store["MetricName"], store["Statistic"], store["Period"]) == (
        "StoreUnavailable",
        "Sum",
        300,
    )
    assert (store["Threshold"], store["EvaluationPeriods"]) == (5, 1)
    assert store["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    for alarm in (hold, store):
        assert alarm["TreatMissingData"] == "notBreaching"


def test_given_the_dashboard_when_rendered_then_it_is_json_showing_every_alarmed_metric():
    body = _resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    shown = set()
    for widget in dashboard["widgets"]:
        for line in widget["properties"]["metrics"]:
            names = [part for part in line if isinstance(part, str)]
            if len(names) > 1:  # [namespace or ".", metric name, dimension, value, ...]
                shown.add(names[1])
    alarmed = {
        resource["Properties"]["MetricName"]
        for resource in _resources().values()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
        and resource["Properties"].get("Namespace", "AWS/Lambda") != "AWS/Lambda"
    }
    assert {"HoldExceeded", "StoreUnavailable", "SettleFailures", "WebhookFailures"} <= alarmed
    assert {"5XXError", "ApproximateNumberOfMessagesVisible"} <= alarmed
    assert alarmed <= shown


def test_given_the_console_store_when_its_item_prefixes_are_listed_then_iam_covers_each():
    import re

    store = ROOT / "layers" / "dynoyard" / "dynoyard" / "adapters" / "dynamo" / "console_store.py"
    # Partition keys only: an item's "pk", the first argument of _key/_get, a ":pk" value.
    patterns = (r'"pk": f"([A-Z]+)#', r'_(?:key|get)\(f"([A-Z]+)#', r'":pk": \w+\(f"([A-Z]+)#')
    used = {m for pattern in patterns for m in re.findall(pattern, store.read_text())}
    granted = {
        prefix.removesuffix("#*")
        for _, _, prefixes in CONSOLE_GRANTS
        if prefixes
        for prefix in prefixes
    }
    assert used and used <= granted, used - granted


def _console_prefixes(resource: str, action: str) -> set[str]:
    return {
        prefix.removesuffix("#*")
        for granted_resource, granted_action, keys in CONSOLE_GRANTS
        if granted_resource == resource and granted_action == action and keys
        for prefix in keys
    }


def test_given_the_rights_store_when_its_calls_and_prefixes_are_listed_then_iam_covers_them():
    """A tripwire for the export and the deletion (adapters/dynamo/rights_store.py): the
    calls it makes itself, and every item prefix it names may be deleted and queried."""
    store = ROOT / "layers" / "dynoyard" / "dynoyard" / "adapters" / "dynamo" / "rights_store.py"
    text = store.read_text()
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', text)) == {"UpdateItem", "Query", "DeleteItem"}
    named = set(re.findall(r'f"([A-Z]+)#\{', text)) - {"MEMBER"}  # a sort key only
    assert named <= _console_prefixes("AccountsTable", "dynamodb:DeleteItem"), named
    assert {"USER", "ORG", "EMAIL"} <= _console_prefixes("AccountsTable", "dynamodb:Query")
    assert _console_prefixes("UsageTable", "dynamodb:UpdateItem") == {"ORG"}
    assert {"USER", "ORG", "KEY"} <= _console_prefixes("AccountsTable", "dynamodb:UpdateItem")


# -- the Stripe webhook ------------------------------------------------------------------

DYNAMO = ROOT / "layers" / "dynoyard" / "dynoyard" / "adapters" / "dynamo"
# The ledger's store: the webhook applies movements (`apply`: TransactWriteItems of Puts of
# MOVEMENT# and ORG#/LEDGER#, Updates of ORG# and CHARGE#) and reads charges (`charge`:
# GetItem of CHARGE#); the console sets the Stripe customer (`set_customer`: UpdateItem,
# `customer`: GetItem of ORG#) and reads the history (`history`, `entries`: Query of ORG#).
BILLING_STORE = DYNAMO / "billing_store.py"
BILLING_STORE_DYNAMODB_CALLS = {"TransactWriteItems", "GetItem", "UpdateItem", "Query"}


def _granted(grants: set[tuple[str, str, Any]], action: str) -> set[str]:
    return {
        prefix.removesuffix("#*")
        for resource, granted_action, keys in grants
        if resource == "AccountsTable" and granted_action == action and keys
        for prefix in keys
    }


def test_given_the_billing_store_when_its_dynamodb_calls_are_listed_then_iam_was_written():
    """A tripwire: a new call in the ledger's store needs its grant (and a line above)."""
    calls = set(re.findall(r'_db\.call\(\s*"(\w+)"', BILLING_STORE.read_text()))
    assert calls == BILLING_STORE_DYNAMODB_CALLS


def test_given_the_billing_store_when_its_item_prefixes_are_listed_then_iam_covers_each():
    """The partition keys the store names: a movement's guard and entry are Put, the balance
    and the charge Updated, the charge read, by the webhook; the console reads and updates
    the org item and queries its ledger."""
    text = BILLING_STORE.read_text()
    named = set(re.findall(r'"pk": f"([A-Z]+)#\{', text)) | set(
        re.findall(r'\{"S": f"([A-Z]+)#\{', text)
    )
    assert named == {"MOVEMENT", "ORG", "CHARGE"}, named
    assert "org_key(" in text  # the org item, ORG#<org_id>
    assert {"MOVEMENT", "ORG"} <= _granted(WEBHOOK_GRANTS, "dynamodb:PutItem")
    assert {"ORG", "CHARGE"} <= _granted(WEBHOOK_GRANTS, "dynamodb:UpdateItem")
    assert {"CHARGE"} <= _granted(WEBHOOK_GRANTS, "dynamodb:GetItem")
    assert "ORG" in _granted(CONSOLE_GRANTS, "dynamodb:UpdateItem")
    assert "ORG" in _granted(CONSOLE_GRANTS, "dynamodb:GetItem")
    assert "ORG" in _granted(CONSOLE_GRANTS, "dynamodb:Query")


def test_given_the_webhook_when_routed_then_it_is_post_webhooks_stripe_on_the_same_rest_api():
    webhook = _functions()["StripeWebhookFunction"]
    assert webhook["CodeUri"] == "functions/stripe_webhook/"
    assert webhook["Handler"] == "app.handler"
    assert (ROOT / "functions" / "stripe_webhook" / "app.py").is_file()
    # The same runtime and layers as the others (from Globals), nothing of its own.
    assert not {"Runtime", "Layers", "Architectures", "Role"} & set(webhook)
    (event,) = webhook["Events"].values()
    assert event["Type"] == "Api"
    # No Auth: the Stripe-Signature header is checked by the code.
    assert event["Properties"] == {
        "RestApiId": {"Ref": "GatewayApi"},
        "Path": "/webhooks/stripe",
        "Method": "POST",
    }
    assert "Auth" not in _resources()["GatewayApi"]["Properties"]
    assert int(webhook["Timeout"]) < 29


def test_given_the_stripe_keys_when_wired_then_one_secret_read_by_the_webhook_and_console():
    """One secret (StripeSecretName) holds STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET, read
    through DYNOYARD_STRIPE_SECRET as adapters/secrets.py reads every secret; never a key in
    the template or an environment variable; the gateway functions cannot read it."""
    template = load_template()
    parameter = template["Parameters"]["StripeSecretName"]
    assert parameter["Type"] == "String" and parameter["Default"]
    functions = _functions()
    for name in ("StripeWebhookFunction", "ConsoleFunction"):
        variables = _environment(functions[name])
        assert variables["DYNOYARD_STRIPE_SECRET"] == {"Ref": "StripeSecretName"}, name
        assert (STRIPE_SECRET, "secretsmanager:GetSecretValue", None) in EXPECTED_GRANTS[name]
    for name, properties in functions.items():
        variables = _environment(properties)
        assert not {"STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET", "STRIPE_API_BASE"} & set(
            variables
        ), name
    for name in ("GatewayFunction", "GatewayStreamFunction"):
        assert not any(resource == STRIPE_SECRET for resource, _, _ in EXPECTED_GRANTS[name])
        assert "DYNOYARD_STRIPE_SECRET" not in _environment(functions[name])
    assert "whsec_" not in (ROOT / "template.yaml").read_text().replace("whsec_...", "")
    assert "sk_live_" not in (ROOT / "template.yaml").read_text().replace("sk_live_...", "")


def test_given_the_dead_letter_queue_when_deployed_then_encrypted_kept_14_days_and_named():
    queue = _resources()["WebhookDeadLetterQueue"]
    assert queue["Type"] == "AWS::SQS::Queue"
    assert queue["Properties"] == {
        "MessageRetentionPeriod": 14 * 24 * 3600,
        "SqsManagedSseEnabled": True,
    }
    webhook = _functions()["StripeWebhookFunction"]
    assert _environment(webhook)["WEBHOOK_DLQ_URL"] == {"Ref": "WebhookDeadLetterQueue"}
    sends = [grant for grant in WEBHOOK_GRANTS if grant[1].startswith("sqs:")]
    assert sends == [("WebhookDeadLetterQueue", "sqs:SendMessage", None)]


def test_given_the_webhook_when_alarmed_then_errors_5xx_dead_letters_and_failures_page():
    errors = _alarm("StripeWebhookErrorsAlarm")
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [
        {"Name": "FunctionName", "Value": {"Ref": "StripeWebhookFunction"}}
    ]
    five = _alarm("StripeWebhook5xxAlarm")
    assert (five["Namespace"], five["MetricName"]) == ("AWS/ApiGateway", "5XXError")
    api_name = _resources()["GatewayApi"]["Properties"]["Name"]
    assert {d["Name"]: d["Value"] for d in five["Dimensions"]} == {
        "ApiName": api_name,
        "Stage": {"Ref": "Stage"},
        "Resource": "/webhooks/stripe",
        "Method": "POST",
    }
    depth = _alarm("WebhookDeadLettersAlarm")
    assert (depth["Namespace"], depth["MetricName"]) == (
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
    )
    assert depth["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["WebhookDeadLetterQueue", "QueueName"]}}
    ]
    assert (depth["Statistic"], depth["Threshold"]) == ("Maximum", 0)
    assert depth["ComparisonOperator"] == "GreaterThanThreshold"
    failures = _alarm("WebhookFailuresAlarm")
    assert (failures["Namespace"], failures["MetricName"]) == ("Dynoyard", "WebhookFailures")
    for alarm in (errors, five, failures):
        assert (alarm["Statistic"], alarm["Threshold"], alarm["Period"]) == ("Sum", 1, 300)
        assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    for alarm in (errors, five, depth, failures):
        assert alarm["TreatMissingData"] == "notBreaching" and alarm["EvaluationPeriods"] == 1
    body = _resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    for shown in ("${StripeWebhookFunction}", "${WebhookDeadLetterQueue.QueueName}", "5XXError"):
        assert shown in body, shown


def test_given_the_gateways_alert_marks_when_listed_then_iam_covers_their_items():
    """A tripwire: the data plane's alert marks (alert_marks.py: mark_alert_due, rearm_alert)
    are a TransactWriteItems (Update ORG#, Put ALERT#) and an UpdateItem of ORG#."""
    text = (DYNAMO / "alert_marks.py").read_text()
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', text)) == {"TransactWriteItems", "UpdateItem"}
    marks = text[text.index("async def mark_alert_due") : text.index("async def rearm_alert")]
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', marks)) == {"TransactWriteItems"}
    assert 'f"ALERT#{kind}"' in text and "org_key(org_id)" in marks
    assert ("AccountsTable", "dynamodb:PutItem", ("ALERT#*",)) in DATA_PLANE_GRANTS
    assert "ORG" in _granted(DATA_PLANE_GRANTS, "dynamodb:UpdateItem")
    # The gateway's store is the hot path, the cache and these marks, nothing else.
    gateway_store = (DYNAMO / "gateway_store.py").read_text()
    assert "class GatewayStore(HotPath, CacheTable, AlertMarks):" in gateway_store


def test_given_the_webhook_code_when_its_adapters_are_listed_then_only_the_ledgers_store():
    """A tripwire: the webhook (functions/stripe_webhook/, dynoyard/billing/) reaches
    DynamoDB only through billing_store.py, whose calls are pinned above; another store
    (alerts, admin, ...) needs its grants in template.yaml and WEBHOOK_GRANTS first."""
    layer = ROOT / "layers" / "dynoyard" / "dynoyard"
    sources = [
        ROOT / "functions" / "stripe_webhook" / "app.py",
        layer / "domain" / "billing.py",
        *sorted((layer / "billing").glob("*.py")),
    ]
    imported = {
        module
        for path in sources
        for module in re.findall(
            r"^\s*from (dynoyard\.adapters\.dynamo[\w.]*) import", path.read_text(), re.M
        )
    }
    assert imported == {
        "dynoyard.adapters.dynamo.billing_store",
        "dynoyard.adapters.dynamo.client",
    }, imported


# -- the cleanup, log groups, alarms and the dashboard (operations, issue 10) ------------

LAYER = ROOT / "layers" / "dynoyard" / "dynoyard"
# Every module of the cleanup's code; CLEANUP_STORE_CALLS pins what they ask the stores.
CLEANUP_MODULES = [ROOT / "functions" / "cleanup" / "app.py", *(LAYER / "maintenance").glob("*.py")]
# The adapters the cleanup imports (its DynamoDB reach) and the store methods its steps call:
# a new one needs its grants in template.yaml and CLEANUP_GRANTS first.
CLEANUP_DYNAMO_IMPORTS = {
    "dynoyard.adapters.dynamo.store",
    "dynoyard.adapters.dynamo.client",
    "dynoyard.adapters.dynamo.console_store",
    "dynoyard.adapters.dynamo.job_store",
    "dynoyard.adapters.dynamo.alerts_store",
    "dynoyard.adapters.dynamo.retention_store",
}
CLEANUP_STORE_CALLS = {
    "checkpoints.get",
    "checkpoints.put",
    "store.org_ids",
    "store.stranded_holds",
    "store.return_hold",
    "console_store.due_welcomes",
    "console_store.get_user",
    "console_store.claim_welcome",
    "console_store.unclaim_welcome",
    "console_store.end_welcome",
    "console_store.put_unsubscribe_token",
    "store.rolled_through",
    "store.next_record_day",
    "store.day_records",
    "store.put_aggregates",
    "store.mark_rolled",
}
# The stranded holds' store methods: their DynamoDB calls (granted above).
STRANDED_HOLD_METHODS = {
    ("reconcile.py", "org_ids"): {"Scan"},
    ("ledger.py", "stranded_holds"): {"GetItem"},
}
JOB_STORE_DYNAMODB_CALLS = {"GetItem", "PutItem", "DeleteItem"}


def _cleanup_text() -> str:
    return "\n".join(path.read_text() for path in sorted(CLEANUP_MODULES))


def test_given_the_cleanup_code_when_its_adapters_are_listed_then_iam_was_written_for_them():
    """A tripwire: the cleanup reaches DynamoDB only through these stores (and the alerts'
    sender, domain/alerts.py); another store or method needs its grants first."""
    text = _cleanup_text()
    imported = set(re.findall(r"^\s*from (dynoyard\.adapters\.dynamo[\w.]*) import", text, re.M))
    assert imported == CLEANUP_DYNAMO_IMPORTS, imported
    calls = set(re.findall(r"ctx\.((?:store|console_store|checkpoints)\.\w+)\(", text))
    assert calls == CLEANUP_STORE_CALLS, calls
    job_store = (DYNAMO / "job_store.py").read_text()
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', job_store)) == JOB_STORE_DYNAMODB_CALLS
    assert '"pk": {"S": f"JOB#{step}"}' in job_store
    for call in JOB_STORE_DYNAMODB_CALLS:
        assert ("AccountsTable", f"dynamodb:{call}", ("JOB#*",)) in CLEANUP_GRANTS


def test_given_the_rollup_when_its_calls_are_listed_then_the_cleanup_may_make_them():
    """The roll-up's store (rollup_store.py) and its one ledger write (billing_store.py
    apply of a usage_daily movement: Puts and a ConditionCheck, granted above)."""
    rollup_store = (DYNAMO / "rollup_store.py").read_text()
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', rollup_store)) == {
        "GetItem",
        "UpdateItem",
        "Query",
        "PutItem",
    }
    assert rollup_store.count('f"DAILY#{org_id}"') >= 3 and '":pk": f"ORG#{org_id}"' in rollup_store
    rollup = (LAYER / "maintenance" / "rollup.py").read_text()
    assert re.findall(r"ctx\.store\.billing\.(\w+)\(", rollup) == ["apply"]
    billing = (DYNAMO / "billing_store.py").read_text()
    assert '"ConditionCheck": {' in billing and 'movement.kind == "usage_daily"' in billing
    for action, table, prefix in [
        ("Query", "UsageTable", "ORG"),
        ("GetItem", "UsageTable", "DAILY"),
        ("PutItem", "UsageTable", "DAILY"),
        ("UpdateItem", "UsageTable", "DAILY"),
        ("PutItem", "AccountsTable", "MOVEMENT"),
        ("PutItem", "AccountsTable", "ORG"),
        ("ConditionCheckItem", "AccountsTable", "ORG"),
    ]:
        granted = {
            p
            for t, a, keys in CLEANUP_GRANTS
            if t == table and a == f"dynamodb:{action}"
            for p in keys or ()
        }
        assert f"{prefix}#*" in granted, (action, table, prefix)


def test_given_the_alerts_sender_when_its_calls_are_listed_then_the_cleanup_may_make_them():
    """The alerts step's store methods (alerts_store.py; their state moves through
    alert_marks.py's UpdateItem) and their items, granted above."""
    text = (DYNAMO / "alerts_store.py").read_text()
    sender = text[text.index("async def claim_alert") : text.index("async def auto_recharge")]
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', sender)) == {
        "UpdateItem",
        "Query",
        "DeleteItem",
        "GetItem",
    }
    assert "self._update_state(" in sender and "marker_key(" in sender
    marks = (DYNAMO / "alert_marks.py").read_text()
    update = marks[marks.index("async def _update_state") :]
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', update)) == {"UpdateItem"}
    assert 'f"ALERT#{kind}"' in marks and "org_key(org_id)" in sender
    for action, prefix in [
        ("UpdateItem", "ORG"),
        ("Query", "ALERT"),
        ("DeleteItem", "ALERT"),
        ("GetItem", "ORG"),
        ("GetItem", "USER"),  # console_store.get_user
        ("Query", "ORG"),  # console_store.org_members
    ]:
        assert prefix in _granted(CLEANUP_GRANTS, f"dynamodb:{action}"), (action, prefix)


def test_given_the_cleanup_when_deployed_then_it_runs_hourly_and_daily_one_at_a_time():
    cleanup = _functions()["CleanupFunction"]
    assert (cleanup["CodeUri"], cleanup["Handler"]) == ("functions/cleanup/", "app.handler")
    assert "handler = " in (ROOT / "functions" / "cleanup" / "app.py").read_text()
    assert cleanup["ReservedConcurrentExecutions"] == 1
    assert cleanup["Timeout"] == 300
    margin = re.search(
        r"MARGIN_SECONDS = ([\d.]+)", (ROOT / "functions" / "cleanup" / "app.py").read_text()
    )
    assert margin and 0 < float(margin.group(1)) < cleanup["Timeout"] / 2
    schedules = {
        name: (
            event["Type"],
            event["Properties"]["Schedule"],
            json.loads(event["Properties"]["Input"]),
        )
        for name, event in cleanup["Events"].items()
    }
    assert schedules == {
        "Hourly": ("Schedule", "rate(1 hour)", {"run": "hourly"}),
        "Daily": ("Schedule", "cron(30 0 * * ? *)", {"run": "daily"}),
    }
    variables = _environment(cleanup)
    console = _environment(_functions()["ConsoleFunction"])
    for name in (
        "DYNOYARD_PUBLIC_URL",
        "DYNOYARD_EMAIL_BACKEND",
        "DYNOYARD_EMAIL_FROM",
        "DYNOYARD_CONSOLE_SECRET",
        "DYNOYARD_STRIPE_SECRET",
    ):
        assert variables[name] == console[name], name  # the emails as the console sends them


def test_given_every_function_when_it_logs_then_its_own_group_keeps_lines_the_parameter_days():
    resources = _resources()
    groups = {
        name: resource["Properties"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Logs::LogGroup"
    }
    used = set()
    for name, properties in _functions().items():
        group = properties["LoggingConfig"]["LogGroup"]["Ref"]
        assert group in groups, name
        used.add(group)
    assert used == set(groups)  # one group per function, none left over
    for group in groups.values():
        assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group["LogGroupName"]["Fn::Sub"].startswith("/aws/lambda/${AWS::StackName}-")
    assert load_template()["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_given_the_logger_when_configured_then_debug_lines_are_sampled():
    variables = _globals()["Environment"]["Variables"]
    assert variables["POWERTOOLS_LOGGER_SAMPLE_RATE"] == {"Ref": "LogSampleRate"}
    assert 0 < float(load_template()["Parameters"]["LogSampleRate"]["Default"]) <= 0.05


def _alarms() -> dict[str, dict[str, Any]]:
    return {
        name: resource["Properties"]
        for name, resource in _resources().items()
        if resource["Type"] == "AWS::CloudWatch::Alarm"
    }


def test_given_every_alarm_when_it_fires_then_it_pages_the_topic_the_parameter_subscribes():
    for name, alarm in _alarms().items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
    resources = _resources()
    assert resources["AlarmTopic"]["Type"] == "AWS::SNS::Topic"
    # CloudWatch can not publish to a topic under the AWS-managed SNS key.
    assert "alias/aws/sns" not in json.dumps(resources["AlarmTopic"])
    subscription = resources["AlarmEmailSubscription"]
    assert subscription["Condition"] == "HasAlarmEmail"
    assert subscription["Properties"] == {
        "TopicArn": {"Ref": "AlarmTopic"},
        "Protocol": "email",
        "Endpoint": {"Ref": "AlarmEmail"},
    }
    conditions = load_template()["Conditions"]
    assert conditions["HasAlarmEmail"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "AlarmEmail"}, ""]}]}


def _single_metric_alarms(namespace: str, metric: str) -> dict[Any, dict[str, Any]]:
    """Alarms on one metric, by their first dimension's value."""
    return {
        alarm["Dimensions"][0]["Value"].get("Ref", repr(alarm["Dimensions"][0]["Value"])): alarm
        for alarm in _alarms().values()
        if alarm.get("Namespace") == namespace and alarm.get("MetricName") == metric
    }


def test_given_every_function_when_alarmed_then_its_errors_and_throttles_page():
    functions = set(_functions())
    assert set(_single_metric_alarms("AWS/Lambda", "Errors")) == functions
    assert set(_single_metric_alarms("AWS/Lambda", "Throttles")) == functions
    for metric in ("Errors", "Throttles"):
        for alarm in _single_metric_alarms("AWS/Lambda", metric).values():
            assert (alarm["Statistic"], alarm["Threshold"]) == ("Sum", 1)
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"


def test_given_every_table_when_alarmed_then_read_and_write_throttles_page():
    tables = {n for n, r in _resources().items() if r["Type"] == "AWS::DynamoDB::Table"}
    alarmed = {}
    for alarm in _alarms().values():
        if "Metrics" not in alarm:
            continue
        stats = {m["Id"]: m["MetricStat"] for m in alarm["Metrics"] if "MetricStat" in m}
        names = {stat["Metric"]["MetricName"] for stat in stats.values()}
        assert names == {"ReadThrottleEvents", "WriteThrottleEvents"}
        (table,) = {stat["Metric"]["Dimensions"][0]["Value"]["Ref"] for stat in stats.values()}
        (total,) = [m for m in alarm["Metrics"] if "Expression" in m]
        assert total["Expression"] == "reads + writes" and set(stats) == {"reads", "writes"}
        alarmed[table] = alarm
        assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
            1,
            "GreaterThanOrEqualToThreshold",
        )
    assert set(alarmed) == tables


def test_given_the_api_when_alarmed_then_its_5xx_rate_and_p99_latency_page():
    api_name = _resources()["GatewayApi"]["Properties"]["Name"]
    rate = _alarm("Api5xxRateAlarm")
    assert (rate["Namespace"], rate["MetricName"], rate["Statistic"]) == (
        "AWS/ApiGateway",
        "5XXError",
        "Average",  # 5XXError is 0 or 1 per request: its average is the share of 5xx
    )
    assert 0 < rate["Threshold"] <= 0.1
    latency = _alarm("ApiLatencyP99Alarm")
    assert (latency["MetricName"], latency["ExtendedStatistic"]) == ("Latency", "p99")
    assert latency["Threshold"] < 29_000  # API Gateway's integration limit
    for alarm in (rate, latency):
        assert alarm["Dimensions"] == [
            {"Name": "ApiName", "Value": api_name},
            {"Name": "Stage", "Value": {"Ref": "Stage"}},
        ]


def test_given_the_cleanup_and_stranded_holds_when_alarmed_then_the_metrics_the_code_emits():
    failures = _alarm("CleanupFailuresAlarm")
    assert failures["MetricName"] == "CleanupFailures"
    assert (failures["Threshold"], failures["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    stranded = _alarm("StrandedHoldsAlarm")
    assert stranded["MetricName"] == "StrandedHoldsReturned"
    assert (stranded["Threshold"], stranded["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    settle = _alarm("SettleFailuresAlarm")
    assert settle["MetricName"] == "SettleFailures"
    text = _cleanup_text()
    for metric in ("CleanupFailures", "StrandedHoldsReturned"):
        assert f'add_metric(name="{metric}"' in text, metric
    observability = (LAYER / "observability.py").read_text()
    assert 'add_metric(name="SettleFailures"' in observability


def test_given_the_dashboard_when_read_then_it_shows_the_services_figures():
    body = _resources()["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    dashboard = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))
    text = json.dumps(dashboard)
    for figure in (
        "Requests",
        "Errors",
        "5XXError",
        "LatencyMs",
        "UpstreamLatencyMs",
        "GatewayOverheadMs",
        "CostUsd",
        "Tokens",
        "CacheHits",
        "Throttles",
        "SettleFailures",
        "StrandedHoldsReturned",
        "WebhookFailures",
        "ApproximateNumberOfMessagesVisible",
        "CleanupFailures",
        "Invocations",
        "ReadThrottleEvents",
        "WriteThrottleEvents",
    ):
        assert f'"{figure}"' in text or f"{figure}\\" in text, figure
    for function in _functions():
        assert "${" + function + "}" in body, function


def _method_calls(module: str, method: str) -> set[str]:
    text = (DYNAMO / module).read_text()
    start = text.index(f"async def {method}(")
    end = text.find("\n    async def ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    return set(re.findall(r'_db\.call\(\s*"(\w+)"', body))


def test_given_the_stranded_holds_step_when_its_store_calls_are_listed_then_iam_covers_them():
    for (module, method), calls in STRANDED_HOLD_METHODS.items():
        assert _method_calls(module, method) == calls, method
    ledger = (DYNAMO / "ledger.py").read_text()
    returning = ledger[ledger.index("async def return_hold(") :]
    assert "org_key(hold.org_id)" in returning.split("return returned")[0]
    assert ("AccountsTable", "dynamodb:Scan", None) in CLEANUP_GRANTS
    assert "ORG" in _granted(CLEANUP_GRANTS, "dynamodb:GetItem")
    assert "ORG" in _granted(CLEANUP_GRANTS, "dynamodb:UpdateItem")


def test_given_the_retention_and_welcome_steps_when_their_calls_are_listed_then_iam_covers_them():
    """retention_store.py's calls and the accounts prefixes it deletes; the welcome
    sequence's console_store methods and their items, granted above."""
    from dynoyard.adapters.dynamo.retention_store import EXPIRING_PREFIXES

    text = (DYNAMO / "retention_store.py").read_text()
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', text)) == {
        "Scan",
        "DeleteItem",
        "Query",
        "GetItem",
        "BatchWriteItem",
    }
    deletes = {p + "*" for p in EXPIRING_PREFIXES}
    assert any(
        r == "AccountsTable" and a == "dynamodb:DeleteItem" and k and set(k) == deletes
        for r, a, k in CLEANUP_GRANTS
    )
    assert "JOB" not in {p.removesuffix("#") for p in EXPIRING_PREFIXES}  # checkpoints stay
    assert "KEY" not in {p.removesuffix("#") for p in EXPIRING_PREFIXES}  # keys never go
    store = (DYNAMO / "console_store.py").read_text()
    welcome = store[
        store.index("async def schedule_welcome") : store.index("async def unsubscribe_user")
    ]
    assert set(re.findall(r'_db\.call\(\s*"(\w+)"', welcome)) == {
        "PutItem",
        "DeleteItem",
        "UpdateItem",
    }
    for action, prefix in [
        ("Query", "WELCOME"),  # due_welcomes, through _query
        ("DeleteItem", "WELCOME"),
        ("UpdateItem", "USER"),
        ("PutItem", "UNSUB"),
        ("PutItem", "USER"),
    ]:
        assert prefix in _granted(CLEANUP_GRANTS, f"dynamodb:{action}"), (action, prefix)


def test_given_samconfig_when_its_overrides_are_read_then_each_is_a_parameter_and_allowed():
    import tomllib

    config = tomllib.loads((ROOT / "samconfig.toml").read_text())
    parameters = load_template()["Parameters"]
    for environment in ("default", "dev", "prod"):
        overrides = config[environment]["deploy"]["parameters"]["parameter_overrides"]
        for pair in overrides.split():
            name, _, value = pair.partition("=")
            assert name in parameters, (environment, name)
            allowed = parameters[name].get("AllowedValues")
            assert allowed is None or value in map(str, allowed), (environment, pair)
