"""A click on a referral link or a storefront pixel hit: the referral side of attribution."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.events.envelope import json_time


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


_CLICK_ID = re.compile(r"clk_[0-9a-f]{32}")


def click_bytes(
    *,
    click_id: str,
    tenant_id: str,
    link_code: str,
    occurred_at: datetime,
    visitor_id: str | None = None,
    program_id: str | None = None,
    agent_id: str | None = None,
    shop: str | None = None,
    landing_url: str | None = None,
    referrer: str | None = None,
    user_agent: str | None = None,
    ip_hash: str | None = None,
    is_bot: bool = False,
    is_duplicate: bool = False,
) -> bytes:
    """`orjson.dumps(ClickEvent(...).model_dump(mode="json"))`, byte for byte, without the
    model (the hot path's serialisation of a click; tests/schemas compare both). Values the
    plain spelling cannot promise to match go through the model, which validates them."""
    occurred = json_time(occurred_at)
    if (
        occurred is None
        or not tenant_id
        or not 0 < len(link_code) <= 100
        or not (_CLICK_ID.fullmatch(click_id))
    ):
        event = ClickEvent(
            click_id=click_id, tenant_id=tenant_id, link_code=link_code, occurred_at=occurred_at,
            visitor_id=visitor_id, program_id=program_id, agent_id=agent_id, shop=shop,
            landing_url=landing_url, referrer=referrer, user_agent=user_agent, ip_hash=ip_hash,
            is_bot=is_bot, is_duplicate=is_duplicate,
        )  # fmt: skip
        return orjson.dumps(event.model_dump(mode="json"))
    return orjson.dumps(
        {
            "click_id": click_id,
            "tenant_id": tenant_id,
            "link_code": link_code,
            "occurred_at": occurred,
            "visitor_id": visitor_id,
            "program_id": program_id,
            "agent_id": agent_id,
            "shop": shop,
            "landing_url": landing_url,
            "referrer": referrer,
            "user_agent": user_agent,
            "ip_hash": ip_hash,
            "is_bot": is_bot,
            "is_duplicate": is_duplicate,
        }
    )


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
