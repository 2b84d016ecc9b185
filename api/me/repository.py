from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.agents.repository import AgentWithPath
from api.db import ReadSession
from api.models import Agent, Unit, User


async def user(session: ReadSession, *, tenant_id: str, user_id: str) -> User | None:
    statement = select(User).where(User.tenant_id == tenant_id, User.id == user_id)
    found: User | None = (await session.scalars(statement)).one_or_none()
    return found


async def unit_names(
    session: ReadSession, *, tenant_id: str, unit_ids: Sequence[str]
) -> dict[str, str]:
    statement = select(Unit.id, Unit.name).where(Unit.tenant_id == tenant_id, Unit.id.in_(unit_ids))
    return dict((await session.execute(statement)).all())


async def linked_agents(
    session: ReadSession, *, tenant_id: str, user_id: str
) -> Sequence[AgentWithPath]:
    """The agent rows linked to the user (always readable by that user), with their unit path."""
    statement = (
        select(Agent, Unit.path)
        .outerjoin(Unit, Unit.id == Agent.unit_id)
        .where(Agent.tenant_id == tenant_id, Agent.user_id == user_id)
        .order_by(Agent.id)
    )
    return [(agent, path) for agent, path in (await session.execute(statement)).all()]
