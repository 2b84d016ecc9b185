"""Agent CRM rules: where an agent may be created or moved, and who sees their personal data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.agents.repository import AgentRepository, AgentWithPath, status_histories
from api.agents.schemas import (
    AgentCreate,
    AgentRead,
    AgentStatusChangeCreate,
    AgentStatusChangeRead,
    AgentUpdate,
)
from api.audit import record
from api.authz.policies import Principal, can, can_at
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Forbidden, NotFound, Unprocessable
from api.kit.etag import check_if_match, etag_of
from api.models import Agent, AgentStatusChange, User
from api.snapshots import snapshot
from api.units.repository import UnitRepository
from schemas.ids import random_id


def to_read(
    principal: Principal,
    agent: Agent,
    unit_path: str | None,
    history: Sequence[AgentStatusChange] = (),
) -> AgentRead:
    """The agent as this principal may see it: personal data only with the permission where the
    agent lives, decided over all the principal's grants (a company-level agent, without a
    unit, needs it on the root unit); an agent always sees their own. `history`: the agent's
    status changes, oldest effect first."""
    own = agent.user_id is not None and agent.user_id == principal.user_id
    visible = own or can_at(principal, "agents.personal_data.read", unit_path)
    return AgentRead(
        id=agent.id,
        unit_id=agent.unit_id,
        user_id=agent.user_id,
        parent_agent_id=agent.parent_agent_id,
        name=agent.name,
        email=agent.email if visible else None,
        status=agent.status,
        created_at=agent.created_at,
        status_history=[AgentStatusChangeRead.model_validate(c) for c in history],
    )


async def read_many(
    session: ReadSession, principal: Principal, rows: Sequence[AgentWithPath]
) -> list[AgentRead]:
    """`to_read` of each row, with its status history (one query for all)."""
    histories = await status_histories(session, principal.tenant_id, [a.id for a, _ in rows])
    return [to_read(principal, a, p, histories[a.id]) for a, p in rows]


async def read_one(session: ReadSession, principal: Principal, row: AgentWithPath) -> AgentRead:
    return (await read_many(session, principal, [row]))[0]


async def _writable_unit_path(session: AsyncSession, principal: Principal, unit_id: str) -> str:
    unit = await UnitRepository(session, principal, "agents.read").get(unit_id)
    if not can(principal, "agents.write", unit.path):
        raise Forbidden("You cannot manage agents in this unit.")
    return unit.path


async def create_agent(
    session: AsyncSession, principal: Principal, body: AgentCreate, meta: RequestMeta
) -> AgentWithPath:
    path = await _writable_unit_path(session, principal, body.unit_id)
    if body.user_id is not None:
        if not can(principal, "agents.link_user", path):
            raise Forbidden("Only an owner may link an agent to a user.")
        user = await session.scalar(
            select(User.id).where(User.id == body.user_id, User.tenant_id == principal.tenant_id)
        )
        if user is None:
            raise NotFound(f"No user {body.user_id!r}.")
    if body.parent_agent_id is not None:
        await AgentRepository(session, principal, "agents.read").get(body.parent_agent_id)
    agent = Agent(
        id=random_id("agt"),
        tenant_id=principal.tenant_id,
        unit_id=body.unit_id,
        user_id=body.user_id,
        parent_agent_id=body.parent_agent_id,
        name=body.name,
        email=body.email,
        status="active",
        created_at=meta.now,
    )
    session.add(agent)
    await session.flush()
    session.add(_status_change(principal, agent, "active", meta.now, meta))
    await session.flush()
    await _audit(session, principal, meta, "agent.create", agent, before=None)
    return agent, path


def _status_change(
    principal: Principal, agent: Agent, status: str, effective_at: datetime, meta: RequestMeta
) -> AgentStatusChange:
    return AgentStatusChange(
        tenant_id=agent.tenant_id, agent_id=agent.id, status=status, effective_at=effective_at,
        recorded_at=meta.now, recorded_by=principal.actor,
    )  # fmt: skip


async def _record_status(
    session: AsyncSession,
    principal: Principal,
    agent: Agent,
    status: str,
    effective_at: datetime,
    meta: RequestMeta,
) -> None:
    """Append the change and set `agent.status` to the status in effect now: the change with
    the latest `effective_at` ≤ now (ties: the latest recorded), so a backdated change behind a
    later one leaves the current status alone."""
    if effective_at > meta.now:
        raise Unprocessable(
            "effective_at is in the future: a status change takes effect now or earlier."
        )
    session.add(_status_change(principal, agent, status, effective_at, meta))
    await session.flush()
    history = (await status_histories(session, principal.tenant_id, [agent.id]))[agent.id]
    current = [c for c in history if c.effective_at <= meta.now]
    agent.status = current[-1].status if current else status
    await session.flush()


async def change_status(
    session: AsyncSession,
    principal: Principal,
    agent_id: str,
    body: AgentStatusChangeCreate,
    meta: RequestMeta,
) -> AgentWithPath:
    """Record a status change effective at `body.effective_at` (default: now); `Unprocessable`
    for an instant in the future. Audited as `agent.status_change`."""
    agent, path = await AgentRepository(session, principal, "agents.read").get_with_path(agent_id)
    if path is None or not can(principal, "agents.write", path):
        raise Forbidden("You cannot change this agent.")
    effective_at = body.effective_at or meta.now
    before = snapshot(agent)
    await _record_status(session, principal, agent, body.status, effective_at, meta)
    after = snapshot(agent) | {"status_change": body.status, "effective_at": effective_at}
    await record(
        session, tenant_id=principal.tenant_id, actor=principal.actor,
        action="agent.status_change", entity_type="agent", entity_id=agent.id,
        before=before, after=after, meta=meta,
    )  # fmt: skip
    return agent, path


async def update_agent(
    session: AsyncSession,
    principal: Principal,
    agent_id: str,
    body: AgentUpdate,
    meta: RequestMeta,
    *,
    if_match: str | None = None,
) -> AgentWithPath:
    """Apply the fields sent; `PreconditionFailed` when `if_match` names another version than
    the caller's current representation of the agent."""
    agent, path = await AgentRepository(session, principal, "agents.read").get_with_path(agent_id)
    if path is None or not can(principal, "agents.write", path):
        raise Forbidden("You cannot change this agent.")
    check_if_match(if_match, etag_of(await read_one(session, principal, (agent, path))))
    # Only email may be cleared; a null name, status or unit means "leave as is".
    sent = body.model_dump(exclude_unset=True)
    changes = {k: v for k, v in sent.items() if v is not None or k == "email"}
    if "unit_id" in changes and changes["unit_id"] != agent.unit_id:
        path = await _writable_unit_path(session, principal, changes["unit_id"])
    before = snapshot(agent)
    status = changes.pop("status", None)
    for field, value in changes.items():
        setattr(agent, field, value)
    await session.flush()
    if status is not None and status != agent.status:  # a change in effect from now
        await _record_status(session, principal, agent, status, meta.now, meta)
    await _audit(session, principal, meta, "agent.update", agent, before=before)
    return agent, path


async def _audit(
    session: AsyncSession,
    principal: Principal,
    meta: RequestMeta,
    action: str,
    agent: Agent,
    *,
    before: dict[str, object] | None,
) -> None:
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action=action,
        entity_type="agent",
        entity_id=agent.id,
        before=before,
        after=snapshot(agent),
        meta=meta,
    )
