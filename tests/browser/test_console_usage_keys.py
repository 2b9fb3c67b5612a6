"""The console's keys and usage pages in the browser: a key made in the form and shown
once, used through the official `openai` SDK, its requests seen in the charts' text
alternatives and the records (filtered by key, exported as CSV), then revoked (the API
refuses it) and rotated; the form's errors in the person's language; a member sees the
keys without the means to change them; both pages in English and Chinese, with no
serious accessibility violation, at 1280 and 390 px."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import openai
import pytest
from openai import OpenAI
from playwright.sync_api import Page, expect

from dynoyard.web import i18n
from tests.browser.conftest import Site, axe_violations, read_link, sign_up, unique_email

MODEL = "dynoyard-demo"
ROWS = "#records-table tbody tr"
ZH = i18n.catalog("zh-CN")  # the Chinese words the pages must show

# A console API call from the page, as its scripts make them (the session cookie, the
# CSRF token of /api/me): the answer's status and JSON.
API = """async ([method, path, body]) => {
  const me = await (await fetch('/api/me')).json();
  const answer = await fetch(path, {
    method,
    headers: {'content-type': 'application/json', 'x-csrf-token': me.csrf_token},
    body: body === null ? undefined : JSON.stringify(body),
  });
  return [answer.status, await answer.json().catch(() => null)];
}"""


def api(page: Page, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, data = page.evaluate(API, [method, path, body])
    return status, data


def org_of(page: Page) -> str:
    _, me = api(page, "GET", "/api/me")
    return me["orgs"][0]["org_id"]


def fund(page: Page, org_id: str) -> None:
    """Credits for the organization: a top-up paid on the Stripe stand-in, whose signed
    event credits the ledger (a new organization has none, and /v1 needs some)."""
    status, answer = api(
        page, "POST", f"/api/orgs/{org_id}/billing/checkout", {"amount_usd": "10.00"}
    )
    assert status == 201, answer
    url = urlparse(answer["url"])
    session = url.path.rsplit("/", 1)[1]
    paid = httpx.post(f"{url.scheme}://{url.netloc}/_standin/sessions/{session}/pay", json={})
    assert paid.status_code == 200, paid.text


def open_page(page: Page, site: Site, path: str) -> None:
    page.goto(site.url(path))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")


def chat(site: Site, key: str, times: int = 1) -> None:
    client = OpenAI(base_url=site.url("/v1"), api_key=key, max_retries=0)
    for n in range(times):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Hello {n}"}]
        )
        assert reply.choices[0].message.content


def refused(site: Site, key: str) -> int:
    """The status /v1 refuses `key` with: a revoked key is refused within the gateway's
    key cache (5 s, as the README documents), so this asks again until then (10 s)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            chat(site, key)
        except openai.AuthenticationError as error:
            return error.status_code
        assert time.monotonic() < deadline, "the key still works"
        time.sleep(0.2)


def create_key(page: Page, name: str, **fields: str) -> str:
    """Fills the create form (field id suffix → text), submits, and reads the key from
    the one-time panel."""
    page.fill("#key-name", name)
    for field, text in fields.items():
        page.fill(f"#key-{field}", text)
    page.click("#key-create-submit")
    page.wait_for_selector("#new-key-panel")
    return page.input_value("#new-key-value")


def dismiss_key(page: Page, key: str) -> None:
    page.click("#new-key-done")
    assert page.locator("#new-key-panel").count() == 0
    assert key not in page.content()
    assert page.evaluate("document.activeElement.id") == "keys-list-title"


def row(page: Page, name: str):
    return page.locator("#keys-list tbody tr", has=page.locator("th", has_text=name))


def records_shown(page: Page, site: Site, path: str, count: int) -> None:
    """The usage page at `path` listing `count` records (the records are written as the
    requests end: reloads until they are all there, at most 10 s)."""
    deadline = time.monotonic() + 10
    while True:
        open_page(page, site, path)
        rows = page.locator("#records-table tbody tr").count()
        if rows == count or time.monotonic() > deadline:
            break
    assert rows == count


def chart_table(page: Page, chart: str) -> list[list[str]]:
    """A chart's text alternative: its <details> opened, the table's rows as text."""
    page.click(f"#chart-{chart} summary")
    table = page.locator(f"#chart-{chart} .chart-data table")
    table.wait_for()
    return [
        [cell.strip() for cell in line.split("\t")]
        for line in table.locator("tbody").inner_text().strip().split("\n")
    ]


def no_sideways_scroll(page: Page) -> None:
    assert page.evaluate("document.documentElement.scrollWidth") <= page.viewport_size["width"]


def test_keys_and_usage_end_to_end(site: Site, new_page) -> None:
    page = new_page()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site.base)
    sign_up(page, site)
    org_id = org_of(page)
    fund(page, org_id)

    # A new organization: the usage page's first steps, no keys yet.
    assert page.locator("#usage-empty").is_visible()
    assert page.locator("#usage-empty a[href='/console/keys']").is_visible()
    assert page.locator("#usage-content").is_hidden()
    assert axe_violations(page) == []
    open_page(page, site, "/console/keys")
    assert page.locator("#keys-none").is_visible()
    assert page.locator("#keys-readonly").is_hidden()
    assert axe_violations(page) == []

    # A key with every scope, shown once, focused, copied.
    alpha = create_key(
        page, "Alpha", models=MODEL, expires="30", rpm="600", daily_usd="5", monthly_usd="25.5"
    )
    assert alpha.startswith("sk-dy-")
    assert page.evaluate("document.activeElement.id") == "new-key-panel"
    assert page.locator("#new-key-warning").is_visible()
    assert axe_violations(page) == []
    page.click("#new-key-copy")
    page.wait_for_selector("#new-key-copied[data-kind=ok]")
    assert page.evaluate("navigator.clipboard.readText()") == alpha
    dismiss_key(page, alpha)
    page.reload()
    page.wait_for_selector("#keys-list tbody tr")
    assert alpha not in page.content()
    listed = row(page, "Alpha")
    assert alpha[-4:] in listed.locator("code").first.inner_text()
    text = listed.inner_text()
    for shown in (MODEL, "600 requests/min", "$5.00 a day", "$25.50 a month", "Active", "Never"):
        assert shown in text
    assert "Never" in listed.locator("td.col-last_used").inner_text()
    assert "Never" not in listed.locator("td.col-expires").inner_text()  # in 30 days
    beta = create_key(page, "Beta")
    dismiss_key(page, beta)

    # Requests through the official SDK: 3 with Alpha, 2 with Beta.
    chat(site, alpha, 3)
    chat(site, beta, 2)

    # The usage: totals, charts (canvas and text alternative), the records.
    records_shown(page, site, "/console/usage", 5)
    assert page.locator("#usage-empty").is_hidden()
    assert page.inner_text("#total-requests") == "5"
    canvas = page.locator("#chart-requests canvas").first.bounding_box()
    assert canvas is not None and canvas["width"] > 200 and canvas["height"] > 100
    assert "5 requests in this period" in page.inner_text("#chart-requests-summary")
    per_day = chart_table(page, "requests")
    assert len(per_day) == 1 and per_day[0][1:] == ["5"]
    per_model = chart_table(page, "model_cost")
    assert per_model[0][:2] == [MODEL, "5"] and re.fullmatch(r"\$0\.\d{6,}", per_model[0][4])
    keys_column = page.locator("#records-table tbody td:nth-child(3)").all_inner_texts()
    assert sum("Alpha" in k for k in keys_column) == 3
    assert sum("Beta" in k for k in keys_column) == 2
    first = page.locator("#records-table tbody tr").first.inner_text()
    assert MODEL in first and "200" in first and "ms" in first
    assert page.locator("#records-more").is_hidden()
    assert axe_violations(page) == []

    # Filtered by Alpha: the charts and the records follow, and so does the URL (reload).
    alpha_id = page.eval_on_selector(
        "#filter-key", "(s) => [...s.options].find((o) => o.text.startsWith('Alpha')).value"
    )
    page.select_option("#filter-key", alpha_id)
    page.click("#usage-filter-form button[type=submit]")
    page.wait_for_url(re.compile(rf".*key_id={alpha_id}.*"))
    expect(page.locator(ROWS)).to_have_count(3)
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    assert page.inner_text("#total-requests") == "3"
    page.reload()
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    assert page.input_value("#filter-key") == alpha_id
    assert page.locator("#records-table tbody tr").count() == 3
    assert "3 requests in this period" in page.inner_text("#chart-requests-summary")
    assert all(
        "Alpha" in k for k in page.locator("#records-table tbody td:nth-child(3)").all_inner_texts()
    )

    # The export: a CSV download of exactly the filtered records.
    with page.expect_download() as info:
        page.click("#export-csv")
    exported = list(csv.DictReader(io.StringIO(info.value.path().read_text(encoding="utf-8"))))
    assert len(exported) == 3
    assert {r["key_id"] for r in exported} == {alpha_id}
    assert {r["model"] for r in exported} == {MODEL}
    json_link = parse_qs(urlparse(page.get_attribute("#export-json", "href")).query)
    assert json_link["format"] == ["json"] and json_link["key_id"] == [alpha_id]
    assert page.get_attribute("#export-json", "download") is not None

    # Revoke Alpha: a dialog (Escape closes it, focus comes back), then /v1 refuses it.
    open_page(page, site, "/console/keys")
    assert "Never" not in row(page, "Alpha").locator("td.col-last_used").inner_text()
    revoke = row(page, "Alpha").locator("button[data-action=revoke]")
    revoke.click()
    page.wait_for_selector("#key-dialog[open]")
    assert page.evaluate("document.activeElement.id") == "key-dialog-cancel"
    assert "Alpha" in page.inner_text("#key-dialog-title")
    page.keyboard.press("Escape")
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    assert page.evaluate("document.activeElement.dataset.action") == "revoke"
    chat(site, alpha)  # still works
    revoke.click()
    page.click("#key-dialog-confirm")
    expect(row(page, "Alpha")).to_have_attribute("data-state", "revoked")
    assert "Revoked" in row(page, "Alpha").inner_text()
    assert page.evaluate("document.activeElement.id") == "keys-list-title"
    assert row(page, "Alpha").locator("button").count() == 0
    assert refused(site, alpha) == 401

    # Rotate Beta (the old key stops at once): the new key shown once, and it works.
    row(page, "Beta").locator("button[data-action=rotate]").click()
    page.wait_for_selector("#key-dialog[open]")
    assert page.locator("#key-grace").is_visible()
    page.select_option("#key-grace", "0")
    page.click("#key-dialog-confirm")
    page.wait_for_selector("#new-key-panel")
    rotated = page.input_value("#new-key-value")
    assert rotated.startswith("sk-dy-") and rotated != beta
    assert page.evaluate("document.activeElement.id") == "new-key-panel"
    assert refused(site, beta) == 401
    chat(site, rotated)
    dismiss_key(page, rotated)
    page.reload()
    page.wait_for_selector("#keys-list tbody tr")
    assert rotated not in page.content() and beta not in page.content()
    statuses = [r.get_attribute("data-state") for r in page.locator("#keys-list tbody tr").all()]
    assert sorted(statuses) == ["active", "revoked", "rotated"]


def test_usage_loads_more_records_with_the_cursor(site: Site, new_page) -> None:
    page = new_page()
    sign_up(page, site)
    fund(page, org_of(page))
    open_page(page, site, "/console/keys")
    key = create_key(page, "Busy")
    dismiss_key(page, key)
    chat(site, key, 5)
    records_shown(page, site, "/console/usage", 5)
    assert page.locator("#records-more").is_hidden()
    assert page.inner_text("#records-count") == "All 5 requests shown."

    # The API's pages made 2 records long (the page asks for 100): the real cursor, the
    # real API, 3 pages.
    asked: list[dict[str, list[str]]] = []

    def two_a_page(route) -> None:
        url = urlparse(route.request.url)
        query = parse_qs(url.query)
        asked.append(dict(query))
        query["limit"] = ["2"]
        route.continue_(url=url._replace(query=urlencode(query, doseq=True)).geturl())

    records_api = re.compile(r".*/api/orgs/[^/]+/usage\?.*")
    page.route(records_api, two_a_page)
    open_page(page, site, "/console/usage")
    expect(page.locator(ROWS)).to_have_count(2)
    assert page.inner_text("#records-count") == "2 requests shown."
    page.focus("#records-more")
    page.keyboard.press("Enter")
    expect(page.locator(ROWS)).to_have_count(4)
    # Keyboard focus goes on at the first of the new rows.
    index = f"[...document.querySelectorAll('{ROWS}')].indexOf(document.activeElement)"
    assert page.evaluate(index) == 2
    page.click("#records-more")
    expect(page.locator(ROWS)).to_have_count(5)
    assert page.locator("#records-more").is_hidden()
    assert page.inner_text("#records-count") == "All 5 requests shown."
    cursors = [q.get("cursor", [None])[0] for q in asked if q.get("limit") == ["100"]]
    assert cursors[0] is None and all(cursors[1:]) and len(set(cursors)) == 3
    times = page.locator("#records-table tbody td:first-child").all_inner_texts()
    assert times == sorted(times, reverse=True)  # newest first (order=newest)
    page.unroute(records_api)

    # A period without requests: nothing matches (not the first-steps hint).
    page.fill("#filter-since", "2026-01-01")
    page.fill("#filter-until", "2026-01-31")
    page.click("#usage-filter-form button[type=submit]")
    page.wait_for_selector("#usage-no-match:not([hidden])")
    assert page.locator("#usage-empty").is_hidden()
    assert "since=2026-01-01" in page.url and "until=2026-01-31" in page.url
    # An inverted range is refused beside the dates, before any request.
    page.fill("#filter-since", "2026-02-10")
    page.click("#usage-filter-form button[type=submit]")
    assert page.locator("#filter-error").is_visible()
    assert page.get_attribute("#filter-since", "aria-invalid") == "true"
    page.go_back()
    page.wait_for_selector("#records-table tbody tr")
    assert page.input_value("#filter-since") != "2026-01-01"


def test_both_pages_in_chinese_with_the_api_errors_in_words(site: Site, new_page) -> None:
    page = new_page(locale="zh-CN")
    sign_up(page, site)
    assert page.inner_text("#usage-empty-title") == "暂无用量"
    assert page.inner_text("#usage-filters-title") == "筛选"
    assert axe_violations(page) == []
    open_page(page, site, "/console/keys")
    assert page.inner_text("#key-create-title") == "创建密钥"
    assert page.inner_text("#key-create-submit") == "创建密钥"
    assert page.inner_text("label[for=key-rpm]") == "每分钟请求数"
    # Not well formed: refused here, beside the field, before any request.
    page.fill("#key-name", "测试")
    page.fill("#key-rpm", "很多")
    page.click("#key-create-submit")
    assert page.inner_text("#key-rpm-error") == ZH["keys.error_whole"]
    assert page.get_attribute("#key-rpm", "aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "key-rpm"
    # Out of range: the API refuses, naming the field; its words in Chinese beside it.
    page.fill("#key-rpm", "20000000")
    page.click("#key-create-submit")
    page.wait_for_selector("#key-rpm-error:not([hidden])")
    assert page.inner_text("#key-rpm-error") == ZH["keys.error_whole"]
    assert page.inner_text("#key-form-error") == ZH["keys.form_has_errors"]
    page.fill("#key-rpm", "")
    page.fill("#key-expires", "5000")
    page.click("#key-create-submit")
    page.wait_for_selector("#key-expires-error:not([hidden])")
    assert page.locator("#key-rpm-error").is_hidden()
    assert page.get_attribute("#key-rpm", "aria-invalid") is None
    assert page.inner_text("#key-expires-error") == ZH["keys.error_expires"]
    page.fill("#key-expires", "")
    page.fill("#key-daily_usd", "0")
    page.click("#key-create-submit")
    page.wait_for_selector("#key-daily_usd-error:not([hidden])")
    assert page.inner_text("#key-daily_usd-error") == ZH["keys.error_usd"]
    assert page.locator("#keys-none").is_visible()  # nothing was created
    assert axe_violations(page) == []
    page.fill("#key-daily_usd", "3")
    key = create_key(page, "测试")
    assert page.inner_text("#new-key-title") == "您的新 API 密钥"
    assert "不会再次显示" in page.inner_text("#new-key-warning")
    assert axe_violations(page) == []
    dismiss_key(page, key)
    assert "每天 $3.00" in row(page, "测试").inner_text()
    row(page, "测试").locator("button[data-action=revoke]").click()
    assert page.inner_text("#key-dialog-title") == ZH["keys.dialog_revoke_title"].format(
        name="测试"
    )
    assert page.inner_text("#key-dialog-confirm") == "吊销"
    assert axe_violations(page) == []
    page.click("#key-dialog-cancel")
    assert page.evaluate("document.activeElement.dataset.action") == "revoke"


def invite(owner: Page, site: Site, org_id: str, role: str) -> tuple[str, str]:
    """An invitation to a new address as `role` of the owner's organization: the address
    and the token of the emailed link."""
    email = unique_email("teammate")
    status, answer = api(
        owner, "POST", f"/api/orgs/{org_id}/invitations", {"email": email, "role": role}
    )
    assert status == 201, answer
    link = read_link(site, email, r"http://127\.0\.0\.1:\d+/console/invitations/accept\?token=\S+")
    token = parse_qs(urlparse(link).query)["token"][0]
    return email, token


def test_a_member_sees_keys_without_the_means_to_change_them(site: Site, new_page) -> None:
    owner = new_page()
    sign_up(owner, site)
    org_id = org_of(owner)
    open_page(owner, site, "/console/keys")
    key = create_key(owner, "Shared")
    dismiss_key(owner, key)

    teammate = new_page(width=390)
    email, token = invite(owner, site, org_id, "admin")
    sign_up(teammate, site, email=email, name="Grace")
    status, _ = api(teammate, "POST", "/api/invitations/accept", {"token": token})
    assert status in (200, 201)
    _, me = api(teammate, "GET", "/api/me")
    user_id = me["user"]["user_id"]

    # As an admin: the form. Made a member meanwhile: the API's 403 in words.
    open_page(teammate, site, f"/console/keys?org={org_id}")
    assert teammate.locator("#key-create").is_visible()
    status, _ = api(owner, "PATCH", f"/api/orgs/{org_id}/members/{user_id}", {"role": "member"})
    assert status == 200
    teammate.fill("#key-name", "Mine")
    teammate.click("#key-create-submit")
    teammate.wait_for_selector("#key-form-error:not([hidden])")
    assert "does not allow" in teammate.inner_text("#key-form-error")
    assert teammate.evaluate("document.activeElement.id") == "key-form-error"

    # As a member: the keys, read-only (no form, no revoke or rotate), and the usage.
    open_page(teammate, site, f"/console/keys?org={org_id}")
    assert teammate.locator("#keys-readonly").is_visible()
    assert teammate.locator("#key-create").is_hidden()
    assert row(teammate, "Shared").count() == 1
    assert teammate.locator("#keys-list button").count() == 0
    assert teammate.locator("#keys-list th", has_text="Actions").count() == 0
    no_sideways_scroll(teammate)
    assert axe_violations(teammate) == []
    open_page(teammate, site, f"/console/usage?org={org_id}")
    assert teammate.locator("#usage-empty").is_visible()
    assert teammate.locator("#status[data-kind=error]").count() == 0
    no_sideways_scroll(teammate)


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_narrow_screens_do_not_scroll_sideways(site: Site, new_page, locale: str) -> None:
    page = new_page(locale=locale, width=390, height=844)
    sign_up(page, site)
    fund(page, org_of(page))
    open_page(page, site, "/console/keys")
    key = create_key(page, "Phone", models=MODEL, rpm="60", monthly_usd="12.5")
    no_sideways_scroll(page)
    assert axe_violations(page) == []
    dismiss_key(page, key)
    no_sideways_scroll(page)
    chat(site, key, 2)
    records_shown(page, site, "/console/usage", 2)
    no_sideways_scroll(page)
    assert axe_violations(page) == []
