from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from api.db import ReadSession
from api.models import ShopCollection


class CollectionRepository:
    """A tenant's collection memberships; every query is scoped to the tenant."""

    def __init__(self, session: ReadSession, *, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    async def of_shop(self, shop: str) -> Sequence[ShopCollection]:
        statement = (
            select(ShopCollection)
            .where(ShopCollection.tenant_id == self.tenant_id, ShopCollection.shop == shop)
            .order_by(ShopCollection.collection_id)
        )
        return (await self.session.scalars(statement)).all()

    async def get(
        self, shop: str, collection_id: str, *, lock: bool = False
    ) -> ShopCollection | None:
        statement = select(ShopCollection).where(
            ShopCollection.tenant_id == self.tenant_id,
            ShopCollection.shop == shop,
            ShopCollection.collection_id == collection_id,
        )
        if lock:
            statement = statement.with_for_update()
        row: ShopCollection | None = await self.session.scalar(statement)
        return row

    async def known_memberships(self, collection_ids: Sequence[str]) -> set[str]:
        """Those of `collection_ids` with a known, live membership in any of the tenant's shops."""
        if not collection_ids:
            return set()
        statement = select(ShopCollection.collection_id).where(
            ShopCollection.tenant_id == self.tenant_id,
            ShopCollection.collection_id.in_(list(collection_ids)),
            ShopCollection.product_ids.is_not(None),
            ShopCollection.deleted.is_(False),
        )
        return set((await self.session.scalars(statement)).all())
