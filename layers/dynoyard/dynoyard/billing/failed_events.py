"""Where an event the webhook could not apply is recorded for retry (domain/billing.py
`FailedEvents`): its id, type and error code, never the payload. Stripe retries the
delivery for three days meanwhile; the queue keeps the record for an operator."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from dynoyard.observability import logger


class SqsFailedEvents:
    """The webhook's dead-letter queue (WEBHOOK_DLQ_URL)."""

    def __init__(self, queue_url: str, client: Any | None = None) -> None:
        self.queue_url = queue_url
        if client is None:
            import boto3  # only the webhook function pays for the import

            client = boto3.client("sqs")
        self._sqs = client

    async def record(self, event_id: str, event_type: str, error: str) -> None:
        body = {
            "event_id": event_id,
            "event_type": event_type,
            "error": error,
            "at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
        await run_in_threadpool(
            self._sqs.send_message, QueueUrl=self.queue_url, MessageBody=json.dumps(body)
        )


class LoggedFailedEvents:
    """No queue (local): the log line is the record."""

    async def record(self, event_id: str, event_type: str, error: str) -> None:
        logger.error(
            "stripe event failed: recorded for retry",
            extra={"event_id": event_id, "event_type": event_type, "error": error},
        )
