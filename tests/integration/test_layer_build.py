"""What reaches Lambda: the DynoyardLayer as `sam build` makes it (layers/dynoyard/Makefile),
and the streaming entrance's server among the dependency layer's pins."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_SH = ROOT / "functions" / "gateway" / "run.sh"
LAYER_REQUIREMENTS = ROOT / "layers" / "dependencies" / "requirements.txt"


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pinned_distributions() -> set[str]:
    names = set()
    for line in LAYER_REQUIREMENTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.add(_normalized(re.split(r"[\[=<>!~; ]", line, maxsplit=1)[0]))
    return names


def _run_sh_modules() -> list[str]:
    """The modules run.sh starts with `python -m <module>`."""
    return re.findall(r"\bpython3?(?:\.\d+)?\s+-m\s+([A-Za-z_][\w.]*)", RUN_SH.read_text())


def test_given_run_sh_when_its_server_module_is_looked_up_then_the_runtime_layer_pins_it():
    modules = _run_sh_modules()
    assert modules, "run.sh starts no `python -m <module>`: update this test with it"
    pinned = _pinned_distributions()
    for module in modules:
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top == "dynoyard":
            continue  # the runtime or the DynoyardLayer brings it
        providers = {_normalized(d) for d in packages_distributions().get(top, [])}
        assert providers, f"run.sh runs {module}, which no installed distribution provides"
        assert providers & pinned, (
            f"run.sh runs `python -m {module}` ({', '.join(sorted(providers))}), "
            f"which {LAYER_REQUIREMENTS} does not pin: on Lambda it is absent"
        )


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("make") is None:
        pytest.fail("make is required to build the DynoyardLayer")
    artifacts = tmp_path_factory.mktemp("dynoyard-layer")
    done = subprocess.run(
        ["make", "-C", str(ROOT / "layers" / "dynoyard"), "build-DynoyardLayer"],
        env={**os.environ, "ARTIFACTS_DIR": str(artifacts)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return artifacts


def test_given_the_layer_build_when_listed_then_it_holds_the_app_and_catalog_and_no_dev_code(
    layer: Path,
):
    python = layer / "python"
    assert (python / "dynoyard" / "api" / "app.py").is_file()
    assert (python / "dynoyard" / "observability.py").is_file()
    assert (python / "dynoyard_config" / "models.yaml").is_file()
    assert not (python / "dynoyard" / "local").exists()
    # The pages' assets: exactly this build's (the manifest's files and their .gz twins).
    static = python / "dynoyard" / "web" / "static"
    manifest = json.loads((static / "manifest.json").read_text())
    assert set(manifest["entries"]) == {"site.js", "console.js", "styles.css"}
    expected = {"manifest.json"} | {n for f in manifest["files"] for n in (f, f + ".gz")}
    assert {p.name for p in static.iterdir()} == expected
    assert (python / "dynoyard" / "web" / "templates" / "base.html").is_file()
    leftovers = [
        p.relative_to(layer)
        for p in python.rglob("*")
        if p.name == "__pycache__" or p.suffix == ".pyc" or p.name.endswith(".egg-info")
    ]
    assert leftovers == []


# Runs where only the layer, the handler's directory and the third-party packages are on the
# path (`-S`: no site, so the editable install's path to the source tree is not added).
IMPORT_FROM_LAYER = """
import sys
import dynoyard
assert dynoyard.__file__.startswith(sys.argv[1]), dynoyard.__file__
from dynoyard.api.app import create_app
app = create_app()
assert app.state.runtime.catalog.offered() is not None
import app as handler_module  # functions/gateway/app.py, as Lambda imports it
assert callable(handler_module.handler)
try:
    import dynoyard.local
except ImportError:
    pass
else:
    raise SystemExit("dynoyard.local is importable: the test does not isolate the layer")
loaded = sorted(name for name in sys.modules if name.startswith("dynoyard.local"))
assert not loaded, loaded
print("ok")
"""


def test_given_only_the_built_layer_when_the_lambda_handler_is_imported_then_it_works(
    layer: Path,
):
    python = layer / "python"
    site_packages = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    path = [str(python), str(ROOT / "functions" / "gateway"), *sorted(site_packages)]
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "DYNOYARD_", "AWS_LAMBDA_", "POWERTOOLS_"))
    }
    env |= {
        "PYTHONPATH": os.pathsep.join(path),
        "DYNOYARD_MODELS_FILE": str(python / "dynoyard_config" / "models.yaml"),
        "POWERTOOLS_TRACE_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    env.pop("PROVIDER_KEYS_SECRET", None)
    done = subprocess.run(
        [sys.executable, "-S", "-c", IMPORT_FROM_LAYER, str(python)],
        env=env,
        cwd=layer,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
