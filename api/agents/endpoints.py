from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.agents import service
from api.agents.repository import AgentRepository
from api.agents.schemas import AgentCreate, AgentRead, AgentStatusChangeCreate, AgentUpdate
from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.context import Meta
from api.db import ReadOnlySession, WriteSession
from api.kit.etag import IfMatch, etag_of
from api.kit.pagination import Cursor, Limit, Page, decode_cursor, encode_cursor

router = APIRouter(prefix="/agents", tags=["agents"])

AgentsRead = Annotated[Principal, Depends(Authorized("agents.read"))]
AgentsWrite = Annotated[Principal, Depends(Authorized("agents.write"))]


@router.get("", operation_id="agents.list", summary="Agents the caller may see")
async def list_agents(
    principal: AgentsRead, session: ReadOnlySession, cursor: Cursor = None, limit: Limit = 50
) -> Page[AgentRead]:
    after = decode_cursor(cursor) if cursor else None
    rows = await AgentRepository(session, principal, "agents.read").list(
        after_id=after, limit=limit
    )
    items = await service.read_many(session, principal, rows)
    next_cursor = encode_cursor(items[-1].id) if len(items) == limit else None
    return Page[AgentRead](items=items, next_cursor=next_cursor)


def _tagged(representation: AgentRead, response: Response) -> AgentRead:
    response.headers["ETag"] = etag_of(representation)
    return representation


@router.get("/{agent_id}", operation_id="agents.get")
async def get_agent(
    agent_id: str, principal: AgentsRead, session: ReadOnlySession, response: Response
) -> AgentRead:
    row = await AgentRepository(session, principal, "agents.read").get_with_path(agent_id)
    return _tagged(await service.read_one(session, principal, row), response)


@router.post("", operation_id="agents.create", status_code=201)
async def create_agent(
    body: AgentCreate, principal: AgentsWrite, session: WriteSession, meta: Meta, response: Response
) -> AgentRead:
    row = await service.create_agent(session, principal, body, meta)
    return _tagged(await service.read_one(session, principal, row), response)


@router.patch(
    "/{agent_id}",
    operation_id="agents.update",
    summary="Change an agent (a stale `If-Match` answers 412)",
)
async def update_agent(
    agent_id: str,
    body: AgentUpdate,
    principal: AgentsWrite,
    session: WriteSession,
    meta: Meta,
    response: Response,
    if_match: IfMatch = None,
) -> AgentRead:
    row = await service.update_agent(session, principal, agent_id, body, meta, if_match=if_match)
    return _tagged(await service.read_one(session, principal, row), response)


@router.post(
    "/{agent_id}/status",
    operation_id="agents.change_status",
    summary="Change an agent's status from an instant (default now, never in the future)",
)
async def change_agent_status(
    agent_id: str,
    body: AgentStatusChangeCreate,
    principal: AgentsWrite,
    session: WriteSession,
    meta: Meta,
    response: Response,
) -> AgentRead:
    row = await service.change_status(session, principal, agent_id, body, meta)
    return _tagged(await service.read_one(session, principal, row), response)
