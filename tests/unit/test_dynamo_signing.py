"""Our SigV4 signature for DynamoDB equals botocore's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime

import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from dynoyard.adapters.dynamo import client as dynamo_http
from dynoyard.adapters.dynamo.client import Credentials, DynamoClient, DynamoError

FIXED = datetime(2026, 11, 25, 3, 4, 5, tzinfo=UTC)


class FrozenDatetime(datetime):
    @classmethod
    def now(cls, tz=None):  # type: ignore[override]
        return FIXED


def test_given_a_fixed_time_when_signed_then_it_matches_botocore(monkeypatch):
    for token in (None, "session-token"):
        client = DynamoClient(
            endpoint="https://dynamodb.eu-west-1.amazonaws.com", region="eu-west-1"
        )
        client._credentials = Credentials(
            "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token
        )
        body = b'{"TableName":"t","Key":{"pk":{"S":"a"}}}'
        monkeypatch.setattr(dynamo_http, "datetime", FrozenDatetime)
        ours = client._signed("GetItem", body)

        request = AWSRequest(
            method="POST",
            url="https://dynamodb.eu-west-1.amazonaws.com/",
            data=body,
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": "DynamoDB_20120810.GetItem",
            },
        )
        monkeypatch.setattr(
            botocore.auth, "get_current_datetime", lambda: FIXED.replace(tzinfo=None)
        )
        creds = BotoCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
        botocore.auth.SigV4Auth(creds, "dynamodb", "eu-west-1").add_auth(request)
        theirs = request.headers["Authorization"]
        assert ours["x-amz-date"] == request.headers["X-Amz-Date"]
        # botocore signs the same headers plus none we lack; compare the signature itself.
        assert ours["authorization"].rsplit("Signature=", 1)[1] == theirs.rsplit("Signature=", 1)[1]


def test_given_a_cancelled_transaction_when_read_then_only_condition_failures_count():
    failed = DynamoError(
        "TransactionCanceledException",
        "",
        {"CancellationReasons": [{"Code": "None"}, {"Code": "ConditionalCheckFailed"}]},
    )
    conflict = DynamoError(
        "TransactionCanceledException",
        "",
        {"CancellationReasons": [{"Code": "TransactionConflict"}]},
    )
    assert failed.condition_failed and not conflict.condition_failed
    assert DynamoError("ConditionalCheckFailedException", "", {}).condition_failed
