"""The permission table, as data: permission -> the roles that hold it on a unit subtree.

A role held on a unit applies to the unit's whole subtree. Roles are ordered
owner > manager > operator > observer > agent and every role holds all permissions of the roles
below it except where the agent's own-rows-only scope makes a difference (enforced by the
repository layer, `api.kit.repository`), so "the highest applicable role wins" and "any
applicable role grants it" are the same rule (asserted in tests/api/test_policies.py).

Permissions not used by any route yet declare the decisions later endpoints must follow.
"""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    owner = "owner"
    manager = "manager"
    operator = "operator"
    observer = "observer"
    agent = "agent"


# Higher wins when several memberships apply to one unit.
ROLE_RANK: dict[Role, int] = {
    Role.owner: 5,
    Role.manager: 4,
    Role.operator: 3,
    Role.observer: 2,
    Role.agent: 1,
}

_ALL = frozenset(Role)
_STAFF = frozenset({Role.owner, Role.manager, Role.operator, Role.observer})
_OPERATIONS = frozenset({Role.owner, Role.manager, Role.operator})
_MANAGEMENT = frozenset({Role.owner, Role.manager})
_OWNER = frozenset({Role.owner})

PERMISSIONS: dict[str, frozenset[Role]] = {
    # tenancy
    "company.read": _ALL,
    "units.read": _STAFF,
    "units.write": _OWNER,
    "users.manage": _OWNER,
    "api_keys.manage": _OWNER,
    "audit.read": _OWNER,
    # agents (an agent sees only the agent rows linked to their own user)
    "agents.read": _ALL,
    "agents.personal_data.read": frozenset({*_OPERATIONS, Role.agent}),
    "agents.write": _MANAGEMENT,
    # linking an agent row to a user makes its commission that user's money (four eyes)
    "agents.link_user": _OWNER,
    # operational data (later slices)
    "programs.read": _ALL,
    "programs.write": _OPERATIONS,
    "links.read": _ALL,
    "links.write": _OPERATIONS,
    "coupons.read": _ALL,
    "coupons.write": _OPERATIONS,
    "shops.read": _STAFF,
    "shops.write": _OPERATIONS,
    "notes.read": _OPERATIONS,
    "notes.write": _OPERATIONS,
    # exchange rates (company configuration): a rate moves every reporting-currency figure,
    # including the managers' approval limit, so only owners set them
    "fx_rates.read": _ALL,
    "fx_rates.write": _OWNER,
    # money (later slices): operators never move money
    "rules.read": _STAFF,
    "rules.propose": _MANAGEMENT,
    "rules.activate": _OWNER,
    "ledger.read": _ALL,
    "ledger.approve": _MANAGEMENT,
    "ledger.adjust": _MANAGEMENT,
    "payouts.read": frozenset({Role.owner, Role.manager, Role.agent}),
    "payouts.write": _OWNER,
    # the exceptions inbox (dead letters): company-wide operational data, for management
    "exceptions.read": _MANAGEMENT,
    "exceptions.resolve": _MANAGEMENT,
    # analytics (ClickHouse): every role, scoped to the agents it reaches (agents: their own)
    "analytics.read": _ALL,
}


def roles_with(permission: str) -> frozenset[Role]:
    """The roles holding `permission`; KeyError for an undeclared one (a typo fails loudly)."""
    return PERMISSIONS[permission]
