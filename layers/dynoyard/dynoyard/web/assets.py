"""The built scripts and styles (`npm run build` → web/static/ and its manifest.json): their
hashed names for the pages, and the route serving them, cached for a year as immutable
(a change makes a new name)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

STATIC_DIR = Path(__file__).parent / "static"
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

router = APIRouter(include_in_schema=False)


class AssetsNotBuilt(RuntimeError):
    """web/static/manifest.json is missing: run `npm run build` (make dev and make test do)."""


@cache
def manifest() -> dict[str, Any]:
    path = STATIC_DIR / "manifest.json"
    if not path.exists():
        raise AssetsNotBuilt(f"{path} is missing: run `npm run build`")
    return json.loads(path.read_text())  # type: ignore[no-any-return]


def asset_url(entry: str) -> str:
    """`/assets/<hashed name>` of an entry ("site.js", "console.js", "styles.css")."""
    return "/assets/" + str(manifest()["entries"][entry])


def scripts_of(entry: str) -> list[str]:
    """The entry and every chunk it imports statically (what a page loads before any
    choice of the visitor's): for the JavaScript budget."""
    files = manifest()["files"]
    seen: list[str] = []
    pending = [manifest()["entries"][entry]]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.append(name)
            pending.extend(files[name]["imports"])
    return seen


@router.get("/assets/{name}")
async def asset(name: str, request: Request) -> Response:
    files = manifest()["files"]
    if name not in files:  # only what the build wrote: no path is ever joined from input
        return Response("Not found", status_code=404, media_type="text/plain")
    path = STATIC_DIR / name
    headers = {"cache-control": IMMUTABLE, "vary": "accept-encoding"}
    media = CONTENT_TYPES.get(path.suffix, "application/octet-stream")
    gzip_ok = "gzip" in request.headers.get("accept-encoding", "")
    if gzip_ok and request.app.state.console.settings.gzip_assets:
        headers["content-encoding"] = "gzip"
        return Response(
            (STATIC_DIR / (name + ".gz")).read_bytes(), media_type=media, headers=headers
        )
    return Response(path.read_bytes(), media_type=media, headers=headers)
