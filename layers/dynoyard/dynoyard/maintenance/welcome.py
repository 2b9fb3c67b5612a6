"""The welcome sequence (issue 10): an email on days 0, 1 and 3 after sign-up, each once.

Who is due is found by a Query of `WELCOME#<day>` (written at sign-up by console/auth.py's
`sign_up`), never a scan of users. Each email is claimed on the user item first (a
conditional `ADD welcome_sent :day`, refused when already sent or when the user opted out of
non-essential email), then sent; a failed send gives the claim back so the next run retries.
Two runs at once: one wins each claim, the other skips. The day's item is deleted once the
email is sent or no longer wanted, so the sequence ends by itself.

Every email carries a fresh unsubscribe link (a random token, stored only as its SHA-256,
valid a year) that works without signing in (console/unsubscribe.py).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from urllib.parse import urlencode

from dynoyard.domain.email import Email, EmailFailed, Language
from dynoyard.domain.messages import (
    WELCOME_DAYS,
    language_of,
    welcome,
    welcome_day_1,
    welcome_day_3,
)
from dynoyard.domain.team import token_hash
from dynoyard.maintenance.job import JobContext, StepReport

UNSUBSCRIBE_LINK_SECONDS = 365 * 86_400

_MESSAGES: dict[int, Callable[[str, str, Language, str], Email]] = {
    0: welcome,
    1: welcome_day_1,
    3: welcome_day_3,
}


async def welcome_step(ctx: JobContext) -> StepReport:
    now = int(ctx.now)
    counts = {"sent": 0, "skipped": 0, "send_failed": 0}
    for day in WELCOME_DAYS:
        for user_id in await ctx.console_store.due_welcomes(day, now):
            if ctx.budget_left() <= 0:
                return StepReport("welcome", finished=False, counts=counts)
            user = await ctx.console_store.get_user(user_id)
            if user is None or not await ctx.console_store.claim_welcome(user_id, day):
                counts["skipped"] += 1  # erased, opted out, or sent by another run
                await ctx.console_store.end_welcome(day, user_id)
                continue
            token = secrets.token_urlsafe(32)
            await ctx.console_store.put_unsubscribe_token(
                token_hash(token), user_id, now + UNSUBSCRIBE_LINK_SECONDS
            )
            link = (
                ctx.settings.public_url.rstrip("/")
                + "/api/email/unsubscribe?"
                + urlencode({"token": token})
            )
            message = _MESSAGES[day](user.email, user.name, language_of(user.language), link)
            try:
                await ctx.email.send(message)
            except Exception as exc:
                await ctx.console_store.unclaim_welcome(
                    user_id, day
                )  # not sent: the next run retries
                if not isinstance(exc, EmailFailed):
                    raise
                counts["send_failed"] += 1
                ctx.log.warning("welcome email not sent", extra={"error": type(exc).__name__})
                continue
            counts["sent"] += 1
            await ctx.console_store.end_welcome(day, user_id)
    return StepReport("welcome", finished=True, counts=counts)
