from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from schemas.money import CurrencyCode

Reference = Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")]


class PayoutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str
    currency: CurrencyCode
    period_start: AwareDatetime | None = Field(default=None, description="occurred_at ≥ this.")
    period_end: AwareDatetime | None = Field(default=None, description="occurred_at < this.")


class PayoutPaid(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reference: Reference = Field(default="", description="E.g. the bank transfer's reference.")


class PayoutCancel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reference = Field(default="", description="Why the payout is not made (audited).")


class PayoutItemRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    entry_id: str
    amount: Decimal


class PayoutRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    currency: str
    amount: Decimal
    entry_count: int
    period_start: datetime | None
    period_end: datetime | None
    status: str
    reference: str
    created_by: str
    created_at: datetime
    paid_by: str | None
    paid_at: datetime | None
    cancelled_by: str | None
    cancelled_at: datetime | None


class PayoutDetail(PayoutRead):
    items: list[PayoutItemRead]


class PayoutFilters(BaseModel):
    agent_id: str | None = None
    status: Literal["created", "paid", "cancelled"] | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)
