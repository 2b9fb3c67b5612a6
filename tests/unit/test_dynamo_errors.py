"""DynamoError: which DynamoDB errors the ledger reads as a failed condition. (Signing,
credentials and retries are tested against servers in tests/integration/test_dynamo_client.py.)"""

from __future__ import annotations

import pytest

from dynoyard.adapters.dynamo.client import DynamoError


def cancellation(*codes: str) -> DynamoError:
    body = {"CancellationReasons": [{"Code": code} for code in codes]}
    return DynamoError("TransactionCanceledException", "cancelled", body)


@pytest.mark.parametrize(
    ("error", "condition_failed"),
    [
        (DynamoError("ConditionalCheckFailedException", "", {}), True),
        (cancellation("None", "ConditionalCheckFailed"), True),
        (cancellation("ConditionalCheckFailed", "TransactionConflict"), True),
        (cancellation("TransactionConflict"), False),
        (cancellation("None", "ValidationError"), False),
        (DynamoError("TransactionCanceledException", "", {}), False),
        (DynamoError("ValidationException", "", {"CancellationReasons": []}), False),
    ],
)
def test_given_a_dynamodb_error_when_read_then_only_condition_failures_count(
    error: DynamoError, condition_failed: bool
):
    assert error.condition_failed is condition_failed


def test_given_an_error_when_printed_then_it_names_code_and_message_and_keeps_the_body():
    body = {"__type": "x#ValidationException", "message": "bad key"}
    error = DynamoError("ValidationException", "bad key", body)

    assert str(error) == "ValidationException: bad key"
    assert error.code == "ValidationException" and error.body is body
