"""An organization's team: its members and their roles. Authorization: `orgs.org_access`,
as on every organization route."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request

from dynoyard.console.auth import runtime
from dynoyard.console.orgs import OrgAccess, allowed

router = APIRouter(prefix="/api/orgs/{org_id}")
ReadTeam = Annotated[OrgAccess, allowed("read_org", write=False)]


@router.get("/members")
async def list_members(request: Request, access: ReadTeam) -> dict[str, Any]:
    """Every member's id, email, name and role (members see their team)."""
    rt = runtime(request)
    members = []
    for membership in await rt.store.org_members(access.org_id):
        user = await rt.store.get_user(membership.user_id)
        if user is None:
            continue
        members.append(
            {
                "user_id": user.user_id,
                "email": user.email,
                "name": user.name,
                "role": membership.role,
            }
        )
    return {"members": sorted(members, key=lambda m: (m["email"], m["user_id"]))}
