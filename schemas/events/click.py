"""A click on a referral link or a storefront pixel hit: the referral side of attribution."""

from __future__ import annotations

from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ClickEvent(BaseModel):
    """One recorded click.

    The IP is never stored: `ip_hash` is a salted hash. Bots are flagged, not dropped, and a
    repeated click of the same visitor (its visitor id, else IP+UA) on the same link within a
    short window is marked `is_duplicate` (the program's click policies, `ingest/clicks.py`);
    attribution decides what to do with both.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    click_id: Annotated[str, Field(pattern=r"^clk_[0-9a-f]{32}$")]
    tenant_id: Annotated[str, Field(min_length=1)]
    link_code: Annotated[str, Field(min_length=1, max_length=100)]
    occurred_at: AwareDatetime
    visitor_id: str | None = Field(default=None, description="First-party cookie value.")
    program_id: str | None = None
    agent_id: str | None = None
    shop: str | None = None
    landing_url: str | None = None
    referrer: str | None = None
    user_agent: str | None = None
    ip_hash: str | None = None
    is_bot: bool = False
    is_duplicate: bool = False


class PixelClick(BaseModel):
    """One click reported by the storefront pixel."""

    model_config = ConfigDict(extra="forbid")

    link_code: Annotated[str, Field(min_length=1, max_length=100)]
    client_event_id: Annotated[
        str | None, Field(min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")
    ] = Field(
        default=None,
        description="Idempotency: the same id from the same pixel is one click; the click id is"
        " derived from it (README: the click-id contract).",
    )
    occurred_at: AwareDatetime | None = None
    visitor_id: Annotated[str | None, Field(max_length=100)] = None
    landing_url: Annotated[str | None, Field(max_length=2000)] = None
    referrer: Annotated[str | None, Field(max_length=2000)] = None


class PixelBatch(BaseModel):
    """`POST /v1/clicks` body: up to 100 clicks."""

    model_config = ConfigDict(extra="forbid")

    clicks: Annotated[list[PixelClick], Field(min_length=1, max_length=100)]
