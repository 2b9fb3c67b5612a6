"""Loads the model catalog file (YAML, the CONTRACT's format)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml

from dynoyard.domain.catalog import Catalog, CatalogError, parse_catalog


def load_catalog(path: Path, key_available: Callable[[str], bool] | None = None) -> Catalog:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogError(f"{path}: can not read the model catalog ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML ({exc})") from None
    try:
        return parse_catalog(data, key_available=key_available)
    except CatalogError as exc:
        raise CatalogError(f"{path}: {exc}") from None
