"""The low-balance alert end to end: requests through a running gateway spend an org's
credits on DynamoDB Local, `dynoyard billing alerts` sends what is due to the outbox.

One crossing is one email to each owner and admin (never a member), however many requests
race across the threshold and however many follow; a grant that lifts the balance back
above re-arms it; no threshold, no email."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from dynoyard import cli
from dynoyard.adapters.dynamo.alerts_store import OrgManagers
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.domain.alerts import Alerts
from dynoyard.domain.money import format_usd
from tests.conftest import GatewayProcess, Tables
from tests.e2e.test_console_auth import Console, Mailbox, serve_console
from tests.e2e.test_console_keys import Person, person, store_call

CHAT = {"model": "test-chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


@pytest.fixture
def outbox(
    tables: Tables, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, console: Console
) -> Path:
    """The CLI's environment: the test tables, an outbox of its own, the console's URL."""
    for name, value in tables.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DYNOYARD_OUTBOX_DIR", str(tmp_path))
    monkeypatch.setenv("DYNOYARD_PUBLIC_URL", "https://console.example.com")
    return tmp_path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["--json", *argv]) == 0, capsys.readouterr().err
    result: dict[str, Any] = json.loads(capsys.readouterr().out)
    return result


def letters(outbox: Path) -> list[email.message.EmailMessage]:
    found = []
    for path in sorted(outbox.glob("*.eml")):
        found.append(email.message_from_bytes(path.read_bytes(), policy=email.policy.default))
    return found  # type: ignore[return-value]


def text_of(letter: email.message.EmailMessage) -> str:
    part = letter.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def spend(gateway: GatewayProcess, key: str, count: int, parallel: int = 1) -> list[int]:
    def one(_: int) -> int:
        answer = httpx.post(
            gateway.base_url + "/v1/chat/completions",
            json=CHAT,
            headers={"authorization": f"Bearer {key}"},
            timeout=30,
        )
        return answer.status_code

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(one, range(count)))


class Team:
    def __init__(self, console: Console, tables: Tables) -> None:
        self.owner: Person = person(console)
        self.org_id = self.owner.org_id
        self.admin, self.member, self.owner2 = person(console), person(console), person(console)
        store_call(tables, "add_member", self.org_id, self.admin.user_id, "admin")
        store_call(tables, "add_member", self.org_id, self.member.user_id, "member")
        store_call(tables, "add_member", self.org_id, self.owner2.user_id, "owner")
        self.key = tables.store.create_key(self.org_id, "alerts", frozenset(), None).secret
        self.tables = tables

    def email_of(self, who: Person) -> str:
        return str(store_call(self.tables, "get_user", who.user_id).email)

    def managers(self) -> set[str]:
        return {self.email_of(p) for p in (self.owner, self.owner2, self.admin)}

    def balance(self) -> Decimal:
        return Decimal(self.tables.store.get_org(self.org_id).balance_usd)

    def org_item(self) -> dict[str, Any]:
        item = self.tables.client.get_item(
            TableName=self.tables.accounts,
            Key={"pk": {"S": f"ORG#{self.org_id}"}, "sk": {"S": "META"}},
            ConsistentRead=True,
        )["Item"]
        return dict(item)

    def marker(self) -> dict[str, Any] | None:
        item = self.tables.client.get_item(
            TableName=self.tables.accounts,
            Key={"pk": {"S": "ALERT#low_balance"}, "sk": {"S": f"ORG#{self.org_id}"}},
            ConsistentRead=True,
        ).get("Item")
        return dict(item) if item else None

    def set_threshold(self, value: str | None) -> None:
        path = f"/api/orgs/{self.org_id}/settings"
        answer = self.owner.call("PATCH", path, json={"low_balance_usd": value})
        assert answer.status_code == 200, answer.text


def test_one_crossing_under_concurrent_requests_is_one_email_to_each_owner_and_admin(
    console: Console,
    tables: Tables,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = Team(console, tables)
    run_cli(capsys, "credits", "grant", "--org", team.org_id, "--usd", "10")
    # Just below the balance: every one of the racing requests ends below it.
    team.set_threshold("9.999999")

    statuses = spend(gateway, team.key, 16, parallel=8)
    assert statuses == [200] * 16
    assert team.balance() < Decimal("9.999999")
    assert team.org_item()["low_balance_state"] == {"S": "due"}
    assert team.marker() is not None

    result = run_cli(capsys, "billing", "alerts")
    assert result["low_balance"]["sent"] == 1
    sent = letters(outbox)
    assert {str(m["To"]) for m in sent} == team.managers()
    assert len(sent) == 3  # two owners and an admin, once each; the member never
    assert team.email_of(team.member) not in {str(m["To"]) for m in sent}
    balance = team.balance()
    for letter in sent:
        body = text_of(letter)
        assert f"${format_usd(balance)}" in body, body
        assert "$9.999999" in body
        assert f"https://console.example.com/console/orgs/{team.org_id}/billing" in body
    assert team.org_item()["low_balance_state"] == {"S": "sent"}
    assert team.marker() is None  # the marker goes once sent

    # More requests below the threshold, and more runs: nothing more.
    assert spend(gateway, team.key, 6, parallel=3) == [200] * 6
    assert team.marker() is None
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 0
    assert len(letters(outbox)) == 3

    # A grant lifts the balance just above the threshold: re-armed; crossing again, once.
    lift = Decimal("9.999999") - team.balance() + Decimal("0.000001")
    run_cli(capsys, "credits", "grant", "--org", team.org_id, "--usd", str(lift))
    assert team.balance() >= Decimal("9.999999")
    assert team.org_item()["low_balance_state"] == {"S": "armed"}
    assert spend(gateway, team.key, 8, parallel=4) == [200] * 8
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 1
    assert len(letters(outbox)) == 6
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 0
    assert len(letters(outbox)) == 6


def test_no_threshold_never_alerts(
    console: Console,
    tables: Tables,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = Team(console, tables)
    run_cli(capsys, "credits", "grant", "--org", team.org_id, "--usd", "0.01")
    assert spend(gateway, team.key, 4, parallel=2) == [200] * 4
    assert "low_balance_state" not in team.org_item() and team.marker() is None
    run_cli(capsys, "billing", "alerts")
    assert [m for m in letters(outbox) if str(m["To"]) in team.managers()] == []


def test_a_threshold_removed_before_the_run_sends_nothing_and_re_arms(
    console: Console,
    tables: Tables,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = Team(console, tables)
    run_cli(capsys, "credits", "grant", "--org", team.org_id, "--usd", "5")
    team.set_threshold("4.999999")
    assert spend(gateway, team.key, 2) == [200] * 2
    assert team.marker() is not None
    team.set_threshold(None)
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 0
    assert letters(outbox) == [] and team.marker() is None
    assert team.org_item()["low_balance_state"] == {"S": "armed"}


def test_a_failed_email_leaves_the_alert_due_for_the_next_run(
    console: Console,
    tables: Tables,
    gateway: GatewayProcess,
    outbox: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    team = Team(console, tables)
    run_cli(capsys, "credits", "grant", "--org", team.org_id, "--usd", "5")
    team.set_threshold("4.999999")
    assert spend(gateway, team.key, 2) == [200] * 2
    blocked = outbox / "not-a-directory"
    blocked.write_text("")
    with pytest.MonkeyPatch.context() as patch:  # an outbox that can not be written
        patch.setenv("DYNOYARD_OUTBOX_DIR", str(blocked / "outbox"))
        result = run_cli(capsys, "billing", "alerts")
    assert result["low_balance"] == {"sent": 0, "recharged": 0, "failed": 0, "retry": 1}
    assert team.org_item()["low_balance_state"] == {"S": "due"} and team.marker() is not None
    assert run_cli(capsys, "billing", "alerts")["low_balance"]["sent"] == 1
    assert {str(m["To"]) for m in letters(outbox)} == team.managers()


@pytest.mark.parametrize(
    "value", [5, "-1", "NaN", "1e3", "5.1234567", "1000000.000001", True, ["5"], {"usd": "5"}]
)
def test_hostile_thresholds_change_nothing(console: Console, tables: Tables, value: Any) -> None:
    owner = person(console)
    path = f"/api/orgs/{owner.org_id}/settings"
    answer = owner.call("PATCH", path, json={"low_balance_usd": value})
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "low_balance_usd"
    item = tables.client.get_item(
        TableName=tables.accounts, Key={"pk": {"S": f"ORG#{owner.org_id}"}, "sk": {"S": "META"}}
    )["Item"]
    assert "low_balance_usd" not in item and "low_balance_state" not in item


def test_senders_running_at_once_send_each_alert_once(
    console: Console, tables: Tables, gateway: GatewayProcess, outbox: Path
) -> None:
    """Four runs of send_due_alerts at the same time (the cleanup and an operator's CLI,
    say), each on its own client: the conditional due -> sent lets one send."""
    team = Team(console, tables)
    tables.store.grant_credits(team.org_id, Decimal(5), "test")
    team.set_threshold("4.999999")
    assert spend(gateway, team.key, 2) == [200, 200]
    mailbox = Mailbox()

    async def run_once() -> int:
        client = DynamoClient(tables.env["AWS_ENDPOINT_URL_DYNAMODB"], "us-east-1")
        store = DynamoStore(client, tables.accounts, tables.usage)
        alerts = Alerts(
            store, OrgManagers(ConsoleStore(client, tables.accounts)), mailbox, "https://x.example"
        )
        try:
            return (await alerts.send_due_alerts(0)).sent
        finally:
            await store.aclose()

    async def race() -> list[int]:
        return list(await asyncio.gather(*(run_once() for _ in range(4))))

    assert sorted(asyncio.run(race())) == [0, 0, 0, 1]
    mine = [m.to for m in mailbox.sent if m.to in team.managers()]
    assert sorted(mine) == sorted(team.managers())
    assert team.marker() is None
