"""Who-am-I: the caller's identity, grants and where each permission holds, as plain values."""

from __future__ import annotations

from api.agents.service import read_many
from api.authz.permissions import PERMISSIONS
from api.authz.policies import Principal
from api.companies import repository as companies
from api.companies.schemas import CompanyRead
from api.db import ReadSession
from api.me import repository
from api.me.schemas import Me, MeGrant, MeUser


def permissions_by_unit(principal: Principal) -> dict[str, list[str]]:
    """Permission -> the unit ids of the grants holding it (sorted), for held permissions only."""
    held: dict[str, list[str]] = {}
    for permission, roles in sorted(PERMISSIONS.items()):
        units = sorted({g.unit_id for g in principal.grants if g.role in roles})
        if units:
            held[permission] = units
    return held


async def me(session: ReadSession, principal: Principal) -> Me:
    tenant = await companies.company(session, principal.tenant_id)
    names = await repository.unit_names(
        session, tenant_id=principal.tenant_id, unit_ids=[g.unit_id for g in principal.grants]
    )
    grants = [
        MeGrant(
            unit_id=g.unit_id,
            unit_name=names.get(g.unit_id, ""),
            unit_path=g.unit_path,
            role=g.role,
            permissions=sorted(p for p, roles in PERMISSIONS.items() if g.role in roles),
        )
        for g in sorted(principal.grants, key=lambda g: (g.unit_path, g.role))
    ]
    user, agents = None, []
    if principal.user_id is not None:
        row = await repository.user(session, tenant_id=principal.tenant_id, user_id=principal.id)
        if row is not None:
            user = MeUser(id=row.id, email=row.email, display_name=row.display_name)
        linked = await repository.linked_agents(
            session, tenant_id=principal.tenant_id, user_id=principal.id
        )
        agents = await read_many(session, principal, linked)
    return Me(
        kind=principal.kind,
        principal_id=principal.id,
        user=user,
        company=CompanyRead.model_validate(tenant),
        grants=grants,
        permissions=permissions_by_unit(principal),
        agents=agents,
    )
