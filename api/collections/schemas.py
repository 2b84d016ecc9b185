from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Shopify ids are numbers; they are kept as their decimal text (as orders carry product ids).
ShopifyId = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{1,20}$")]
ProductIds = Annotated[list[ShopifyId], Field(max_length=100_000)]


class CollectionProducts(BaseModel):
    """The full membership of one collection: it replaces what was known."""

    model_config = ConfigDict(extra="forbid")

    product_ids: ProductIds = Field(description="Every product of the collection (may be empty).")
    title: Annotated[str, StringConstraints(max_length=255)] | None = None


class CollectionImportItem(CollectionProducts):
    id: ShopifyId = Field(description="The Shopify collection id.")


class CollectionImport(BaseModel):
    """A bulk backfill: each listed collection's membership is replaced; others are untouched."""

    model_config = ConfigDict(extra="forbid")

    collections: Annotated[list[CollectionImportItem], Field(min_length=1, max_length=10_000)]


class CollectionRead(BaseModel):
    shop: str
    collection_id: str
    title: str | None
    product_ids: list[str] | None = Field(
        description="`null`: the collection is known (from a webhook) but not its products."
    )
    deleted: bool
    source: Literal["api", "webhook"]
    changed_at: datetime
    updated_at: datetime


class CollectionList(BaseModel):
    items: list[CollectionRead]
