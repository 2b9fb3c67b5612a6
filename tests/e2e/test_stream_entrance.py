"""The streaming entrance's start script (functions/gateway/run.sh), as the Lambda Web
Adapter runs it: the same app under uvicorn, trusting the adapter's X-Forwarded-For."""

from __future__ import annotations

import httpx


def test_given_run_sh_when_started_then_it_streams_and_records_the_forwarded_client_ip(
    stream_entrance, tables, make_account
):
    account = make_account("1")
    with httpx.stream(
        "POST",
        stream_entrance.base_url + "/v1/chat/completions",
        json={
            "model": "test-chat",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        },
        headers={"authorization": f"Bearer {account.key}", "x-forwarded-for": "203.0.113.9"},
        timeout=10,
    ) as response:
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
        request_id = response.headers["x-request-id"]
    assert events[-1] == "data: [DONE]" and len(events) > 3
    assert tables.usage_item(request_id)["client_ip"]["S"] == "203.0.113.9"
