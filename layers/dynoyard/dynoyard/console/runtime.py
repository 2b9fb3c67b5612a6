"""What a running console holds: settings, the stores, the email sender. Clients are made
on first use, so importing the handler does no work that can wait."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property

from dynoyard.adapters.dynamo.billing_store import BillingStore
from dynoyard.adapters.dynamo.client import DynamoClient
from dynoyard.adapters.dynamo.console_store import ConsoleStore
from dynoyard.adapters.dynamo.store import DynamoStore
from dynoyard.adapters.email_settings import EmailSettings
from dynoyard.adapters.stripe import StripePayments
from dynoyard.console.settings import ConsoleSettings
from dynoyard.domain.administration import Administration
from dynoyard.domain.email import EmailSender


class ConsoleRuntime:
    def __init__(
        self,
        settings: ConsoleSettings,
        email_sender: EmailSender | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._email_sender = email_sender

    @cached_property
    def client(self) -> DynamoClient:
        return DynamoClient(self.settings.dynamodb_endpoint, self.settings.aws_region)

    @cached_property
    def store(self) -> ConsoleStore:
        return ConsoleStore(self.client, self.settings.accounts_table, clock=self.clock)

    @cached_property
    def admin(self) -> DynamoStore:
        """Organizations and keys, through the operator's own methods (AccountsAdmin)."""
        return DynamoStore(
            self.client,
            self.settings.accounts_table,
            self.settings.usage_table,
            clock=self.clock,
            cache_table=self.settings.cache_table,
        )

    @cached_property
    def administration(self) -> Administration:
        """The account rules' use cases, recording to the audit log: the one way every
        console route changes an organization."""
        return Administration(self.admin, self.clock, self.admin.audit_log)

    @cached_property
    def ledger(self) -> BillingStore:
        return BillingStore(self.client, self.settings.accounts_table)

    @cached_property
    def payments(self) -> StripePayments:
        """Stripe, one client for the process (made on its first call)."""
        s = self.settings
        return StripePayments.configured(
            s.stripe_secret_key, s.stripe_secret_name, s.stripe_api_base
        )

    @cached_property
    def email(self) -> EmailSender:
        """Resend, SES or the outbox (DYNOYARD_OUTBOX_DIR), as EmailSettings chooses."""
        if self._email_sender is not None:
            return self._email_sender
        return EmailSettings(outbox_dir=self.settings.outbox_dir).sender()
