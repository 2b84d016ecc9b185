from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from schemas.ledger import EntryKind, EntryStatus
from schemas.money import CurrencyCode, quantize

Reason = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00]*$")]
RequiredReason = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=1000, pattern=r"^[^\x00]*$"),
]
# numeric(18, 4): at most 14 integer digits.
LedgerAmount = Annotated[Decimal, Field(max_digits=18, decimal_places=4, allow_inf_nan=False)]


class LedgerEntryRead(BaseModel):
    """An entry with its current status (the newest status event, else its initial status)."""

    entry_id: str
    agent_id: str
    program_id: str | None
    conversion_id: str
    order_id: str
    line_item_id: str | None
    kind: str
    status: str
    level: int
    amount: Decimal
    currency: str
    fx_rate: Decimal
    rule_id: str | None
    rule_version: int | None
    occurred_at: datetime
    recorded_at: datetime
    reason: str


class StatusEventRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    actor: str
    reason: str
    changed_at: datetime


class LedgerEntryDetail(LedgerEntryRead):
    history: list[StatusEventRead]


class LedgerTotal(BaseModel):
    """Sum and count of the filtered entries with one currency and current status."""

    currency: str
    status: str
    count: int
    amount: Decimal


class LedgerPage(BaseModel):
    items: list[LedgerEntryRead]
    next_cursor: str | None
    totals: list[LedgerTotal] = Field(description="Over every entry matching the filters.")


class LedgerFilters(BaseModel):
    agent_id: str | None = None
    program_id: str | None = None
    order_id: str | None = None
    kind: EntryKind | None = None
    status: EntryStatus | None = None
    period_start: AwareDatetime | None = Field(default=None, description="occurred_at ≥ this.")
    period_end: AwareDatetime | None = Field(default=None, description="occurred_at < this.")
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: Reason = ""


class AdjustmentCreate(BaseModel):
    """A manual ledger entry (kind `adjustment`), e.g. a bonus or a correction; it starts
    `pending` and goes through approval like any entry."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str
    amount: LedgerAmount = Field(description="Signed, in `currency`, on its minor-unit grid.")
    currency: CurrencyCode
    reason: RequiredReason
    program_id: str | None = None
    order_id: Annotated[str, StringConstraints(max_length=200, pattern=r"^[^\x00]*$")] = ""
    occurred_at: AwareDatetime | None = Field(default=None, description="Defaults to now.")

    @model_validator(mode="after")
    def _on_currency_grid(self) -> AdjustmentCreate:
        if self.amount == 0:
            raise ValueError("an adjustment amount must not be zero")
        if quantize(self.amount, self.currency) != self.amount:
            raise ValueError(f"amount must be a whole number of {self.currency} minor units")
        return self


class StatementLine(BaseModel):
    """One currency of an agent's statement over the period (by current status)."""

    currency: str
    pending: Decimal
    approved: Decimal
    hold: Decimal
    rejected: Decimal
    paid: Decimal
    earned: Decimal = Field(description="Every entry except rejected ones.")
    payable: Decimal = Field(description="Approved and not yet in a payout.")


class StatementPayout(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    currency: str
    amount: Decimal
    status: str
    created_at: datetime
    paid_at: datetime | None


class AgentStatement(BaseModel):
    agent_id: str
    agent_name: str
    period_start: datetime | None
    period_end: datetime | None
    lines: list[StatementLine]
    payouts: list[StatementPayout] | None = Field(
        description="The agent's payouts in the period; null for callers without "
        "`payouts.read` where the agent lives (observers, operators)."
    )
