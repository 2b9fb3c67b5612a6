"""The public site's pages from the console app (no browser, no DynamoDB): the privacy
policy's and the terms' numbers follow the settings they describe, an operator's legal
text in DYNOYARD_LEGAL_DIR replaces the built-in body, the banner exists only with a
PostHog key, the pricing table is the catalog's, and the quick start names the real base
URL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from dynoyard.console.app import create_console_app
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.accounts import DEFAULT_CACHE_TTL_SECONDS, MAX_CACHE_TTL_SECONDS
from dynoyard.domain.audit import AUDIT_RETENTION_DAYS
from dynoyard.domain.rollup import KEEP_DAYS
from dynoyard.domain.usage import ERROR_HEAD_BYTES, RETENTION_DAYS
from dynoyard.settings import gateway_settings
from dynoyard.web import i18n, site


class Texts(HTMLParser):
    """The text inside each element that has an id (nested ones included), and the
    attributes of every element with an id."""

    VOID = frozenset({"br", "img", "input", "meta", "link", "hr", "source", "wbr"})

    def __init__(self, html: str) -> None:
        super().__init__()
        self.texts: dict[str, str] = {}
        self.attrs: dict[str, dict[str, str | None]] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs).get("id")
        if found:
            self.texts.setdefault(found, "")
            self.attrs[found] = dict(attrs)
        if tag not in self.VOID:
            self._open.append(found)

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self._open:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for found in self._open:
            if found:
                self.texts[found] += data

    def text(self, element_id: str) -> str:
        return " ".join(self.texts[element_id].split())


@pytest.fixture
def client_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., TestClient]]:
    """client_for(**settings): a TestClient of a console app built with those settings."""
    monkeypatch.setenv("DYNOYARD_DEMO_API_KEY", "demo")  # make dev's demo models offered
    clients: list[TestClient] = []

    def make(**values: Any) -> TestClient:
        values.setdefault("posthog_key", None)
        client = TestClient(create_console_app(ConsoleSettings(**values)))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def page(client: TestClient, path: str) -> Texts:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return Texts(answer.text)


@pytest.mark.parametrize("language", ["en", "zh-CN"])
def test_privacy_and_terms_numbers_follow_the_settings(
    client_for: Callable[..., TestClient], language: str
) -> None:
    t = i18n.Translator(language)
    default = client_for()
    changed = client_for(
        session_ttl_seconds=3 * 86_400,
        session_renew_seconds=600,
        link_ttl_seconds=1800,
        aws_region="eu-central-1",
    )
    before = page(default, f"/privacy?lang={language}")
    after = page(changed, f"/privacy?lang={language}")

    sessions = t("site.privacy_sessions_long", session="{s}", session_renew="{r}", link="{l}")
    assert before.text("kept-sessions").endswith(
        sessions.format(
            s=t("site.unit_day_other", n=7),
            r=t("site.unit_minute_other", n=5),
            l=t("site.unit_minute_other", n=15),
        )
    )
    assert after.text("kept-sessions").endswith(
        sessions.format(
            s=t("site.unit_day_other", n=3),
            r=t("site.unit_minute_other", n=10),
            l=t("site.unit_minute_other", n=30),
        )
    )
    assert t("site.unit_day_other", n=3) in after.text("cookies")  # the session cookie
    assert "us-east-1" in before.text("kept") and "eu-central-1" in after.text("kept")

    # The rules' own constants, the same on both.
    for shown in (before, after):
        usage_days = t("site.unit_day_other", n=RETENTION_DAYS)
        assert usage_days in shown.text("kept-usage")
        assert t("site.unit_day_other", n=KEEP_DAYS) in shown.text("kept-daily")
        assert t("site.unit_day_other", n=AUDIT_RETENTION_DAYS) in shown.text("kept-audit")
        assert t("site.unit_kb", n=ERROR_HEAD_BYTES // 1024) in shown.text("error-head")
        cache = shown.text("cache")
        assert t("site.unit_minute_other", n=DEFAULT_CACHE_TTL_SECONDS // 60) in cache
        assert t("site.unit_day_one", n=MAX_CACHE_TTL_SECONDS // 86_400) in cache

    terms_before = page(default, f"/terms?lang={language}").text("account")
    terms_after = page(changed, f"/terms?lang={language}").text("account")
    assert t("site.unit_minute_other", n=15) in terms_before
    assert t("site.unit_day_other", n=7) in terms_before
    assert t("site.unit_minute_other", n=30) in terms_after
    assert t("site.unit_day_other", n=3) in terms_after
    assert t("site.unit_minute_other", n=15) not in terms_after
    assert "18" in page(default, f"/terms?lang={language}").text("age")


def test_operator_legal_text_replaces_the_built_in_body(
    client_for: Callable[..., TestClient], tmp_path: Path
) -> None:
    (tmp_path / "privacy.en.html").write_text(
        '<h1>Acme privacy</h1><p id="acme">We keep <em>nothing</em>.</p>', encoding="utf-8"
    )
    (tmp_path / "terms.zh-CN.html").write_text(
        '<h1>Acme 条款</h1><p id="acme">中文条款。</p>', encoding="utf-8"
    )
    client = client_for(legal_dir=tmp_path)

    answer = client.get("/privacy")
    assert answer.status_code == 200
    assert '<p id="acme">We keep <em>nothing</em>.</p>' in answer.text  # HTML as written
    shown = Texts(answer.text)
    assert 'id="summary-title"' not in answer.text  # the built-in body is gone
    assert shown.text("legal-body") == "Acme privacyWe keep nothing."  # markup as written
    assert "site-footer" in answer.text and 'class="site-header"' in answer.text  # the layout

    # No Chinese privacy text: the operator's English one, not the built-in Chinese.
    chinese = client.get("/privacy?lang=zh-CN")
    assert '<html lang="zh-CN">' in chinese.text
    assert Texts(chinese.text).text("acme") == "We keep nothing."

    # Terms: the Chinese page is the operator's; the English one (none given) is built in.
    assert Texts(client.get("/terms?lang=zh-CN").text).text("acme") == "中文条款。"
    english_terms = Texts(client.get("/terms?lang=en").text)
    assert "acme" not in english_terms.texts
    assert english_terms.text("age-title") == i18n.Translator("en")("site.terms_age_title")

    # Read at render time: an edit shows on the next request.
    (tmp_path / "privacy.en.html").write_text('<p id="acme">Changed.</p>', encoding="utf-8")
    assert Texts(client.get("/privacy").text).text("acme") == "Changed."

    # Without the folder, the built-in pages.
    built_in = Texts(client_for().get("/privacy").text)
    assert "acme" not in built_in.texts
    assert built_in.text("summary-title") == i18n.Translator("en")("site.privacy_summary_title")


def test_the_banner_exists_only_with_a_posthog_key(
    client_for: Callable[..., TestClient],
) -> None:
    without = client_for()
    with_key = client_for(posthog_key="phc_abc", posthog_host="https://eu.i.posthog.com/")
    for path in ("/", "/pricing", "/privacy", "/terms"):
        plain = without.get(path).text
        assert "consent-banner" not in plain and "consent-settings" not in plain
        banner = Texts(with_key.get(path).text).attrs["consent-banner"]
        assert banner["data-posthog-key"] == "phc_abc"
        assert banner["data-posthog-host"] == "https://eu.i.posthog.com"
        assert banner["data-consent-key"] == site.CONSENT_STORAGE_KEY
        assert "hidden" in banner  # shown by the script, only while no choice is stored
    en = i18n.Translator("en")
    assert page(without, "/privacy").text("analytics") == " ".join(
        [en("site.privacy_analytics_title"), en("site.privacy_analytics_none")]
    )
    assert "eu.i.posthog.com" in page(with_key, "/privacy").text("analytics")
    # The console's pages never carry it, with a key or without.
    assert "consent-banner" not in with_key.get("/sign-in").text
    assert "consent-banner" not in with_key.get("/console/keys", follow_redirects=False).text


def test_pricing_is_the_catalog_and_says_when_it_can_not_be_read(
    client_for: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = client_for()
    shown = client.get("/pricing?lang=zh-CN").text
    offered = site.catalog().offered()
    assert gateway_settings().models_file == Path("config/models.yaml")  # the gateway's
    assert {"dynoyard-demo", "dynoyard-demo-embed"} <= {m.id for m in offered}
    for model in offered:
        prices = (format(model.price.input_per_mtok, "f"), format(model.price.output_per_mtok, "f"))
        row = f'data-model="{model.id}" data-input="{prices[0]}" data-output="{prices[1]}"'
        assert row in shown
        label = i18n.Translator("zh-CN")("site.pricing_input")
        assert f'<td class="num" data-label="{label}">${prices[0]}</td>' in shown
    rows = shown.count("<tr data-model=")
    assert rows == len(offered)

    def unreadable() -> Any:
        raise OSError("no such file")

    monkeypatch.setattr(site, "catalog", unreadable)
    failed = client.get("/pricing?lang=en")
    assert failed.status_code == 503
    assert Texts(failed.text).text("main") == " ".join(
        [
            i18n.Translator("en")(key, min_topup="5", max_topup="10,000")
            for key in (
                "site.pricing_title",
                "site.pricing_lead",
                "site.pricing_point_formula",
                "site.pricing_point_topup",
                "site.pricing_point_cache",
                "site.pricing_unavailable",
                "site.pricing_cta",
            )
        ]
    )
    assert client.get("/").status_code == 200  # the quick start still renders


def test_the_quick_start_names_the_configured_base_url(
    client_for: Callable[..., TestClient],
) -> None:
    shown = page(client_for(public_url="https://gw.example.com/"), "/")
    assert shown.text("base-url") == "https://gw.example.com/v1"
    assert "curl https://gw.example.com/v1/chat/completions" in shown.text("example-curl")
    assert 'base_url="https://gw.example.com/v1"' in shown.texts["example-python"]
