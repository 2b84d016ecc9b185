"""Queries of the live feed: the agents a principal may follow, and API keys by id."""

from __future__ import annotations

from sqlalchemy import select

from api.agents.repository import AgentRepository
from api.authz.permissions import Role
from api.authz.policies import Grant, Principal
from api.db import ReadSession
from api.models import Agent, ApiKey, Unit


async def readable_agents(
    session: ReadSession, principal: Principal, permission: str
) -> dict[str, str]:
    """id -> name of every agent the principal reaches with `permission` (same scoping as the
    agents and ledger endpoints)."""
    statement = (
        AgentRepository(session, principal, permission)
        .readable_statement()
        .with_only_columns(Agent.id, Agent.name)
    )
    rows = (await session.execute(statement)).all()
    return {str(agent_id): str(name) for agent_id, name in rows}


async def api_key_principal(
    session: ReadSession, *, key_id: str, tenant_id: str
) -> Principal | None:
    """The principal of a live (not revoked) API key, or None."""
    row = (
        await session.execute(
            select(ApiKey.role, ApiKey.unit_id, Unit.path)
            .join(Unit, Unit.id == ApiKey.unit_id)
            .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
        )
    ).first()
    if row is None:
        return None
    role, unit_id, path = row
    grant = Grant(unit_id=unit_id, unit_path=path, role=Role(role))
    return Principal(kind="api_key", id=key_id, tenant_id=tenant_id, grants=(grant,))
