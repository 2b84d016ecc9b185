"""The route-level check: `Authorized("agents.read")` authenticates and requires the permission
on at least one unit. Which rows and units it reaches is decided by the repositories."""

from __future__ import annotations

from api.auth.dependencies import Authenticated
from api.authz.permissions import roles_with
from api.authz.policies import Principal, can_anywhere
from api.errors import Forbidden


class Authorized:
    """Dependency: the authenticated principal, if it holds `permission` somewhere."""

    def __init__(self, permission: str) -> None:
        roles_with(permission)  # an undeclared permission fails at import time
        self.permission = permission

    async def __call__(self, principal: Authenticated) -> Principal:
        if not can_anywhere(principal, self.permission):
            raise Forbidden(f"This operation needs the `{self.permission}` permission.")
        return principal
