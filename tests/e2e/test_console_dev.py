"""`make dev`'s driver serving the console on its own port: a sign-up by link read from the
outbox (.local/outbox), the session cookie on plain http, a key made in the console that
the gateway on the same port accepts."""

from __future__ import annotations

import re
from email import policy
from email.parser import BytesParser
from http.cookies import SimpleCookie
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.e2e.test_make_dev import dev_env, run_dev, stop


def test_make_dev_signs_up_by_the_outbox_and_serves_console_keys_to_the_gateway(
    tmp_path: Path,
) -> None:
    port, ddb_port = free_port(), free_port()
    process, output = run_dev(tmp_path, dev_env(port, ddb_port))
    base = f"http://127.0.0.1:{port}"
    try:
        assert f"console API: {base}/api" in output
        email = "dev-user@example.com"
        answer = httpx.post(
            base + "/api/auth/email-link",
            json={"email": email, "name": "Dev", "accept_terms": True},
        )
        assert answer.status_code == 202, answer.text
        (written,) = (tmp_path / ".local" / "outbox").glob("*.eml")
        mail = BytesParser(policy=policy.default).parsebytes(written.read_bytes())
        text = mail.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]
        link = re.search(rf"{re.escape(base)}/api/auth/email-link/callback\?token=\S+", text)
        assert link, text
        signed_in = httpx.get(link.group(0))
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/console"
        assert "secure" not in signed_in.headers["set-cookie"].lower()
        cookie = SimpleCookie()
        cookie.load(signed_in.headers["set-cookie"])
        session = {"cookie": f"dynoyard_session={cookie['dynoyard_session'].value}"}
        me = httpx.get(base + "/api/me", headers=session).json()
        org_id = me["orgs"][0]["org_id"]
        made = httpx.post(
            f"{base}/api/orgs/{org_id}/keys",
            headers={**session, "x-csrf-token": me["csrf_token"]},
            json={"name": "dev"},
        )
        assert made.status_code == 201, made.text
        models = httpx.get(
            base + "/v1/models", headers={"authorization": f"Bearer {made.json()['api_key']}"}
        )
        assert models.status_code == 200 and models.json()["data"]
    finally:
        stop(process)
