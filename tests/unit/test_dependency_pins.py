"""The Lambda dependencies layer installs exactly what the project declares."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_given_the_layer_requirements_when_compared_then_they_equal_the_project_pins():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    layer = (ROOT / "layers" / "dependencies" / "requirements.txt").read_text().split()
    assert sorted(layer) == sorted(project)
    assert all("==" in pin for pin in project)
