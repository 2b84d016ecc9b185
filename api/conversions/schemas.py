"""`/v1/conversions` responses: every decided order with the attribution decision that was made
for it, attributed or not. Money is a decimal string in the shop's currency."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.ledger import AttributionRule, CandidateKind, RejectionCode

_Text = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class ConversionStatus(StrEnum):
    attributed = "attributed"
    unattributed = "unattributed"


class Referral(BaseModel):
    """The referral that won the order: a click (`ref` = click id, with its link), a coupon
    (`ref` = the code) or a customer binding (`ref` = the bound customer id)."""

    kind: CandidateKind
    ref: str
    agent_id: str
    program_id: str | None
    link_code: str | None = None


class RejectedRead(BaseModel):
    """A candidate that lost, and why. `code` is machine-readable, `reason` says it in words.

    `redacted`: the candidate belongs to an agent outside the caller's reach, so only its kind
    and code are shown (`reason` is then the code's generic wording); an agent or a team's
    manager learns that, say, another agent's click was rejected as a bot, never whose."""

    kind: CandidateKind
    ref: str | None
    agent_id: str | None
    program_id: str | None
    link_code: str | None = None
    at: AwareDatetime | None = Field(
        default=None, description="The click's time, or the binding's start."
    )
    code: RejectionCode
    reason: str
    redacted: bool = False


class ConversionDecision(BaseModel):
    """One decided order and its attribution decision.

    `explained` is false for rows written before decisions were stored (ClickHouse 0006): their
    `explanation` is empty and `rejected` unknown (not "none")."""

    conversion_id: str
    order_id: str
    order_name: str | None
    shop: str | None
    occurred_at: AwareDatetime = Field(description="Order time (event time, from the shop).")
    decided_at: AwareDatetime = Field(
        description="When the dataflow decided (or last re-emitted) the order."
    )
    status: ConversionStatus
    rule: AttributionRule
    agent_id: str | None
    program_id: str | None
    winner: Referral | None = Field(description="The winning referral; null when unattributed.")
    revenue: str = Field(description="Net merchandise revenue in `currency` (decimal string).")
    currency: str
    is_new_customer: bool
    explanation: str
    rejected: list[RejectedRead]
    explained: bool


class ConversionPage(BaseModel):
    items: list[ConversionDecision]
    next_cursor: str | None


class ConversionFilters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    order: _Text | None = Field(default=None, description="An order id or name (e.g. `#1001`).")
    agent_id: _Text | None = None
    program_id: _Text | None = None
    status: ConversionStatus | None = None
    from_: AwareDatetime | None = Field(
        default=None, alias="from", description="Orders at or after (ISO 8601 with offset)."
    )
    to: AwareDatetime | None = Field(default=None, description="Orders before.")
    cursor: Annotated[str | None, Field(max_length=2000)] = Field(
        default=None, description="`next_cursor` of the previous page."
    )
    limit: int = Field(default=50, ge=1, le=200)
