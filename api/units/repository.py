from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement

from api.authz.policies import Scope
from api.kit.repository import ScopedRepository, subtree_clause
from api.models import Unit


class UnitRepository(ScopedRepository[Unit]):
    """Units in the principal's subtrees."""

    model = Unit
    id_column = Unit.id
    tenant_column = Unit.tenant_id

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        return subtree_clause(Unit.path, scope.subtree_paths)

    async def list(self) -> Sequence[Unit]:
        """In tree order (a parent before its children)."""
        statement: Any = self.readable_statement().order_by(Unit.path)
        return (await self.session.scalars(statement)).all()
