from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

ShopDomain = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=253,
        pattern=r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$",
    ),
]
WebhookSecret = Annotated[
    str,
    StringConstraints(min_length=16, max_length=512, pattern=r"^[\x21-\x7e]+$"),
    Field(json_schema_extra={"writeOnly": True}),
]


class ShopCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    domain: ShopDomain
    secret: WebhookSecret
    active: bool = True


class ShopUpdate(BaseModel):
    """A new `secret` rotates it: the old one stays accepted as the previous secret."""

    model_config = ConfigDict(extra="forbid")

    secret: WebhookSecret | None = None
    active: bool | None = None


class ShopRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    domain: str
    active: bool
    created_at: datetime
    updated_at: datetime
