from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select

from api.authz.policies import Principal, Scope
from api.db import ReadSession
from api.errors import NotFound
from api.kit.repository import ScopedRepository, subtree_clause
from api.models import Agent, AgentStatusChange, Unit

AgentWithPath = tuple[Agent, str | None]


def agent_scope_clause(principal: Principal, scope: Scope) -> ColumnElement[bool]:
    """Agents (joined with their `Unit`) in the scope's subtrees, unit-less agents for root
    scopes, and for agent grants the agent rows linked to the principal's user. Rows that
    belong to an agent (links, notes, ledger entries) are scoped by this same clause."""
    own = Agent.user_id == principal.user_id if scope.own_rows else false()
    unitless = and_(Agent.unit_id.is_(None), ScopedRepository.root_in(scope.subtree_paths))
    return or_(subtree_clause(Unit.path, scope.subtree_paths), unitless, own)


class AgentRepository(ScopedRepository[Agent]):
    """Agents in the principal's subtrees, plus (for agent grants) the agent rows of their user."""

    model = Agent
    id_column = Agent.id
    tenant_column = Agent.tenant_id

    def base_statement(self) -> Any:
        return select(Agent).outerjoin(Unit, Unit.id == Agent.unit_id)

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return agent_scope_clause(self.principal, scope)

    async def get_with_path(self, agent_id: str) -> AgentWithPath:
        """The agent and its unit's path (None when it has no unit), or `NotFound`."""
        statement = self.readable_statement().add_columns(Unit.path).where(Agent.id == agent_id)
        row = (await self.session.execute(statement)).first()
        if row is None:
            raise NotFound(f"No agent {agent_id!r}.")
        agent, path = row
        return agent, path

    async def list(self, *, after_id: str | None, limit: int) -> Sequence[AgentWithPath]:
        statement = self.readable_statement().add_columns(Unit.path).order_by(Agent.id).limit(limit)
        if after_id is not None:
            statement = statement.where(Agent.id > after_id)
        return [(a, p) for a, p in (await self.session.execute(statement)).all()]


HISTORY_ORDER = (
    AgentStatusChange.effective_at,
    AgentStatusChange.recorded_at,
    AgentStatusChange.id,
)


async def status_histories(
    session: ReadSession, tenant_id: str, agent_ids: Sequence[str]
) -> dict[str, list[AgentStatusChange]]:
    """Each agent's status changes, oldest effect first (ties: recording order). The agents
    are ones the caller already read through `AgentRepository`."""
    if not agent_ids:
        return {}
    statement = (
        select(AgentStatusChange)
        .where(AgentStatusChange.tenant_id == tenant_id, AgentStatusChange.agent_id.in_(agent_ids))
        .order_by(AgentStatusChange.agent_id, *HISTORY_ORDER)
    )
    out: dict[str, list[AgentStatusChange]] = {agent_id: [] for agent_id in agent_ids}
    for change in (await session.scalars(statement)).all():
        out[change.agent_id].append(change)
    return out
