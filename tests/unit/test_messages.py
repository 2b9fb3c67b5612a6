"""The console's emails (domain/messages.py): both languages, the link exactly, user-given
names escaped in the HTML and kept to one line, and the sign-up's 18+ condition."""

from __future__ import annotations

from collections.abc import Callable
from html.parser import HTMLParser

import pytest

from dynoyard.domain.email import Email, Language
from dynoyard.domain.messages import (
    NAME_LIMIT,
    invitation,
    language_of,
    low_balance,
    recharge_failed,
    sign_in_link,
    welcome,
    welcome_day_1,
    welcome_day_3,
)

TO = "ada@example.com"
# A real-looking link with a query string: `&` must stay `&` in the text and be `&amp;` in
# the HTML source, and arrive unchanged as the href.
LINK = "http://127.0.0.1:8080/api/auth/email-link/callback?token=tok_A-b_9&next=%2Fconsole"
HOSTILE = '"><script>alert("x")</script><img src=x onerror=alert(1)>'
ALLOWED_TAGS = {"html", "head", "meta", "title", "body", "p", "a", "br"}


class Page(HTMLParser):
    """What an HTML part holds: its tags, attributes, links and visible text."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []
        self.hrefs: list[str] = []
        self.lang: str | None = None
        self.chunks: list[str] = []
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)
        values = dict(attrs)
        if tag == "a":
            self.hrefs.append(values["href"] or "")
        if tag == "html":
            self.lang = values.get("lang")

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return "".join(self.chunks)


Builder = Callable[[Language], Email]

BUILDERS: dict[str, Builder] = {
    "sign-up": lambda lang: sign_in_link(TO, LINK, lang, 15, new_account=True),
    "sign-in": lambda lang: sign_in_link(TO, LINK, lang, 15, new_account=False),
    "invitation": lambda lang: invitation(TO, "Acme Labs", "Grace Hopper", LINK, lang, 7),
    "low-balance": lambda lang: low_balance(TO, "Acme Labs", "1.250000", "5", LINK, lang),
    "recharge-declined": lambda lang: recharge_failed(
        TO, "Acme Labs", "declined", "20", "100", LINK, lang
    ),
    "recharge-cap": lambda lang: recharge_failed(TO, "Acme Labs", "cap", "20", "100", LINK, lang),
    "welcome-day-0": lambda lang: welcome(TO, "Ada", lang, LINK),
    "welcome-day-1": lambda lang: welcome_day_1(TO, "Ada", lang, LINK),
    "welcome-day-3": lambda lang: welcome_day_3(TO, "Ada", lang, LINK),
}
LANGUAGES: list[Language] = ["en", "zh-CN"]


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [*BUILDERS, "welcome"])
def test_given_each_message_when_built_then_it_is_written_in_the_asked_language(
    kind: str, language: Language
):
    email = welcome(TO, "Ada", language) if kind == "welcome" else BUILDERS[kind](language)

    assert email.to == TO
    assert email.html is not None
    page = Page(email.html)
    assert page.lang == language
    for part in (email.subject, email.text, page.text):
        assert _has_chinese(part) is (language == "zh-CN")
    assert "\n" not in email.subject


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", BUILDERS)
def test_given_a_message_with_a_link_when_built_then_the_link_is_there_exactly(
    kind: str, language: Language
):
    email = BUILDERS[kind](language)

    assert LINK in email.text.splitlines()  # on a line of its own, whole
    assert email.html is not None
    page = Page(email.html)
    assert page.hrefs and all(href == LINK for href in page.hrefs)
    assert "&amp;next=" in email.html and "&next=" not in email.html


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", [*BUILDERS, "welcome"])
def test_given_any_message_when_its_html_is_read_then_it_loads_nothing_from_anywhere(
    kind: str, language: Language
):
    email = welcome(TO, "Ada", language) if kind == "welcome" else BUILDERS[kind](language)

    assert email.html is not None
    page = Page(email.html)
    assert set(page.tags) <= ALLOWED_TAGS  # no img, script, link, style sheet, iframe
    assert not {name for name, _ in page.attrs} & {"src", "srcset", "background"}
    assert "url(" not in email.html


@pytest.mark.parametrize("language", LANGUAGES)
def test_given_hostile_names_when_an_invitation_is_built_then_the_html_escapes_them(
    language: Language,
):
    email = invitation(TO, HOSTILE, HOSTILE, LINK, language, 7)

    assert email.html is not None
    page = Page(email.html)
    assert set(page.tags) <= ALLOWED_TAGS
    assert "script" not in page.tags and "img" not in page.tags
    assert all(href == LINK for href in page.hrefs)  # no attribute broken out of
    assert HOSTILE in page.text  # shown as the text it is, not run
    assert "&lt;script&gt;" in email.html and "&quot;" in email.html
    assert HOSTILE in email.text  # text/plain runs nothing: kept verbatim


@pytest.mark.parametrize("language", LANGUAGES)
def test_given_hostile_names_in_welcome_and_low_balance_when_built_then_the_html_escapes_them(
    language: Language,
):
    for email in (
        welcome(TO, HOSTILE, language),
        low_balance(TO, HOSTILE, "0.5", "5", LINK, language),
    ):
        assert email.html is not None
        page = Page(email.html)
        assert set(page.tags) <= ALLOWED_TAGS
        assert HOSTILE in page.text


@pytest.mark.parametrize("language", LANGUAGES)
def test_given_names_with_line_breaks_and_bidi_overrides_when_built_then_each_is_one_plain_line(
    language: Language,
):
    org = "Acme\r\nBcc: victim@example.com\n\nVisit https://evil.example\u202e"
    email = invitation(TO, org, "Eve\u2028Mallory", LINK, language, 7)

    assert "\r" not in email.subject and "\n" not in email.subject
    assert "\u202e" not in email.text and "\u2028" not in email.text
    assert "Acme Bcc: victim@example.com Visit https://evil.example" in email.text
    assert "Eve Mallory" in email.subject


def test_given_a_very_long_name_when_it_enters_a_subject_then_it_is_cut():
    email = invitation(TO, "A" * 500, "B" * 500, LINK, "en", 7)

    assert "A" * NAME_LIMIT not in email.subject
    assert "A" * (NAME_LIMIT - 1) + "…" in email.subject
    assert len(email.subject) < 3 * NAME_LIMIT


def test_given_a_sign_up_when_built_then_it_says_it_verifies_the_address_and_18_or_older():
    en = sign_in_link(TO, LINK, "en", 15, new_account=True)
    zh = sign_in_link(TO, LINK, "zh-CN", 15, new_account=True)

    assert "18 or older" in en.text and "terms" in en.text
    assert "confirm that this email address is yours" in en.text
    assert "年满 18 周岁" in zh.text and "服务条款" in zh.text
    assert "确认这个邮箱地址属于你" in zh.text
    for email in (en, zh):
        assert email.html is not None
        assert "18" in Page(email.html).text


def test_given_a_sign_in_when_built_then_it_is_no_sign_up_and_says_how_long_it_works():
    en = sign_in_link(TO, LINK, "en", 15, new_account=False)
    zh = sign_in_link(TO, LINK, "zh-CN", 1, new_account=False)

    assert "sign-in" in en.subject and "18 or older" not in en.text
    assert "expires in 15 minutes" in en.text
    assert "1 分钟内有效" in zh.text
    assert sign_in_link(TO, LINK, "en", 1, new_account=False).text.count("1 minute.") == 1


def test_given_an_invitation_when_built_then_it_names_the_inviter_the_org_and_the_expiry():
    en = invitation(TO, "Acme Labs", "Grace", LINK, "en", 7)
    zh = invitation(TO, "Acme Labs", "Grace", LINK, "zh-CN", 1)

    assert "Grace" in en.subject and "Acme Labs" in en.subject
    assert "expires in 7 days" in en.text
    assert "Grace" in zh.subject and "Acme Labs" in zh.subject and "1 天内有效" in zh.text


def test_given_an_inviter_without_a_name_when_invited_then_the_message_still_reads():
    assert invitation(TO, "Acme", "  ", LINK, "en", 7).subject.startswith("A Dynoyard user ")
    assert invitation(TO, "Acme", "", LINK, "zh-CN", 7).subject.startswith("一位 Dynoyard 用户")


def test_given_welcome_with_and_without_a_name_when_built_then_the_greeting_fits():
    assert welcome(TO, "Ada", "en").text.startswith("Hello Ada,")
    assert welcome(TO, "", "en").text.startswith("Hello,")
    assert welcome(TO, "Ada", "zh-CN").text.startswith("Ada，你好")  # noqa: RUF001 (Chinese comma)


@pytest.mark.parametrize(
    ("balance", "threshold", "shown_balance", "shown_threshold"),
    [
        ("1.250000", "5", "$1.250000", "$5"),
        ("0.000001", "10.00", "$0.000001", "$10.00"),
        ("-0.50", "1", "-$0.50", "$1"),
    ],
)
@pytest.mark.parametrize("language", LANGUAGES)
def test_given_a_low_balance_when_built_then_the_amounts_are_shown_exactly_as_given(
    balance: str, threshold: str, shown_balance: str, shown_threshold: str, language: Language
):
    email = low_balance(TO, "Acme", balance, threshold, LINK, language)

    assert shown_balance in email.subject
    assert shown_balance in email.text and shown_threshold in email.text


@pytest.mark.parametrize("amount", ["abc", "", "NaN", "Infinity", "1e"])
def test_given_an_amount_that_is_no_decimal_when_a_low_balance_is_built_then_it_is_refused(
    amount: str,
):
    with pytest.raises(ValueError):
        low_balance(TO, "Acme", amount, "5", LINK, "en")


@pytest.mark.parametrize(
    "link",
    [
        "javascript:alert(1)",
        "/api/auth/email-link/callback?token=x",
        "http://127.0.0.1:8080/a\nhttps://evil.example",
        "data:text/html,hi",
    ],
)
def test_given_a_link_that_is_no_absolute_http_url_when_built_then_it_is_refused(link: str):
    with pytest.raises(ValueError):
        sign_in_link(TO, link, "en", 15, new_account=False)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "en"),
        ("", "en"),
        ("en", "en"),
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("zh_CN", "zh-CN"),
        ("ZH-cn", "zh-CN"),
        ("zh-TW", "zh-CN"),
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("zh;q=0.5, en;q=0.9", "en"),
        ("fr-FR, de;q=0.9, zh;q=0.5", "zh-CN"),
        ("fr-FR, de;q=0.9", "en"),
        ("zh;q=0, fr", "en"),
        ("*", "en"),
        ("zh;q=oops, en", "en"),
        ("chinese", "en"),
    ],
)
def test_given_a_stored_language_or_accept_language_when_read_then_the_right_language_wins(
    value: str | None, expected: Language
):
    assert language_of(value) == expected


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", ["welcome-day-0", "welcome-day-1", "welcome-day-3"])
def test_given_a_welcome_email_when_built_then_it_offers_one_click_unsubscribe(
    kind: str, language: Language
):
    email = BUILDERS[kind](language)

    assert dict(email.headers) == {
        "List-Unsubscribe": f"<{LINK}>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_given_essential_emails_when_built_then_they_carry_no_unsubscribe_header():
    for kind in ("sign-in", "invitation", "low-balance", "recharge-declined"):
        assert BUILDERS[kind]("en").headers == ()
