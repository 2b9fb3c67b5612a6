"""Who may top up and read the ledger (domain/administration.py's one permission table):
owners and admins; members neither; credits stay the operator's to grant."""

from __future__ import annotations

import pytest

from dynoyard.domain.administration import OPERATOR, Actor, NotAllowed, can, require


@pytest.mark.parametrize(
    ("role", "allowed"), [("owner", True), ("admin", True), ("member", False), ("nobody", False)]
)
@pytest.mark.parametrize("action", ["manage_billing", "read_billing"])
def test_billing_is_for_owners_and_admins(role: str, action: str, allowed: bool) -> None:
    actor = Actor(role, "usr_0000000000000001")  # type: ignore[arg-type]
    assert can(actor, action) is allowed  # type: ignore[arg-type]
    if not allowed:
        with pytest.raises(NotAllowed):
            require(actor, action)  # type: ignore[arg-type]


def test_topping_up_does_not_let_anyone_grant_credits() -> None:
    for role in ("owner", "admin"):
        assert not can(Actor(role, "usr_0000000000000001"), "grant_credits")
    assert can(OPERATOR, "manage_billing") and can(OPERATOR, "grant_credits")
