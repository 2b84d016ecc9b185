from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

# Shopify's own rule for a shop's domain (what X-Shopify-Shop-Domain and OAuth's `shop` carry).
MyshopifyDomain = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        to_lower=True,
        max_length=255,
        pattern=r"^[a-z0-9][a-z0-9-]*\.myshopify\.com$",
    ),
]
WebhookSecret = Annotated[
    str,
    StringConstraints(min_length=16, max_length=512, pattern=r"^[\x21-\x7e]+$"),
    Field(json_schema_extra={"writeOnly": True}),
]


class ShopCreate(BaseModel):
    """A custom app's shop: files a claim that the first webhook signed with `secret` proves."""

    model_config = ConfigDict(extra="forbid")

    domain: MyshopifyDomain
    secret: WebhookSecret


class ShopClaimRead(BaseModel):
    """A claim of a shop waiting for its proof: the first webhook for `domain` that arrives at
    the ingress signed with the claim's secret makes it the company's shop."""

    model_config = ConfigDict(from_attributes=True)

    domain: str
    status: Literal["unverified"] = "unverified"
    created_at: datetime
    expires_at: datetime


class ShopUpdate(BaseModel):
    """A new `secret` rotates it: the old one stays accepted as the previous secret. Giving a
    secret also reconnects a custom-app shop whose app was uninstalled (`uninstalled_at`)."""

    model_config = ConfigDict(extra="forbid")

    secret: WebhookSecret | None = None
    active: bool | None = None


class ShopRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    domain: str
    active: bool
    install: Literal["custom", "oauth"] = Field(
        description="`oauth`: installed through Shopify's OAuth; `custom`: the company's own "
        "custom app, proven by a webhook signed with its secret."
    )
    verified_at: datetime
    token_scopes: str | None = Field(description="Access scopes granted (OAuth installs).")
    uninstalled_at: datetime | None = Field(
        description="When `app/uninstalled` came: its webhooks are refused since."
    )
    created_at: datetime
    updated_at: datetime
