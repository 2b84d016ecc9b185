from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field


class ExceptionStatus(StrEnum):
    open = "open"
    resolved = "resolved"


class ExceptionRead(BaseModel):
    """One dead letter of the company: why and where it failed, which event it was."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    reason: str = Field(description="Why it could not be processed (e.g. `late: …`, `orphan: …`).")
    stage: str = Field(description="Where it failed: ingress, dataflow, clickhouse, ledger, …")
    source: str | None = Field(description="The event's source (shopify, odoo, clicks).")
    kind: str | None = Field(description="The event's kind (e.g. `refunds/create`).")
    event_id: str | None
    entity_id: str | None = Field(description="The ordered entity: order id, click id.")
    shop: str | None
    occurred_at: datetime | None = Field(description="Event time, from the source.")
    failed_at: datetime
    resolved_at: datetime | None
    resolved_by: str | None
    resolution: str | None


class ExceptionFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Annotated[str | None, Field(max_length=200)] = Field(
        default=None, description="Reasons starting with this text (e.g. `late`, `fx:`)."
    )
    stage: Annotated[str | None, Field(max_length=50)] = None
    status: ExceptionStatus | None = None
    from_: AwareDatetime | None = Field(
        default=None, alias="from", description="Failed at or after (ISO 8601 with offset)."
    )
    to: AwareDatetime | None = Field(default=None, description="Failed before.")
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class ExceptionCounts(BaseModel):
    open: int
    resolved: int


class ExceptionResolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        description="What was done about it (kept as the resolution)."
    )
