"""The console's team, billing, settings, audit and account pages, and accepting an
invitation, in the browser against `make dev` (DynamoDB Local, the Stripe stand-in, the
outbox): what a person does there, persisted and seen back."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from dynoyard.web import i18n
from tests.browser.conftest import axe_violations, read_link, sign_up, unique_email

EN = i18n.catalog("en")
ZH = i18n.catalog("zh-CN")
INVITATION_LINK = r"http://127\.0\.0\.1:\d+/console/invitations/accept\?token=[A-Za-z0-9_-]+"
SIGN_IN_LINK = r"http://127\.0\.0\.1:\d+/api/auth/email-link/callback\?token=\S+"
PAGES = ("team", "billing", "settings", "audit", "account")
# What of the page's own content sticks out past the window's width (no sideways scroll).
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  return [...document.querySelectorAll("#main *")]
    .filter((node) => node.getBoundingClientRect().right > width + 1)
    .map((node) => node.tagName + "#" + node.id);
}"""


def open_console(page: Page, site, name: str) -> None:
    page.goto(site.url(f"/console/{name}"))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")


def money_of(text: str) -> Decimal:
    """ "$1,025.50" → Decimal("1025.50")."""
    return Decimal(text.replace("$", "").replace(",", "").strip())


def me(page: Page, site) -> dict:
    answer = page.request.get(site.url("/api/me"))
    assert answer.status == 200
    return answer.json()


def test_an_owner_renames_the_organization_and_the_switcher_follows(site, new_page):
    page = new_page(locale="zh-CN")
    sign_up(page, site, name="李华")
    open_console(page, site, "settings")
    zh = ZH
    expect(page.locator("#org-name")).to_have_text("李华的组织")
    page.fill("#org-name-input", "   ")
    page.click("#org-name-save")
    expect(page.locator("#org-name-input-error")).to_have_text(zh["settings.org_name_invalid"])
    page.fill("#org-name-input", "分析机工作室")
    page.click("#org-name-save")
    expect(page.locator("#status")).to_have_text(
        zh["settings.org_renamed"].format(name="分析机工作室")
    )
    expect(page.locator("#org-switch option:checked")).to_contain_text("分析机工作室")
    assert me(page, site)["orgs"][0]["name"] == "分析机工作室"
    page.reload()
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#org-name")).to_have_text("分析机工作室")
    assert axe_violations(page) == []


def test_the_cache_setting_is_saved_kept_after_reload_and_in_the_audit_log(site, new_page):
    page = new_page()
    sign_up(page, site, name="Grace")
    open_console(page, site, "settings")
    assert page.is_checked("#cache-enabled") is False  # opt-in: off until turned on
    privacy = page.text_content("#cache-privacy")
    for key in ("opt_in", "per_org", "ttl", "off"):
        assert EN[f"settings.cache_privacy_{key}"] in privacy
    assert "never shared across organizations" in privacy
    assert axe_violations(page) == []

    page.fill("#cache-ttl", "59")  # below the minute: refused in words, nothing saved
    page.click("#cache-save")
    expect(page.locator("#cache-ttl-error")).to_have_text(EN["settings.ttl_invalid"])
    page.check("#cache-enabled")
    page.fill("#cache-ttl", "600")
    expect(page.locator("#cache-ttl-words")).to_have_text("= 10 minutes")
    page.click("#cache-save")
    expect(page.locator("#status")).to_have_text(EN["settings.cache_saved_on"])
    expect(page.locator("#cache-ttl-error")).to_have_count(0)

    page.reload()
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#cache-enabled")).to_be_checked()
    expect(page.locator("#cache-ttl")).to_have_value("600")
    org = me(page, site)["orgs"][0]["org_id"]
    saved = page.request.get(site.url(f"/api/orgs/{org}/settings")).json()
    assert saved["cache_enabled"] is True and saved["cache_ttl_seconds"] == 600

    # The person's own preferences: PATCH /api/me, kept too.
    page.fill("#me-name", "Grace H.")
    page.select_option("#me-language", "zh-CN")
    page.uncheck("#me-marketing")
    page.click("#me-save")
    expect(page.locator("#status")).to_have_text(EN["settings.me_saved"])
    user = me(page, site)["user"]
    assert (user["name"], user["language"], user["marketing_email"]) == ("Grace H.", "zh-CN", False)
    page.reload()
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#me-language")).to_have_value("zh-CN")
    expect(page.locator("#me-marketing")).not_to_be_checked()

    open_console(page, site, "audit")
    row = page.locator("#audit-body tr", has_text=EN["audit.action_settings_changed"]).first
    expect(row).to_contain_text("response cache: yes")
    expect(row).to_contain_text("cache time (seconds): 600")
    expect(row).to_contain_text("Grace H.")  # the actor by name, not by id
    assert axe_violations(page) == []


def test_a_top_up_through_the_stripe_stand_in_moves_the_balance_by_exactly_its_amount(
    site, new_page
):
    page = new_page()
    sign_up(page, site)
    open_console(page, site, "billing")
    before = money_of(page.text_content("#balance") or "")
    assert axe_violations(page) == []

    page.fill("#topup-amount", "abc")
    page.click("#topup-submit")
    expect(page.locator("#topup-amount-error")).to_have_text(EN["billing.amount_format"])
    page.fill("#topup-amount", "4.99")
    page.click("#topup-submit")
    expect(page.locator("#topup-amount-error")).to_have_text(EN["billing.amount_range"])
    assert "stand-in" not in page.url

    page.fill("#topup-amount", "25.50")
    page.check("#topup-save-card")
    page.click("#topup-submit")
    page.wait_for_url(re.compile(r".*/pay/cs_test_\w+"))
    assert "local" in (page.text_content("body") or "")  # the stand-in says what it is
    assert "25.50 USD" in (page.text_content("h1") or "")
    page.select_option("select[name=card]", "visa")
    page.click("button[name=choice][value=pay]")

    page.wait_for_url(re.compile(r".*/console/billing.*"))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#status")).to_have_text(EN["billing.checkout_success"])
    assert "checkout=" not in page.url  # a reload does not say it again
    row = page.locator("#transactions-body tr").first
    expect(row).to_contain_text(EN["billing.kind_topup"])
    expect(row).to_contain_text("+$25.50")
    expect(row).to_contain_text("Visa ending in 4242")
    assert money_of(page.text_content("#balance") or "") - before == Decimal("25.50")
    # The card was saved: an owner may now turn auto-recharge on, and it says who did.
    expect(page.locator("#recharge-no-card")).to_be_hidden()
    page.check("#recharge-enabled")
    page.click("#recharge-save")
    expect(page.locator("#status")).to_have_text(EN["billing.recharge_saved"])
    expect(page.locator("#recharge-state")).to_contain_text("Auto-recharge is on. Turned on by Ada")
    assert axe_violations(page) == []


def test_auto_recharge_and_the_low_balance_alert_are_checked_in_words_and_saved(site, new_page):
    page = new_page()
    sign_up(page, site)
    open_console(page, site, "billing")
    # No card saved yet: auto-recharge can not be turned on, and the page says why.
    expect(page.locator("#recharge-no-card")).to_be_visible()
    expect(page.locator("#recharge-enabled")).to_be_disabled()
    page.fill("#recharge-amount", "50")
    page.fill("#recharge-cap", "20")
    page.click("#recharge-save")
    expect(page.locator("#recharge-cap-error")).to_have_text(
        EN["billing.recharge_cap_below_amount"]
    )
    page.fill("#recharge-cap", "200")
    page.click("#recharge-save")
    expect(page.locator("#status")).to_have_text(EN["billing.recharge_saved"])

    page.fill("#low-amount", "-3")
    page.click("#low-save")
    expect(page.locator("#low-amount-error")).to_have_text(EN["billing.low_invalid"])
    page.fill("#low-amount", "7.5")
    page.click("#low-save")
    expect(page.locator("#status")).to_have_text(EN["billing.low_saved"])
    expect(page.locator("#low-current")).to_have_text("On: alert below $7.50.")
    page.reload()
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#low-amount")).to_have_value("7.50")
    expect(page.locator("#recharge-cap")).to_have_value("200.00")
    page.click("#low-remove")
    expect(page.locator("#low-current")).to_have_text(EN["billing.low_off"])


def test_an_invitation_is_accepted_by_a_new_user_after_signing_up_and_roles_apply(site, new_page):
    owner = new_page()
    owner_email = sign_up(owner, site, name="Olive Owner")
    open_console(owner, site, "team")
    assert axe_violations(owner) == []
    invitee = unique_email("invitee")
    owner.fill("#invite-email", "not an address")
    owner.click("#invite-form button[type=submit]")
    expect(owner.locator("#invite-email-error")).to_have_text(EN["team.invite_email_invalid"])
    owner.fill("#invite-email", invitee)
    owner.select_option("#invite-role", "member")
    owner.click("#invite-form button[type=submit]")
    expect(owner.locator("#status")).to_have_text(f"Invitation sent to {invitee}.")
    expect(owner.locator("#invitations-body")).to_contain_text(invitee)
    link = read_link(site, invitee, INVITATION_LINK)

    # Someone else, signed in, opens the link: told in words, and offered to switch.
    stranger = new_page()
    sign_up(stranger, site, name="Stranger")
    stranger.goto(link)
    expect(stranger.locator("#accept-message")).to_contain_text(
        "This invitation was sent to another email address"
    )
    expect(stranger.locator("#accept-heading")).to_be_focused()
    expect(stranger.locator("#accept-switch")).to_be_visible()
    assert "token=" not in stranger.url  # the token leaves the address bar
    assert axe_violations(stranger) == []

    # The invitee has no account: the link goes to sign-in, which keeps where to come back.
    guest = new_page(locale="zh-CN")
    guest.goto(link)
    guest.wait_for_url(re.compile(r".*/sign-in.*"))
    assert "token" not in guest.url  # taken out of the address bar at once
    assert kept_next(guest) == urlsplit(link).path + "?" + urlsplit(link).query
    guest.fill("#email", invitee)
    guest.fill("#name", "Ivy Invitee")
    guest.check("#accept-terms")
    guest.click("#email-link-form button[type=submit]")
    guest.wait_for_selector("#status[data-kind=ok]")
    # The emailed link opens in a new tab, as mail clients do: it still comes back here.
    guest = guest.context.new_page()
    guest.goto(read_link(site, invitee, SIGN_IN_LINK))
    guest.wait_for_url(re.compile(r".*/console/team\?org=org_\w+.*"))
    guest.wait_for_selector("#app[aria-busy=false]", state="attached")
    org = me(owner, site)["orgs"][0]
    expect(guest.locator("#status")).to_have_text(ZH["team.joined"].format(name=org["name"]))
    assert parse_qs(urlsplit(guest.url).query) == {"org": [org["org_id"]]}
    owner_name = ZH["team.role_owner"]
    expect(guest.locator("#members-body")).to_contain_text(owner_email)
    expect(guest.locator("#members-body tr", has_text=owner_email)).to_contain_text(owner_name)
    expect(guest.locator("#members-body tr", has_text=invitee)).to_contain_text(
        ZH["team.role_member"]
    )
    # A member manages nothing: no invitations, no role buttons; billing and audit say so.
    expect(guest.locator("#invitations-section")).to_be_hidden()
    expect(guest.locator("#members-body button")).to_have_count(0)
    assert axe_violations(guest) == []
    open_console(guest, site, "billing")
    expect(guest.locator("#billing-denied")).to_be_visible()
    expect(guest.locator("#billing-main")).to_be_hidden()
    open_console(guest, site, "audit")
    expect(guest.locator("#audit-denied")).to_be_visible()
    open_console(guest, site, "settings")
    expect(guest.locator("#cache-managers-only")).to_be_visible()
    expect(guest.locator("#cache-enabled")).to_be_disabled()

    # The owner sees the new member, no pending invitation, and makes them an admin.
    owner.reload()
    owner.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(owner.locator("#invitations-empty")).to_be_visible()
    row = owner.locator("#members-body tr", has_text=invitee)
    expect(row).to_contain_text("Ivy Invitee")
    row.get_by_role("button", name="Change role of Ivy Invitee").click()
    dialog = owner.locator("dialog[open]")
    expect(dialog.locator("select")).to_be_focused()
    dialog.locator("select").select_option("admin")
    dialog.get_by_role("button", name=EN["team.change_role_confirm"]).click()
    expect(dialog).to_have_count(0)
    expect(row).to_contain_text(EN["team.role_admin"])

    # The last owner can not leave: the 409 is shown in words in the dialog, which stays.
    owner.click("#leave-button")
    dialog = owner.locator("dialog[open]")
    dialog.get_by_role("button", name=EN["team.leave_confirm"]).click()
    expect(dialog.get_by_role("alert")).to_have_text(EN["errors.last_owner"])
    owner.keyboard.press("Escape")
    expect(owner.locator("dialog")).to_have_count(0)
    expect(owner.locator("#leave-button")).to_be_focused()  # focus back where it was

    # The admin may not remove an owner: no button for it.
    open_console(guest, site, "team")
    expect(guest.locator("#members-body tr", has_text=owner_email).locator("button")).to_have_count(
        0
    )
    expect(guest.locator("#invitations-section")).to_be_visible()


def test_revoking_an_invitation_stops_its_link(site, new_page):
    owner = new_page()
    sign_up(owner, site)
    open_console(owner, site, "team")
    invitee = unique_email("revoked")
    owner.fill("#invite-email", invitee)
    owner.click("#invite-form button[type=submit]")
    row = owner.locator("#invitations-body tr", has_text=invitee)
    expect(row).to_be_visible()
    invited = owner.evaluate(
        "() => [...document.querySelectorAll('#invitations-body td')].map(c => c.textContent)"
    )
    sent, expires = invited[2], invited[3]  # email, role, sent, expires: 7 days apart
    assert sent.endswith(" UTC") and expires.endswith(" UTC") and sent != expires
    assert "1970" not in expires
    link = read_link(site, invitee, INVITATION_LINK)
    row.get_by_role("button").click()
    owner.locator("dialog[open]").get_by_role("button", name=EN["team.revoke_confirm"]).click()
    expect(owner.locator("#status")).to_have_text(f"The invitation to {invitee} was revoked.")
    expect(owner.locator("#invitations-empty")).to_be_visible()

    guest = new_page()
    sign_up(guest, site, email=invitee)
    guest.goto(link)
    expect(guest.locator("#accept-message")).to_have_text(EN["errors.invitation_invalid"])


def test_a_new_organization_is_made_and_switched_to(site, new_page):
    page = new_page()
    sign_up(page, site)
    open_console(page, site, "team")
    page.click("#new-org-form button[type=submit]")
    expect(page.locator("#new-org-name-error")).to_have_text(EN["team.new_org_name_missing"])
    page.fill("#new-org-name", "Side Project")
    page.click("#new-org-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/console/team\?org=org_\w+"))
    page.wait_for_selector("#app[aria-busy=false]", state="attached")
    expect(page.locator("#org-switch option:checked")).to_contain_text("Side Project")
    assert len(me(page, site)["orgs"]) == 2


def test_the_export_downloads_and_deleting_the_account_ends_it(site, new_page):
    page = new_page()
    email = sign_up(page, site, name="Dora")
    first_id = me(page, site)["user"]["user_id"]
    open_console(page, site, "account")
    expect(page.locator("#account-email")).to_have_text(email)
    assert axe_violations(page) == []

    with page.expect_download() as download:
        page.click("#export-button")
    document = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert document["account"]["email"] == email
    assert download.value.suggested_filename.startswith("dynoyard-export-")
    expect(page.locator("#export-link")).to_be_visible()

    page.click("#delete-button")
    dialog = page.locator("dialog[open]")
    field = dialog.get_by_label(EN["account.delete_dialog_label"])
    expect(field).to_be_focused()
    field.fill("someone-else@example.com")
    dialog.get_by_role("button", name=EN["account.delete_confirm"]).click()
    expect(dialog.get_by_role("alert")).to_have_text(EN["errors.confirmation_mismatch"])
    assert me(page, site)["user"]["user_id"] == first_id  # nothing happened
    field.fill(email.upper())  # case aside, it is the address
    dialog.get_by_role("button", name=EN["account.delete_confirm"]).click()
    expect(page.locator("#deleted-panel")).to_be_visible()
    expect(page.locator("#deleted-panel")).to_be_focused()
    expect(page.locator("#status")).to_have_text(EN["account.deleted_status"])
    assert page.request.get(site.url("/api/me")).status == 401

    again = new_page()
    sign_up(again, site, email=email, name="Dora")
    fresh = me(again, site)
    assert fresh["user"]["user_id"] != first_id
    assert [o["role"] for o in fresh["orgs"]] == ["owner"]


def kept_next(page) -> str | None:
    """Where the console goes after sign-in (web/src/lib/next.js's localStorage entry)."""
    kept = page.evaluate("() => localStorage.getItem('dynoyard_next')")
    return None if kept is None else json.loads(kept)["path"]


def test_a_console_page_without_a_session_goes_to_sign_in_and_back(site, new_page):
    page = new_page()
    page.goto(site.url("/console/billing?lang=en"))
    page.wait_for_url(re.compile(r".*/sign-in.*"))
    assert kept_next(page) == "/console/billing?lang=en"
    # Only a /console/ path of this origin is kept.
    page.goto(site.url("/sign-in?next=https://evil.example/console/x"))
    assert kept_next(page) == "/console/billing?lang=en"
    page.goto(site.url("/sign-in?next=/console/../api/me"))
    assert kept_next(page) == "/console/billing?lang=en"
    page.goto(site.url("/sign-in?next=/console/settings"))
    email = unique_email()
    page.fill("#email", email)
    page.check("#accept-terms")
    page.click("#email-link-form button[type=submit]")
    page.wait_for_selector("#status[data-kind=ok]")
    page.goto(read_link(site, email, SIGN_IN_LINK))
    page.wait_for_url(re.compile(r".*/console/settings$"))
    assert kept_next(page) is None  # used once


@pytest.mark.parametrize("locale,lang", [("en-US", "en"), ("zh-CN", "zh-CN")])
def test_each_page_renders_in_both_languages_wide_and_narrow_without_axe_violations(
    site, new_page, locale, lang
):
    words = i18n.catalog(lang)
    for width in (1280, 390):
        page = new_page(locale=locale, width=width, height=900)
        sign_up(page, site)
        for name in PAGES:
            open_console(page, site, name)
            assert page.get_attribute("html", "lang") == lang
            expect(page.locator("h1")).to_have_text(words[f"console.page_{name}"])
            assert page.text_content("#status") == ""  # nothing failed
            assert axe_violations(page) == [], (name, lang, width)
            page.screenshot(path=f"/tmp/tb-{name}-{lang}-{width}.png", full_page=True)
            assert page.evaluate(OVERFLOWING) == [], (name, lang, width)
