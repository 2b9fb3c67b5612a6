"""The email senders (adapters/email.py) against real parts: files in a real directory, read
back with the stdlib's parser; Resend played by a real HTTP server on 127.0.0.1; SES by moto
(no local SES server exists); and the factory choosing each from the environment."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from dynoyard.adapters.email import (
    DEFAULT_FROM,
    OutboxSender,
    ResendSender,
    SesSender,
    email_sender,
)
from dynoyard.adapters.email_settings import EmailSettings
from dynoyard.domain.email import Email, EmailFailed
from dynoyard.domain.messages import sign_in_link
from tests.conftest import ThreadedServer, free_port

RESEND_KEY = "re_TEST_SECRET_4f1c9e0b7a"
LINK = "http://127.0.0.1:8080/api/auth/email-link/callback?token=" + "t0k3n" * 20
CHINESE = Email(
    to="李雷 <li.lei@example.com>",
    subject="你的 Dynoyard 登录链接：请在 15 分钟内使用",  # noqa: RUF001 (Chinese punctuation)
    text=f"你好，李雷。\n\n{LINK}\n",  # noqa: RUF001
    html=f'<p>你好，李雷。</p><p><a href="{LINK}">登录</a></p>',  # noqa: RUF001
)
PLAIN = Email(to="ada@example.com", subject="Hello", text="Just text.\n")
FILE_NAME = re.compile(r"\d{8}T\d{6}\.\d{6}Z-[0-9a-f]{32}\.eml")


def _read(path: Path) -> EmailMessage:
    parsed = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(parsed, EmailMessage)
    return parsed


def _content(part: EmailMessage | None) -> str:
    """A part's text as written: the file has SMTP's CRLF line endings, the message LF."""
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# -- outbox ------------------------------------------------------------------------------


def test_given_an_outbox_when_a_chinese_message_is_sent_then_one_eml_file_parses_back(
    tmp_path: Path,
):
    outbox = tmp_path / "not" / "yet" / "there"
    sender = OutboxSender(outbox, "Dynoyard <no-reply@dynoyard.example>")
    before = datetime.now(UTC)

    asyncio.run(sender.send(CHINESE))

    [path] = _files_under(tmp_path)
    assert path.parent == outbox and FILE_NAME.fullmatch(path.name)
    raw = path.read_bytes()
    assert b"\r\n" in raw  # SMTP line endings
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii()  # the Chinese subject and name are RFC 2047-encoded
    mail = _read(path)
    assert mail["Subject"] == CHINESE.subject
    assert mail["To"] == CHINESE.to
    assert mail["To"].addresses[0].addr_spec == "li.lei@example.com"
    assert mail["From"] == "Dynoyard <no-reply@dynoyard.example>"
    assert before - timedelta(seconds=2) <= mail["Date"].datetime <= datetime.now(UTC)
    assert re.fullmatch(r"<[^<>@\s]+@dynoyard\.example>", mail["Message-ID"])
    assert mail.get_content_type() == "multipart/alternative"
    assert _content(mail.get_body(("plain",))) == CHINESE.text
    assert _content(mail.get_body(("html",))).rstrip("\n") == CHINESE.html
    assert LINK.encode() in raw  # the link stays on one line: copyable from the file


def test_given_a_message_without_html_when_written_then_it_is_a_single_text_part(
    tmp_path: Path,
):
    asyncio.run(OutboxSender(tmp_path).send(PLAIN))

    [path] = _files_under(tmp_path)
    mail = _read(path)
    assert mail.get_content_type() == "text/plain"
    assert _content(mail) == PLAIN.text
    assert mail["From"] == DEFAULT_FROM


def test_given_a_real_sign_in_message_when_sent_to_the_outbox_then_its_link_reads_back(
    tmp_path: Path,
):
    message = sign_in_link("ada@example.com", LINK, "zh-CN", 15, new_account=True)

    asyncio.run(OutboxSender(tmp_path).send(message))

    [path] = _files_under(tmp_path)
    mail = _read(path)
    assert mail["Subject"] == message.subject
    assert LINK in _content(mail.get_body(("plain",))).splitlines()


def test_given_many_messages_at_once_when_sent_then_each_has_its_own_file(tmp_path: Path):
    sender = OutboxSender(tmp_path)
    messages = [Email(to=f"u{i}@example.com", subject=f"n{i}", text=f"{i}\n") for i in range(40)]

    async def send_all() -> None:
        await asyncio.gather(*(sender.send(m) for m in messages))

    asyncio.run(send_all())

    files = _files_under(tmp_path)
    assert len(files) == 40 and len({f.name for f in files}) == 40
    assert all(FILE_NAME.fullmatch(f.name) for f in files)  # no temporary file left behind
    assert sorted(_read(f)["Subject"] for f in files) == sorted(m.subject for m in messages)


def test_given_an_outbox_file_when_written_then_only_its_owner_may_read_it(tmp_path: Path):
    asyncio.run(OutboxSender(tmp_path / "box").send(PLAIN))

    [path] = _files_under(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it may hold a sign-in link
    assert stat.S_IMODE((tmp_path / "box").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "address",
    [
        "../../../escaped@example.com",
        "/tmp/absolute@example.com",
        "..\\..\\windows@example.com",
        "a/b/../../c@example.com",
        "x@../../../etc",
        '"../../quoted name"@example.com',
        "Name <../../in-angle@example.com>",
    ],
)
def test_given_an_address_shaped_like_a_path_when_written_then_the_file_stays_in_the_outbox(
    tmp_path: Path, address: str
):
    outbox = tmp_path / "outbox"

    asyncio.run(OutboxSender(outbox).send(Email(to=address, subject="s", text="t\n")))

    files = _files_under(tmp_path)
    assert len(files) == 1 and files[0].parent == outbox
    assert FILE_NAME.fullmatch(files[0].name)


@pytest.mark.parametrize(
    "address",
    [
        "victim@example.com\r\nBcc: other@example.com",
        "victim@example.com\nBcc: other@example.com",
        "one@example.com, two@example.com",
        "not an address",
        "",
        "a" * 400 + "@example.com",
    ],
)
def test_given_a_recipient_that_is_not_one_address_when_sent_then_nothing_is_written(
    tmp_path: Path, address: str
):
    with pytest.raises(EmailFailed):
        asyncio.run(OutboxSender(tmp_path).send(Email(to=address, subject="s", text="t\n")))

    assert _files_under(tmp_path) == []


def test_given_a_subject_with_a_line_break_when_sent_then_it_is_refused(tmp_path: Path):
    message = Email(to="a@example.com", subject="Hi\r\nBcc: b@example.com", text="t\n")

    with pytest.raises(EmailFailed):
        asyncio.run(OutboxSender(tmp_path).send(message))

    assert _files_under(tmp_path) == []


def test_given_an_outbox_path_that_is_a_file_when_sent_then_email_failed(tmp_path: Path):
    blocker = tmp_path / "outbox"
    blocker.write_text("not a directory")

    with pytest.raises(EmailFailed, match="outbox"):
        asyncio.run(OutboxSender(blocker).send(PLAIN))


# -- Resend ------------------------------------------------------------------------------


@dataclass
class FakeResend:
    """Resend's POST /emails as its documentation describes it: the API key as a bearer
    token, a JSON body with from, to (a list), subject and text/html; errors as
    {"statusCode", "message", "name"}. `answer` switches it to failing on purpose."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    answer: str = "ok"  # ok | 422 | 500 | slow

    def __post_init__(self) -> None:
        self.app = Starlette(routes=[Route("/emails", self.emails, methods=["POST"])])

    async def emails(self, request: Request) -> Response:
        raw = await request.body()
        auth = request.headers.get("authorization")
        self.calls.append(
            {"auth": auth, "raw": raw, "client_port": request.client and request.client.port}
        )
        if auth != f"Bearer {RESEND_KEY}":
            return JSONResponse(
                {"statusCode": 401, "message": "API key is invalid", "name": "validation_error"},
                status_code=401,
            )
        body = json.loads(raw)
        self.calls[-1]["json"] = body
        if self.answer == "slow":
            await asyncio.sleep(1.5)
        if self.answer == "500":
            return PlainTextResponse(f"<html>upstream crashed on {raw!r}</html>", 500)
        well_formed = (
            isinstance(body.get("from"), str)
            and isinstance(body.get("to"), list)
            and all(isinstance(t, str) for t in body["to"])
            and isinstance(body.get("subject"), str)
            and ("text" in body or "html" in body)
        )
        if self.answer == "422" or not well_formed:
            # Resend quotes the request in its message: none of it may reach our errors.
            return JSONResponse(
                {
                    "statusCode": 422,
                    "message": f"Invalid `to` field: {body.get('to')} / {body.get('text')}",
                    "name": "validation_error",
                },
                status_code=422,
            )
        return JSONResponse({"id": f"email-{len(self.calls)}"})


@pytest.fixture(scope="module")
def resend_server() -> Iterator[tuple[FakeResend, str]]:
    fake = FakeResend()
    with ThreadedServer(fake.app) as server:
        yield fake, f"http://127.0.0.1:{server.port}"


@pytest.fixture
def resend(resend_server: tuple[FakeResend, str]) -> tuple[FakeResend, str]:
    fake, url = resend_server
    fake.calls.clear()
    fake.answer = "ok"
    return fake, url


def test_given_resend_when_a_message_is_sent_then_it_posts_the_key_and_the_fields(
    resend: tuple[FakeResend, str],
):
    fake, url = resend
    sender = ResendSender(RESEND_KEY, "Dynoyard <no-reply@dynoyard.example>", url)

    asyncio.run(sender.send(CHINESE))

    [call] = fake.calls
    assert call["auth"] == f"Bearer {RESEND_KEY}"
    assert call["json"] == {
        "from": "Dynoyard <no-reply@dynoyard.example>",
        "to": [CHINESE.to],
        "subject": CHINESE.subject,
        "text": CHINESE.text,
        "html": CHINESE.html,
    }


def test_given_a_message_without_html_when_sent_to_resend_then_no_html_field_is_sent(
    resend: tuple[FakeResend, str],
):
    fake, url = resend

    asyncio.run(ResendSender(RESEND_KEY, DEFAULT_FROM, url + "/").send(PLAIN))

    [call] = fake.calls
    assert "html" not in call["json"] and call["json"]["text"] == PLAIN.text


def test_given_one_resend_sender_when_it_sends_twice_then_one_connection_carries_both(
    resend: tuple[FakeResend, str],
):
    fake, url = resend
    sender = ResendSender(RESEND_KEY, DEFAULT_FROM, url)

    async def twice() -> None:
        await sender.send(PLAIN)
        await sender.send(PLAIN)
        await sender.aclose()

    asyncio.run(twice())

    assert len(fake.calls) == 2
    assert fake.calls[0]["client_port"] == fake.calls[1]["client_port"]


@pytest.mark.parametrize(
    ("answer", "key", "expected"),
    [
        ("422", RESEND_KEY, "HTTP 422 validation_error"),
        ("500", RESEND_KEY, "HTTP 500"),
        ("ok", "re_WRONG_SECRET_d00d", "HTTP 401 validation_error"),
    ],
)
def test_given_resend_refuses_when_sent_then_email_failed_says_the_status_and_nothing_else(
    resend: tuple[FakeResend, str], answer: str, key: str, expected: str
):
    fake, url = resend
    fake.answer = answer
    sender = ResendSender(key, DEFAULT_FROM, url)

    with pytest.raises(EmailFailed) as failed:
        asyncio.run(sender.send(CHINESE))

    said = str(failed.value)
    assert said == f"Resend refused the message: {expected}"
    for secret in (key, LINK, "t0k3n", CHINESE.subject, "li.lei", "crashed"):
        assert secret not in said
    assert key not in repr(sender)
    assert len(fake.calls) == 1  # refused, not retried into a duplicate


def test_given_resend_too_slow_when_sent_then_the_timeout_fails_it(
    resend: tuple[FakeResend, str],
):
    fake, url = resend
    fake.answer = "slow"
    sender = ResendSender(RESEND_KEY, DEFAULT_FROM, url, timeout=httpx.Timeout(0.3))
    started = time.monotonic()

    with pytest.raises(EmailFailed, match="in time"):
        asyncio.run(sender.send(PLAIN))

    assert time.monotonic() - started < 1.2


def test_given_resend_unreachable_when_sent_then_email_failed_without_the_key():
    sender = ResendSender(RESEND_KEY, DEFAULT_FROM, f"http://127.0.0.1:{free_port()}")

    with pytest.raises(EmailFailed, match="unreachable") as failed:
        asyncio.run(sender.send(PLAIN))

    assert RESEND_KEY not in str(failed.value)


def test_given_a_hostile_recipient_when_sent_to_resend_then_nothing_is_posted(
    resend: tuple[FakeResend, str],
):
    fake, url = resend
    message = Email(to="a@example.com, b@example.com", subject="s", text="t\n")

    with pytest.raises(EmailFailed):
        asyncio.run(ResendSender(RESEND_KEY, DEFAULT_FROM, url).send(message))

    assert fake.calls == []


# -- SES (moto) --------------------------------------------------------------------------

SES_REGION = "eu-west-1"
SES_FROM = "Dynoyard <no-reply@dynoyard.example>"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Nothing from the machine may point boto3 at a real account or endpoint.
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_SESV2", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


def _ses_sent() -> list[Any]:
    return list(ses_backends[DEFAULT_ACCOUNT_ID][SES_REGION].sent_messages)


def test_given_a_verified_sender_when_sent_through_ses_then_moto_has_the_message(aws: None):
    boto3.client("sesv2", region_name=SES_REGION).create_email_identity(
        EmailIdentity="no-reply@dynoyard.example"
    )
    sender = SesSender(SES_FROM, SES_REGION)

    asyncio.run(sender.send(CHINESE))

    [sent] = _ses_sent()
    assert sent.source == SES_FROM
    assert sent.destinations == {"ToAddresses": [CHINESE.to]}
    assert sent.subject == CHINESE.subject  # UTF-8 end to end
    assert sent.body == CHINESE.html  # moto keeps the HTML part when there is one


def test_given_one_ses_sender_when_it_sends_twice_then_its_client_is_made_once(aws: None):
    boto3.client("sesv2", region_name=SES_REGION).create_email_identity(
        EmailIdentity="dynoyard.example"  # a verified domain covers its addresses
    )
    sender = SesSender(SES_FROM, SES_REGION)
    assert sender._client is None  # nothing made (nor boto3 asked) before the first message

    asyncio.run(sender.send(PLAIN))
    first = sender._client
    asyncio.run(sender.send(PLAIN))

    assert first is not None and sender._client is first
    assert [m.body for m in _ses_sent()] == [PLAIN.text, PLAIN.text]


def test_given_an_unverified_sender_when_sent_through_ses_then_email_failed_names_the_code(
    aws: None,
):
    sender = SesSender(SES_FROM, SES_REGION)

    with pytest.raises(EmailFailed) as failed:
        asyncio.run(sender.send(CHINESE))

    assert str(failed.value) == "SES refused the message: MessageRejected"
    assert _ses_sent() == []


def test_given_a_hostile_recipient_when_sent_through_ses_then_nothing_is_sent(aws: None):
    boto3.client("sesv2", region_name=SES_REGION).create_email_identity(
        EmailIdentity="dynoyard.example"
    )
    message = Email(to="a@example.com\r\nBcc: b@example.com", subject="s", text="t\n")

    with pytest.raises(EmailFailed):
        asyncio.run(SesSender(SES_FROM, SES_REGION).send(message))

    assert _ses_sent() == []


# -- which sender ------------------------------------------------------------------------

EMAIL_VARIABLES = (
    "DYNOYARD_OUTBOX_DIR",
    "RESEND_API_KEY",
    "RESEND_API_BASE",
    "DYNOYARD_EMAIL_FROM",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in EMAIL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_given_no_email_configuration_when_the_sender_is_chosen_then_it_is_the_local_outbox(
    env: pytest.MonkeyPatch,
):
    sender = EmailSettings().sender()

    assert isinstance(sender, OutboxSender)
    assert sender.directory == Path(".local/outbox") and sender.sender == DEFAULT_FROM


def test_given_an_outbox_dir_when_a_message_is_sent_then_it_lands_there(
    env: pytest.MonkeyPatch, tmp_path: Path
):
    env.setenv("DYNOYARD_OUTBOX_DIR", str(tmp_path / "mail"))
    env.setenv("DYNOYARD_EMAIL_FROM", "Team <team@dynoyard.example>")

    asyncio.run(EmailSettings().sender().send(PLAIN))

    [path] = _files_under(tmp_path)
    assert path.parent == tmp_path / "mail"
    assert _read(path)["From"] == "Team <team@dynoyard.example>"


def test_given_a_resend_key_when_the_sender_is_chosen_then_resend_wins_even_on_aws(
    env: pytest.MonkeyPatch, resend: tuple[FakeResend, str]
):
    fake, url = resend
    env.setenv("RESEND_API_KEY", RESEND_KEY)
    env.setenv("RESEND_API_BASE", url)
    env.setenv("DYNOYARD_EMAIL_FROM", SES_FROM)
    env.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")
    settings = EmailSettings()

    sender = settings.sender()
    asyncio.run(sender.send(PLAIN))

    assert isinstance(sender, ResendSender)
    assert RESEND_KEY not in repr(settings)
    [call] = fake.calls
    assert call["auth"] == f"Bearer {RESEND_KEY}" and call["json"]["from"] == SES_FROM


def test_given_lambda_and_a_sender_address_when_the_sender_is_chosen_then_it_is_ses(
    env: pytest.MonkeyPatch, aws: None
):
    env.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")
    env.setenv("AWS_REGION", SES_REGION)
    env.setenv("DYNOYARD_EMAIL_FROM", SES_FROM)
    env.setenv("RESEND_API_KEY", "")  # empty counts as unset
    boto3.client("sesv2", region_name=SES_REGION).create_email_identity(
        EmailIdentity="no-reply@dynoyard.example"
    )

    sender = EmailSettings().sender()
    asyncio.run(sender.send(PLAIN))

    assert isinstance(sender, SesSender) and sender.region == SES_REGION
    assert [m.subject for m in _ses_sent()] == [PLAIN.subject]


def test_given_lambda_without_a_sender_address_when_chosen_then_no_ses_from_a_placeholder(
    env: pytest.MonkeyPatch,
):
    env.setenv("AWS_LAMBDA_FUNCTION_NAME", "dynoyard-console")

    assert isinstance(EmailSettings().sender(), OutboxSender)


def test_given_a_sender_address_off_aws_when_chosen_then_it_is_the_outbox(
    env: pytest.MonkeyPatch,
):
    env.setenv("DYNOYARD_EMAIL_FROM", SES_FROM)

    assert isinstance(EmailSettings().sender(), OutboxSender)


def test_given_the_factory_called_with_values_when_chosen_then_it_follows_the_same_order(
    tmp_path: Path,
):
    assert isinstance(email_sender(outbox_dir=tmp_path), OutboxSender)
    assert isinstance(email_sender(outbox_dir=tmp_path, resend_api_key="re_x"), ResendSender)
    assert isinstance(
        email_sender(outbox_dir=tmp_path, on_aws=True, email_from=SES_FROM), SesSender
    )
    assert isinstance(email_sender(outbox_dir=tmp_path, on_aws=True), OutboxSender)
    assert os.listdir(tmp_path) == []  # choosing writes nothing


# -- List-Unsubscribe headers (non-essential email: the welcome sequence) -----------------

UNSUBSCRIBE = (
    ("List-Unsubscribe", "<http://127.0.0.1:8080/api/email/unsubscribe?token=abc>"),
    ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
)
WITH_HEADERS = Email(to="ada@example.com", subject="Hi", text="Text.\n", headers=UNSUBSCRIBE)


def test_given_headers_when_sent_to_the_outbox_then_the_eml_carries_them(tmp_path: Path):
    path = OutboxSender(tmp_path).write(WITH_HEADERS)

    message = _read(path)
    assert [(name, str(message[name])) for name, _ in UNSUBSCRIBE] == list(UNSUBSCRIBE)


def test_given_headers_when_sent_to_resend_then_they_are_posted(resend: tuple[FakeResend, str]):
    fake, url = resend

    asyncio.run(ResendSender(RESEND_KEY, DEFAULT_FROM, url).send(WITH_HEADERS))

    [call] = fake.calls
    assert call["json"]["headers"] == dict(UNSUBSCRIBE)


def test_given_headers_when_sent_through_ses_then_the_call_carries_them(aws: None):
    boto3.client("sesv2", region_name=SES_REGION).create_email_identity(
        EmailIdentity="no-reply@dynoyard.example"
    )
    sender = SesSender(SES_FROM, SES_REGION)
    seen: list[dict[str, Any]] = []
    sender._ses().meta.events.register(
        "provide-client-params.sesv2.SendEmail", lambda params, **_: seen.append(params)
    )

    asyncio.run(sender.send(WITH_HEADERS))

    [params] = seen
    assert params["Content"]["Simple"]["Headers"] == [
        {"Name": n, "Value": v} for n, v in UNSUBSCRIBE
    ]
    assert len(_ses_sent()) == 1


@pytest.mark.parametrize(
    "header",
    [("List-Unsubscribe", "<x>\r\nBcc: eve@example.com"), ("Bad Name", "x"), ("X:", "y")],
)
def test_given_a_header_that_would_break_a_line_when_sent_then_nothing_is_written(
    tmp_path: Path, header: tuple[str, str]
):
    hostile = Email(to="ada@example.com", subject="Hi", text="Text.\n", headers=(header,))

    with pytest.raises(EmailFailed):
        asyncio.run(OutboxSender(tmp_path).send(hostile))
    assert list(tmp_path.iterdir()) == []
