"""The gateway's cold start imports only what a request uses (DESIGN.md's performance
target: "nothing imported that the route does not use"): none of the console's, billing's,
operations' or emails' modules, which came in through the DynamoDB package once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import ROOT

# What a /v1 request never uses (prefixes of module names).
NOT_ON_THE_HOT_PATH = (
    "dynoyard.console",
    "dynoyard.billing",
    "dynoyard.maintenance",
    "dynoyard.web",
    "dynoyard.cli",
    "dynoyard.adapters.dynamo.store",
    "dynoyard.adapters.dynamo.admin",
    "dynoyard.adapters.dynamo.alerts_store",
    "dynoyard.adapters.dynamo.billing_store",
    "dynoyard.adapters.dynamo.console_store",
    "dynoyard.adapters.dynamo.audit_store",
    "dynoyard.adapters.dynamo.rollup_store",
    "dynoyard.adapters.dynamo.reconcile",
    "dynoyard.adapters.stripe",
    "dynoyard.adapters.email",
    "dynoyard.domain.alerts",
    "dynoyard.domain.administration",
    "dynoyard.domain.billing",
    "dynoyard.domain.email",
    "dynoyard.domain.messages",
    "dynoyard.domain.team",
    "stripe",
    "jinja2",
    "authlib",
    "boto3",
)


def test_importing_the_gateway_handler_loads_no_module_a_request_does_not_use() -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "functions" / "gateway"), str(ROOT / "layers" / "dynoyard")]
    )
    env["DYNOYARD_MODELS_FILE"] = str(ROOT / "config" / "models.yaml")
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", "import app, sys, json; print(json.dumps(sorted(sys.modules)))"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT / "functions" / "gateway",
        ).stdout
    )
    assert "dynoyard.adapters.dynamo.ledger" in loaded  # the check would see a leak
    leaked = [m for m in loaded if m.startswith(NOT_ON_THE_HOT_PATH)]
    assert leaked == []
