from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, select

from api.authz.policies import Scope
from api.db import ReadSession
from api.kit.repository import ScopedRepository, subtree_clause
from api.models import ApiKey, Unit


async def creator_of(session: ReadSession, key_id: str) -> str | None:
    """The actor who created the API key (revoked or not)."""
    creator: str | None = await session.scalar(select(ApiKey.created_by).where(ApiKey.id == key_id))
    return creator


class ApiKeyRepository(ScopedRepository[ApiKey]):
    """Keys scoped to units in the principal's subtrees."""

    model = ApiKey
    id_column = ApiKey.id
    tenant_column = ApiKey.tenant_id

    def base_statement(self) -> Any:
        return select(ApiKey).join(Unit, Unit.id == ApiKey.unit_id)

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return subtree_clause(Unit.path, scope.subtree_paths)

    async def list(self) -> Sequence[ApiKey]:
        statement = self.readable_statement().order_by(ApiKey.created_at, ApiKey.id)
        return (await self.session.scalars(statement)).all()
