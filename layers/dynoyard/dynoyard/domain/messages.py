# Chinese text keeps its own full-width punctuation on purpose.
# ruff: noqa: RUF001
"""The emails the console sends, in English or Simplified Chinese, as pure functions that
return an `Email` (domain/email.py); adapters/email.py delivers them.

Each message is written once as a list of blocks (paragraphs and one link) and rendered to
both a text part and a simple HTML part, so the two never say different things. The HTML has
no markup of its own inside a paragraph: every paragraph, values included, is escaped whole,
so no inserted value can add markup. No images, no tracking, no external resources.
"""

from __future__ import annotations

import html
import unicodedata
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import TypeAlias
from urllib.parse import urlsplit

from dynoyard.domain.email import Email, Language

# Names come from users: a long one must not fill a subject line.
NAME_LIMIT = 80
# The welcome sequence: days after sign-up (day 0 is `welcome`).
WELCOME_DAYS = (0, 1, 3)


@dataclass(frozen=True, slots=True)
class _Link:
    url: str
    label: str


_Block: TypeAlias = str | _Link

_COPY_HINT = {
    "en": "If the button does not work, copy this address into your browser:",
    "zh-CN": "如果无法点击，请将下面的地址复制到浏览器中打开：",
}


def language_of(accept_language_or_stored: str | None) -> Language:
    """The language to write to someone in: a stored preference ("en", "zh-CN") or an
    Accept-Language header ("zh-CN,zh;q=0.9,en;q=0.8"). The first language, by quality,
    that the messages exist in wins: any Chinese (zh, zh-CN, zh-Hans, zh-TW...) is answered
    in Simplified Chinese, the only Chinese written here; anything else is English."""
    if not accept_language_or_stored:
        return "en"
    ranked: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept_language_or_stored.split(",")):
        tag, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            # Sorted by quality, highest first, then by the order the client gave.
            ranked.append((-quality, position, tag.strip().lower().replace("_", "-")))
    for _, _, tag in sorted(ranked):
        primary = tag.split("-", 1)[0]
        if primary == "zh":
            return "zh-CN"
        if primary == "en":
            return "en"
    return "en"


def sign_in_link(
    to: str, link: str, language: Language, minutes_valid: int, new_account: bool
) -> Email:
    """The single-use link that signs in, or, for a new account, verifies the address and
    finishes the sign-up (the 18+ condition of the terms restated)."""
    if _zh(language):
        validity = f"链接只能使用一次，{minutes_valid} 分钟内有效。"
        if new_account:
            return _render(
                to,
                language,
                "确认你在 Dynoyard 的邮箱地址",
                [
                    "欢迎使用 Dynoyard。打开下面的链接，确认这个邮箱地址属于你，即可完成注册。",
                    _Link(link, "确认邮箱并登录"),
                    validity,
                    "根据服务条款，Dynoyard 仅面向年满 18 周岁的用户：确认即表示你已年满 18 周岁。",
                    "如果你没有注册 Dynoyard，请忽略这封邮件：未经确认不会创建任何账户。",
                ],
            )
        return _render(
            to,
            language,
            "你的 Dynoyard 登录链接",
            [
                "打开下面的链接即可登录 Dynoyard。",
                _Link(link, "登录 Dynoyard"),
                validity,
                "如果不是你本人请求登录，请忽略这封邮件：没有这个链接无法登录，你的账户不受影响。",
            ],
        )
    validity = f"The link works once and expires in {_plural(minutes_valid, 'minute')}."
    if new_account:
        return _render(
            to,
            language,
            "Confirm your email address for Dynoyard",
            [
                "Welcome to Dynoyard. Open the link below to confirm that this email address "
                "is yours and finish creating your account.",
                _Link(link, "Confirm my email and sign in"),
                validity,
                "Dynoyard is only for people 18 or older, as its terms of service say: by "
                "confirming, you confirm that you are 18 or older.",
                "If you did not sign up for Dynoyard, ignore this email: no account is created "
                "without this confirmation.",
            ],
        )
    return _render(
        to,
        language,
        "Your Dynoyard sign-in link",
        [
            "Open the link below to sign in to Dynoyard.",
            _Link(link, "Sign in to Dynoyard"),
            validity,
            "If you did not ask to sign in, ignore this email: nobody can sign in without this "
            "link, and your account is unchanged.",
        ],
    )


def invitation(
    to: str, org_name: str, inviter_name: str, link: str, language: Language, days_valid: int
) -> Email:
    org = _inline(org_name)
    if _zh(language):
        inviter = _inline(inviter_name) or "一位 Dynoyard 用户"
        return _render(
            to,
            language,
            f"{inviter} 邀请你加入 Dynoyard 上的 {org}",
            [
                f"{inviter} 邀请你加入 Dynoyard 上的组织「{org}」。",
                _Link(link, "接受邀请"),
                f"邀请 {days_valid} 天内有效。",
                f"如果你不认识 {inviter}，或没有预料到这封邮件，请忽略它：除非你接受邀请，"
                "否则什么都不会发生。",
            ],
        )
    inviter = _inline(inviter_name) or "A Dynoyard user"
    return _render(
        to,
        language,
        f"{inviter} invited you to {org} on Dynoyard",
        [
            f"{inviter} invited you to join the organization “{org}” on Dynoyard.",
            _Link(link, "Accept the invitation"),
            f"The invitation expires in {_plural(days_valid, 'day')}.",
            f"If you do not know {inviter} or did not expect this, ignore this email: nothing "
            "happens unless you accept.",
        ],
    )


def welcome(to: str, name: str, language: Language, unsubscribe_url: str | None = None) -> Email:
    """Day 0 of the welcome sequence (non-essential: it carries an unsubscribe link)."""
    who = _inline(name)
    if _zh(language):
        return _unsubscribable(
            to,
            language,
            "欢迎使用 Dynoyard",
            [
                f"{who}，你好：" if who else "你好：",
                "你的 Dynoyard 账户已经就绪。在控制台中，你可以创建 API 密钥、充值，"
                "并邀请团队成员加入你的组织。",
                "把任意 OpenAI SDK 的 base URL 指向 Dynoyard，再使用你的 API 密钥，即可开始调用。",
            ],
            unsubscribe_url,
        )
    return _unsubscribable(
        to,
        language,
        "Welcome to Dynoyard",
        [
            f"Hello {who}," if who else "Hello,",
            "Your Dynoyard account is ready. In the console you can create API keys, add "
            "credits and invite your team to your organization.",
            "Point any OpenAI SDK's base URL at Dynoyard and use one of your API keys to start.",
        ],
        unsubscribe_url,
    )


def welcome_day_1(to: str, name: str, language: Language, unsubscribe_url: str) -> Email:
    """Day 1 of the welcome sequence: the first request."""
    who = _inline(name)
    if _zh(language):
        return _unsubscribable(
            to,
            language,
            "发出你的第一个 Dynoyard 请求",
            [
                f"{who}，你好：" if who else "你好：",
                "在控制台中创建一个 API 密钥，然后把 OpenAI SDK 的 base URL 改为 Dynoyard 的地址。",
                "每个请求的用量和费用都会显示在控制台的用量页面中；我们不保存提示词或回答的内容。",
            ],
            unsubscribe_url,
        )
    return _unsubscribable(
        to,
        language,
        "Make your first Dynoyard request",
        [
            f"Hello {who}," if who else "Hello,",
            "Create an API key in the console, then set your OpenAI SDK's base URL to "
            "Dynoyard's address.",
            "Each request's usage and cost show on the console's usage page; we never keep "
            "prompts or answers.",
        ],
        unsubscribe_url,
    )


def welcome_day_3(to: str, name: str, language: Language, unsubscribe_url: str) -> Email:
    """Day 3 of the welcome sequence: the team and the controls."""
    who = _inline(name)
    if _zh(language):
        return _unsubscribable(
            to,
            language,
            "与团队一起使用 Dynoyard",
            [
                f"{who}，你好：" if who else "你好：",
                "你可以邀请同事加入组织，为每个密钥设置限额，并在余额不足时收到提醒或自动充值。",
                "有任何问题，直接回复支持邮箱即可。",
            ],
            unsubscribe_url,
        )
    return _unsubscribable(
        to,
        language,
        "Bring your team to Dynoyard",
        [
            f"Hello {who}," if who else "Hello,",
            "You can invite colleagues to your organization, set limits on each key, and get "
            "an alert or an automatic top-up when the balance runs low.",
            "Questions? Write to support and a person will answer.",
        ],
        unsubscribe_url,
    )


_UNSUBSCRIBE = {
    "en": ("You receive this because you signed up for Dynoyard.", "Unsubscribe"),
    "zh-CN": ("你收到这封邮件是因为你注册了 Dynoyard。", "退订"),
}


def _unsubscribable(
    to: str, language: Language, subject: str, blocks: list[_Block], url: str | None
) -> Email:
    """A non-essential message: an unsubscribe link at the end and the List-Unsubscribe
    headers (RFC 2369, one-click per RFC 8058) that let mail clients offer it too."""
    if url is None:
        return _render(to, language, subject, blocks)
    why, label = _UNSUBSCRIBE["zh-CN" if _zh(language) else "en"]
    email = _render(to, language, subject, [*blocks, why, _Link(url, label)])
    headers = (
        ("List-Unsubscribe", f"<{_checked_link(url)}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )
    return replace(email, headers=headers)


def low_balance(
    to: str, org_name: str, balance_usd: str, threshold_usd: str, link: str, language: Language
) -> Email:
    org = _inline(org_name)
    balance, threshold = _usd(balance_usd), _usd(threshold_usd)
    if _zh(language):
        return _render(
            to,
            language,
            f"余额不足：{org} 在 Dynoyard 的余额为 {balance}",
            [
                f"组织「{org}」的余额为 {balance}，低于提醒阈值 {threshold}。",
                "当余额不足以支付一次请求时，Dynoyard 会拒绝该请求（429 insufficient_quota）。"
                "请及时充值，以免 API 密钥无法使用：",
                _Link(link, "充值"),
                "你可以在组织设置中修改这个提醒的阈值。",
            ],
        )
    return _render(
        to,
        language,
        f"Low balance: {org} has {balance} left on Dynoyard",
        [
            f"The balance of the organization “{org}” is {balance}, below its alert threshold "
            f"of {threshold}.",
            "Once the balance can not cover a request, Dynoyard refuses it (429 "
            "insufficient_quota). Add credits to keep your API keys working:",
            _Link(link, "Add credits"),
            "You can change this alert's threshold in the organization's settings.",
        ],
    )


def recharge_failed(
    to: str,
    org_name: str,
    why: str,
    amount_usd: str,
    monthly_cap_usd: str,
    link: str,
    language: Language,
) -> Email:
    """Auto-recharge did not top up: the card was declined ("declined"), or the recharge
    would pass the organization's monthly cap ("cap")."""
    org = _inline(org_name)
    amount, cap = _usd(amount_usd), _usd(monthly_cap_usd)
    if _zh(language):
        reason = (
            f"本月的自动充值已达到每月上限 {cap}。"
            if why == "cap"
            else "你保存的银行卡被拒绝了，请更换银行卡或联系发卡行。"
        )
        return _render(
            to,
            language,
            f"自动充值失败：{org} 未能充值 {amount}",
            [
                f"组织「{org}」的余额低于自动充值阈值，但未能自动充值 {amount}。",
                reason,
                "在再次充值之前，余额不足时请求会被拒绝。你可以手动充值：",
                _Link(link, "充值"),
            ],
        )
    reason = (
        f"This month's automatic recharges have reached the monthly cap of {cap}."
        if why == "cap"
        else "The saved card was declined: update the card or contact its bank."
    )
    return _render(
        to,
        language,
        f"Auto-recharge failed: {org} was not topped up with {amount}",
        [
            f"The balance of the organization “{org}” fell below its auto-recharge "
            f"threshold, but the automatic top-up of {amount} did not happen.",
            reason,
            "Until credits are added, requests are refused once the balance can not cover "
            "them. You can add credits yourself:",
            _Link(link, "Add credits"),
        ],
    )


# -- rendering -----------------------------------------------------------------------


def default_org_name(owner: str, language: str) -> str:
    """The name of the organization a new user starts with, in their language."""
    return f"{owner}的组织" if _zh(language) else f"{owner}'s organization"


def _zh(language: str) -> bool:
    return language == "zh-CN"


def _render(to: str, language: Language, subject: str, blocks: list[_Block]) -> Email:
    lang = "zh-CN" if _zh(language) else "en"
    text_parts: list[str] = []
    html_parts: list[str] = []
    for block in blocks:
        if isinstance(block, _Link):
            url = _checked_link(block.url)
            # The address on a line of its own: mail clients link it, and it copies whole.
            text_parts.append(url)
            href = html.escape(url, quote=True)
            html_parts.append(
                f'<p><a href="{href}" style="display:inline-block;padding:10px 18px;'
                'background:#111;color:#fff;border-radius:6px;text-decoration:none;">'
                f"{html.escape(block.label)}</a></p>\n"
                f'<p style="color:#555;font-size:13px;">{html.escape(_COPY_HINT[lang])}<br>'
                f'<a href="{href}" style="color:#555;word-break:break-all;">'
                f"{html.escape(url)}</a></p>"
            )
        else:
            text_parts.append(block)
            html_parts.append(f"<p>{html.escape(block)}</p>")
    body = "\n".join(html_parts)
    page = (
        f'<!doctype html>\n<html lang="{lang}">\n<head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n"
        '<body style="font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;'
        "font-size:15px;line-height:1.5;color:#111;max-width:560px;margin:24px auto;"
        f'padding:0 16px;">\n{body}\n</body>\n</html>\n'
    )
    return Email(to=to, subject=subject, text="\n\n".join(text_parts) + "\n", html=page)


def _inline(value: str) -> str:
    """A user-given name as one short line: control and format characters (line breaks
    that would forge paragraphs or headers, bidi overrides that would disguise text)
    become spaces, runs of space one, and it is cut at NAME_LIMIT characters."""
    cleaned = "".join(
        " " if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in value
    )
    one_line = " ".join(cleaned.split())
    if len(one_line) > NAME_LIMIT:
        return one_line[: NAME_LIMIT - 1].rstrip() + "…"
    return one_line


def _checked_link(url: str) -> str:
    """Links are made by the service, never typed by users; anything but an absolute http(s)
    address on one line is a bug, refused before it reaches anyone's inbox."""
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.netloc
        or any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url)
    ):
        raise ValueError("an emailed link must be an absolute http(s) URL on one line")
    return url


def _usd(amount: str) -> str:
    """A decimal string shown as dollars, exactly as given ("-0.5" -> "-$0.5")."""
    try:
        value = Decimal(amount)
    except InvalidOperation:
        raise ValueError(f"not a decimal amount: {amount!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a decimal amount: {amount!r}")
    text = amount.strip()
    return f"-${text[1:]}" if text.startswith("-") else f"${text.lstrip('+')}"


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
