from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, or_, select
from sqlalchemy.orm import selectinload

from api.authz.policies import Scope
from api.kit.repository import ScopedRepository, subtree_clause
from api.models import Membership, Unit, User


class UserRepository(ScopedRepository[User]):
    """Users holding a membership in the principal's subtrees (root scope: every user).

    Memberships are loaded with the user; `visible_memberships` trims them to the scope."""

    model = User
    id_column = User.id
    tenant_column = User.tenant_id

    def base_statement(self) -> Any:
        return select(User).options(selectinload(User.memberships).selectinload(Membership.unit))

    def scope_clause(self, scope: Scope) -> ColumnElement[bool]:
        in_scope = exists().where(
            and_(
                Membership.user_id == User.id,
                Unit.id == Membership.unit_id,
                subtree_clause(Unit.path, scope.subtree_paths),
            )
        )
        return or_(in_scope, self.root_in(scope.subtree_paths))

    async def list(self) -> Sequence[User]:
        statement = self.readable_statement().order_by(User.email)
        return (await self.session.scalars(statement)).all()


async def membership(session: Any, *, user_id: str, unit_id: str) -> Membership | None:
    found: Membership | None = await session.scalar(
        select(Membership).where(Membership.user_id == user_id, Membership.unit_id == unit_id)
    )
    return found


async def email_taken(session: Any, *, tenant_id: str, email: str) -> bool:
    statement = select(User.id).where(User.tenant_id == tenant_id, User.email == email)
    return (await session.scalar(statement)) is not None
