"""Pure access decisions over a `Principal`: no I/O, no clock, no globals.

A principal holds grants (role on a unit, identified by the unit's materialised path). A grant
applies to every unit whose path starts with the grant's path. Routes ask `can_anywhere` (may the
caller use this kind of operation at all), services ask `can` for the unit an object lives in,
and `api.kit.repository` turns `readable_scope` into SQL so the same rule filters every query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from api.authz.permissions import ROLE_RANK, Role, roles_with


@dataclass(frozen=True, slots=True)
class Grant:
    unit_id: str
    unit_path: str
    role: Role


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (JWT) or an API key, in one tenant, with its grants."""

    kind: Literal["user", "api_key"]
    id: str
    tenant_id: str
    grants: tuple[Grant, ...]
    # The login session (refresh-token family) a user's access token belongs to, if known.
    session_id: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this principal."""
        return f"{self.kind}:{self.id}"

    @property
    def user_id(self) -> str | None:
        return self.id if self.kind == "user" else None


@dataclass(frozen=True, slots=True)
class Scope:
    """Where a permission reaches: whole subtrees (by path prefix) and/or only the principal's own
    agent rows (from agent grants)."""

    subtree_paths: tuple[str, ...]
    own_rows: bool

    @property
    def empty(self) -> bool:
        return not self.subtree_paths and not self.own_rows


def applies(grant: Grant, unit_path: str) -> bool:
    return unit_path.startswith(grant.unit_path)


def effective_role(principal: Principal, unit_path: str) -> Role | None:
    """The highest role among the grants that apply to `unit_path`, or None."""
    roles = [g.role for g in principal.grants if applies(g, unit_path)]
    return max(roles, key=ROLE_RANK.__getitem__, default=None)


def can(principal: Principal, permission: str, unit_path: str) -> bool:
    """Whether the principal's effective role on `unit_path` holds `permission`."""
    role = effective_role(principal, unit_path)
    return role is not None and role in roles_with(permission)


def can_anywhere(principal: Principal, permission: str) -> bool:
    """Whether some grant holds `permission` (the route-level check)."""
    allowed = roles_with(permission)
    return any(g.role in allowed for g in principal.grants)


def readable_scope(principal: Principal, permission: str) -> Scope:
    """The subtrees where `permission` holds, plus own-rows-only reach from agent grants."""
    allowed = roles_with(permission)
    paths = sorted(
        {g.unit_path for g in principal.grants if g.role in allowed and g.role != Role.agent}
    )
    # Drop paths inside another listed path: the outer subtree already covers them.
    outer = tuple(p for p in paths if not any(p != q and p.startswith(q) for q in paths))
    own = Role.agent in allowed and any(g.role == Role.agent for g in principal.grants)
    return Scope(subtree_paths=outer, own_rows=own)


def is_root_path(unit_path: str) -> bool:
    """'/unit_x/' is a tenant's root unit."""
    return unit_path.count("/") == 2


def can_company_wide(principal: Principal, permission: str) -> bool:
    """Whether `permission` holds on the tenant's root unit (i.e. over the whole company)."""
    return any(
        is_root_path(g.unit_path) and can(principal, permission, g.unit_path)
        for g in principal.grants
    )


def role_at(principal: Principal, unit_path: str | None) -> Role | None:
    """The effective role where an object lives; `None` path = company-wide (root grants only)."""
    if unit_path is not None:
        return effective_role(principal, unit_path)
    roles = [g.role for g in principal.grants if is_root_path(g.unit_path)]
    return max(roles, key=ROLE_RANK.__getitem__, default=None)


def can_at(principal: Principal, permission: str, unit_path: str | None) -> bool:
    """`permission` where an object lives; objects without a unit need it company-wide."""
    role = role_at(principal, unit_path)
    return role is not None and role in roles_with(permission)


def within_approval_limit(
    principal: Principal,
    unit_path: str | None,
    amount: Decimal,
    *,
    manager_limit: Decimal,
    already: Decimal = Decimal(0),
) -> bool:
    """Owners approve any amount; everyone else (who may approve at all) up to `manager_limit`,
    cumulatively: `already` (what the principal approved, or adjusted, for the same agent in the
    same calendar month) plus the amount's absolute value, all in the reporting currency."""
    if role_at(principal, unit_path) == Role.owner:
        return True
    return already + abs(amount) <= manager_limit


def calendar_month(now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar month holding `now`, as [its first instant, the next month's first)."""
    start = now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    after = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, after


def four_eyes_refusal(
    approver: frozenset[str], *, creator: frozenset[str], linked_user: str | None
) -> str | None:
    """Why these people may not approve an entry, or None. `approver` and `creator` are the
    actors standing for each side (a user, or an API key and the user who created it);
    `linked_user` is the actor of the user linked to the entry's agent."""
    if approver & creator:
        return "You created this entry; another person must approve it."
    if linked_user is not None and linked_user in approver:
        return "This entry pays an agent linked to you; another person must approve it."
    return None
