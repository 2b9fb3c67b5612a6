"""The welcome sequence and the unsubscribe link, over real HTTP (the console under uvicorn)
and the cleanup job against DynamoDB Local, on a fake clock: a user who signs up gets the
welcome emails of days 0, 1 and 3 in the outbox (DYNOYARD_OUTBOX_DIR), once each however
often or concurrently the job runs, in their language; a failed send is retried; the link
in the email opens a page that changes nothing (GET), opts out on POST without a session
(form, JSON or RFC 8058 one-click), answers a replay the same and a bad token 400; after
it no welcome email comes, but a sign-in link still does; PATCH /api/me toggles it."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from dynoyard.maintenance.job import StepReport
from dynoyard.maintenance.run import run_cleanup
from dynoyard.maintenance.settings import CleanupSettings
from dynoyard.maintenance.welcome import welcome_step
from tests.conftest import Tables, ddb_endpoint
from tests.e2e.test_console_auth import Console, serve_console
from tests.e2e.test_console_keys import Person, person

DAY = 86_400
SUBJECTS = {
    "en": [
        "Welcome to Dynoyard",
        "Make your first Dynoyard request",
        "Bring your team to Dynoyard",
    ],
    "zh-CN": ["欢迎使用 Dynoyard", "发出你的第一个 Dynoyard 请求", "与团队一起使用 Dynoyard"],
}


@pytest.fixture(scope="module")
def console(tables: Tables) -> Iterator[Console]:
    yield from serve_console(tables)


def run_welcome(
    tables: Tables, console: Console, outbox: Path, now: float, times: int = 1
) -> list[StepReport]:
    """`times` runs of the step at once."""
    settings = CleanupSettings(
        accounts_table=tables.accounts,
        usage_table=tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=ddb_endpoint(),
        outbox_dir=outbox,
        public_url=console.base_url,
    )

    async def runs() -> list[StepReport]:
        results = await asyncio.gather(
            *(
                run_cleanup(settings, now=now, steps=[("welcome", welcome_step)])
                for _ in range(times)
            )
        )
        return [report for result in results for report in result.reports]

    reports = asyncio.run(runs())
    assert all(r.failed is None and r.finished for r in reports), [r.show() for r in reports]
    return reports


def inbox(outbox: Path, address: str) -> list[EmailMessage]:
    """The messages to `address` in the outbox, oldest first."""
    found = []
    for path in sorted(outbox.glob("*.eml")):
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        if message["To"] == address:
            found.append(message)
    return found


def subjects(outbox: Path, address: str) -> list[str]:
    return [str(m["Subject"]) for m in inbox(outbox, address)]


def unsubscribe_url(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = header[1:-1]
    text = message.get_body(("plain",))
    assert text is not None and url in text.get_content().splitlines()  # the link in the body
    return url


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def marketing(user: Person) -> bool:
    return bool(user.console.me(user.session)["user"]["marketing_email"])


def signed_up(console: Console, language: str = "en") -> tuple[Person, str, float]:
    """A new user, their address and when they signed up."""
    at = time.time()
    session, address = console.sign_up()
    user = Person(console, session)
    if language != "en":
        changed = user.call("PATCH", "/api/me", json={"language": language})
        assert changed.status_code == 200, changed.text
    return user, address, at


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_days_0_1_and_3_each_arrive_once_in_the_users_language(
    console: Console, tables: Tables, tmp_path: Path, language: str
) -> None:
    _, address, at = signed_up(console, language)
    expected = SUBJECTS[language]

    run_welcome(tables, console, tmp_path, at + 60)
    run_welcome(tables, console, tmp_path, at + 120, times=2)  # again, and two at once
    assert subjects(tmp_path, address) == expected[:1]

    run_welcome(tables, console, tmp_path, at + DAY / 2)  # day 1 is not due yet
    assert subjects(tmp_path, address) == expected[:1]
    run_welcome(tables, console, tmp_path, at + DAY + 60, times=3)
    assert subjects(tmp_path, address) == expected[:2]
    run_welcome(tables, console, tmp_path, at + 2 * DAY + 60)
    assert subjects(tmp_path, address) == expected[:2]
    run_welcome(tables, console, tmp_path, at + 3 * DAY + 60, times=2)
    run_welcome(tables, console, tmp_path, at + 30 * DAY)  # the sequence has ended
    assert subjects(tmp_path, address) == expected

    for message in inbox(tmp_path, address):
        unsubscribe_url(message)  # every one carries the link and the headers
        html = message.get_body(("html",))
        assert html is not None and f'lang="{language}"' in html.get_content()


def test_a_failed_send_is_retried_by_the_next_run_and_sent_once(
    console: Console, tables: Tables, tmp_path: Path
) -> None:
    _, address, at = signed_up(console)
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("the outbox can not be made here")

    settings = CleanupSettings(
        accounts_table=tables.accounts,
        usage_table=tables.usage,
        cache_table=tables.names["CACHE_TABLE"],
        dynamodb_endpoint=ddb_endpoint(),
        outbox_dir=blocked,
        public_url=console.base_url,
    )
    failed = asyncio.run(run_cleanup(settings, now=at + 60, steps=[("welcome", welcome_step)]))
    assert failed.reports[0].counts["send_failed"] >= 1

    outbox = tmp_path / "outbox"
    run_welcome(tables, console, outbox, at + 120)
    run_welcome(tables, console, outbox, at + 180)
    assert subjects(outbox, address) == ["Welcome to Dynoyard"]


def test_the_unsubscribe_link_opts_out_without_a_session_and_get_changes_nothing(
    console: Console, tables: Tables, tmp_path: Path
) -> None:
    user, address, at = signed_up(console)
    run_welcome(tables, console, tmp_path, at + 60)
    (day_0,) = inbox(tmp_path, address)
    link = path_of(unsubscribe_url(day_0))

    # A mail scanner following the link: a page with a button, nothing changed.
    for _ in range(2):
        page = httpx.get(console.base_url + link)
        assert page.status_code == 200 and "<form" in page.text
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
    assert marketing(user) is True

    token = re.search(r"token=([A-Za-z0-9_-]+)", link)
    assert token
    # The page's button: a form post, no cookie, no CSRF token.
    posted = httpx.post(console.base_url + "/api/email/unsubscribe", data={"token": token.group(1)})
    assert posted.status_code == 200 and "Unsubscribed" in posted.text
    assert marketing(user) is False
    replayed = httpx.post(console.base_url + link, data={"List-Unsubscribe": "One-Click"})
    assert replayed.status_code == 200 and replayed.json() == {"unsubscribed": True}

    # No more welcome emails; the essential ones still come.
    run_welcome(tables, console, tmp_path, at + DAY + 60)
    run_welcome(tables, console, tmp_path, at + 3 * DAY + 60)
    assert subjects(tmp_path, address) == ["Welcome to Dynoyard"]
    before = len(console.mailbox.sent)
    asked = console.request("POST", "/api/auth/email-link", json={"email": address})
    assert asked.status_code == 202
    assert [m.to for m in console.mailbox.sent[before:]] == [address]


def test_one_click_and_json_posts_opt_out_and_me_can_opt_back_in(
    console: Console, tables: Tables, tmp_path: Path
) -> None:
    user, address, at = signed_up(console, "zh-CN")
    run_welcome(tables, console, tmp_path, at + 60)
    (day_0,) = inbox(tmp_path, address)
    link = path_of(unsubscribe_url(day_0))
    token = link.rpartition("token=")[2]

    one_click = httpx.post(
        console.base_url + link,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200, one_click.text
    assert marketing(user) is False

    back = user.call("PATCH", "/api/me", json={"marketing_email": True})
    assert back.status_code == 200 and back.json()["user"]["marketing_email"] is True
    run_welcome(tables, console, tmp_path, at + DAY + 60)
    assert len(inbox(tmp_path, address)) == 2  # opted back in: day 1 came

    by_json = httpx.post(console.base_url + "/api/email/unsubscribe", json={"token": token})
    assert by_json.status_code == 200 and by_json.json() == {"unsubscribed": True}
    assert marketing(user) is False
    run_welcome(tables, console, tmp_path, at + 3 * DAY + 60)
    assert len(inbox(tmp_path, address)) == 2


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"token": "x" * 43}},  # well-formed, unknown
        {"json": {"token": 12345}},
        {"json": {"token": None}},
        {"json": ["token"]},
        {"json": {}},
        {"data": {"token": "short"}},
        {"data": {"token": "a" * 43 + "<script>"}},
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        {"content": b"token=" + b"a" * 5000},
        {"content": b"&".join(b"f%d=1" % i for i in range(20))},
    ],
)
def test_bad_unsubscribe_tokens_are_400_never_500(
    console: Console, body: dict[str, object]
) -> None:
    answer = httpx.post(console.base_url + "/api/email/unsubscribe", **body)  # type: ignore[arg-type]

    assert answer.status_code == 400, answer.text
    assert set(answer.json()["error"]) >= {"message", "type", "code"}


def test_a_bad_link_opened_is_a_400_page(console: Console) -> None:
    for query in ("", "?token=", "?token=%3Cb%3E", "?token=" + "a" * 500):
        page = httpx.get(console.base_url + "/api/email/unsubscribe" + query)
        assert page.status_code == 400 and "not valid" in page.text


def test_patch_me_marketing_email_takes_a_boolean_only(console: Console) -> None:
    user = person(console)
    assert marketing(user) is True
    for wrong in ("no", 0, None, [], {"x": 1}):
        answer = user.call("PATCH", "/api/me", json={"marketing_email": wrong})
        if wrong is None:  # null: nothing to change
            assert answer.status_code == 200 and marketing(user) is True
            continue
        assert answer.status_code == 400, (wrong, answer.text)
    off = user.call("PATCH", "/api/me", json={"marketing_email": False})
    assert off.status_code == 200 and off.json()["user"]["marketing_email"] is False
    no_csrf = user.call("PATCH", "/api/me", csrf=False, json={"marketing_email": True})
    assert no_csrf.status_code == 403
    assert marketing(user) is False
