"""The one place rows are scoped: tenant first, then the principal's unit subtrees.

Every domain repository derives from `ScopedRepository` and builds its queries from
`readable_statement()`; nothing else filters by tenant or unit. Rows of another tenant are simply
not found, which the API answers with 404.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, false, or_, select, true

from api.authz.policies import Principal, Scope, is_root_path, readable_scope
from api.db import ReadSession
from api.errors import NotFound

M = TypeVar("M")


def subtree_clause(path_column: Any, paths: tuple[str, ...]) -> ColumnElement[bool]:
    """`path_column` lies in one of the subtrees rooted at `paths`."""
    if not paths:
        return false()
    return or_(*(path_column.startswith(p, autoescape=True) for p in paths))


class ScopedRepository(Generic[M]):
    """Reads `model` rows visible to a principal for a permission.

    Subclasses set `model`, `id_column` and implement `scope_clause` (how a row maps to units
    and, for agent grants, to "own" rows).
    """

    model: ClassVar[type[Any]]
    id_column: ClassVar[Any]
    tenant_column: ClassVar[Any]

    def __init__(self, session: ReadSession, principal: Principal, permission: str) -> None:
        self.session = session
        self.principal = principal
        self.permission = permission

    def base_statement(self) -> Select[Any]:
        return select(self.model)

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        raise NotImplementedError

    def readable_statement(self) -> Select[Any]:
        scope = readable_scope(self.principal, self.permission)
        statement = self.base_statement().where(
            type(self).tenant_column == self.principal.tenant_id
        )
        if scope.empty:
            return statement.where(false())
        return statement.where(self.scope_clause(scope))

    async def get(self, object_id: str) -> M:
        """The row if it exists in the principal's reach; otherwise `NotFound`, whether it is
        missing, out of the principal's subtrees or another tenant's."""
        row: M | None = await self.session.scalar(
            self.readable_statement().where(type(self).id_column == object_id)
        )
        if row is None:
            raise NotFound(f"No {self.model.__tablename__[:-1]} {object_id!r}.")
        return row

    @staticmethod
    def root_in(paths: tuple[str, ...]) -> ColumnElement[bool]:
        """True when some scope path is a tenant root (rows without a unit belong to the root)."""
        return true() if any(is_root_path(p) for p in paths) else false()
