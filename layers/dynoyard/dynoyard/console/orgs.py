"""Organization routes. Placeholder until the keys routes land."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api")
