"""What the attribution dataflow produces: attributed conversions and commission ledger entries.

Both are append-only facts with ids derived from their inputs (`schemas.ids.derived_id`), so a
replay or a retried batch writes the same rows again and idempotent sinks collapse them.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.compact import CompactPickle


class AttributionRule(StrEnum):
    COUPON = "coupon"
    LAST_CLICK = "last_click"
    FIRST_CLICK = "first_click"
    CUSTOMER_BINDING = "customer_binding"
    UNATTRIBUTED = "unattributed"


class CandidateKind(StrEnum):
    """What kind of referral a candidate of an attribution decision was."""

    BINDING = "binding"  # a customer binding (lifetime commission)
    COUPON = "coupon"  # an agent-owned coupon on the order
    CLICK = "click"  # a recorded click


class RejectionCode(StrEnum):
    """Why a candidate did not win, machine-readable (the text says it for people).

    Ineligible: `not_cited`, `after_order`, `outside_window`, `duplicate`, `bot`, `no_agent`,
    `agent_inactive`, `self_referral`, `binding_not_started`, `binding_expired`. Eligible but
    beaten: `bound_customer` (a binding wins), `coupon_wins`, `click_wins` (coupon vs cookie),
    `another_coupon` (an earlier coupon on the order), `another_program` (a more recent click of
    another program governs), `attribution_model` (last/first click picked another).
    `other`: a reason this version cannot classify (never produced by the current logic)."""

    NOT_CITED = "not_cited"
    AFTER_ORDER = "after_order"
    OUTSIDE_WINDOW = "outside_window"
    DUPLICATE = "duplicate"
    BOT = "bot"
    NO_AGENT = "no_agent"
    AGENT_INACTIVE = "agent_inactive"
    SELF_REFERRAL = "self_referral"
    BINDING_NOT_STARTED = "binding_not_started"
    BINDING_EXPIRED = "binding_expired"
    BOUND_CUSTOMER = "bound_customer"
    COUPON_WINS = "coupon_wins"
    CLICK_WINS = "click_wins"
    ANOTHER_COUPON = "another_coupon"
    ANOTHER_PROGRAM = "another_program"
    ATTRIBUTION_MODEL = "attribution_model"
    OTHER = "other"


class RejectedCandidate(CompactPickle, BaseModel):
    """A referral that could have explained the order but did not win, and why.

    `ref` names it: the click id, the coupon code, or the bound customer id. `at` is the click's
    time or the binding's start (none for a coupon): with the order time it shows a window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: CandidateKind
    ref: str
    agent_id: str | None = None
    program_id: str | None = None
    link_code: str | None = None
    at: AwareDatetime | None = None
    code: RejectionCode
    reason: str


class EntryKind(StrEnum):
    ACCRUAL = "accrual"
    OVERRIDE = "override"  # a manager's share up the agent hierarchy
    REVERSAL = "reversal"  # refund or cancellation
    REPRICE = "reprice"  # order edit
    ADJUSTMENT = "adjustment"  # manual, with a reason


class EntryStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    HOLD = "hold"
    REJECTED = "rejected"
    PAID = "paid"


_Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]


class AttributedConversion(CompactPickle, BaseModel):
    """An order joined to the referral that caused it (or explicitly to none)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    conversion_id: str
    tenant_id: str
    shop: str | None
    order_id: str
    order_name: str | None = None
    occurred_at: AwareDatetime
    attributed_at: AwareDatetime
    rule: AttributionRule
    agent_id: str | None
    program_id: str | None
    click_id: str | None = None
    link_code: str | None = Field(default=None, description="The winning click's link.")
    coupon_code: str | None = None
    customer_id: str | None = None
    is_new_customer: bool = False
    currency: _Currency
    revenue: Decimal = Field(description="Order revenue in shop currency, after discounts.")
    fx_rate: Decimal = Field(
        default=Decimal(1), gt=0, description="Shop currency → tenant reporting currency."
    )
    explanation: str = ""
    source_event_id: str
    # Every candidate that lost, in the decision's canonical order (binding, coupons, clicks).
    # Defaulted, so facts built before it existed (and their pickles) still validate.
    rejected: tuple[RejectedCandidate, ...] = ()


class CommissionAccrual(CompactPickle, BaseModel):
    """One commission ledger entry. Never updated in place: a change is a new entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    entry_id: str
    tenant_id: str
    agent_id: str
    program_id: str | None
    conversion_id: str
    order_id: str
    line_item_id: str | None = None
    kind: EntryKind
    status: EntryStatus = EntryStatus.PENDING
    level: Annotated[int, Field(ge=0, description="0 = the agent, 1+ = managers above.")] = 0
    amount: Decimal = Field(description="Signed, in shop currency, rounded to its minor unit.")
    currency: _Currency
    fx_rate: Decimal = Field(default=Decimal(1), gt=0)
    rule_id: str | None = None
    rule_version: int | None = None
    occurred_at: AwareDatetime
    reason: str = ""
    source_event_id: str
    # What analytics filters and groups commission by, copied from the order's conversion and
    # attribution decision when the entry is made (issue #16), so no query has to find the
    # entry's conversion by order id. The agent and program are the fields above.
    shop: str | None = None
    coupon_code: str | None = Field(default=None, description="The winning coupon, if any.")
    link_code: str | None = Field(default=None, description="The winning click's link, if any.")

    def __setstate__(self, state: dict[Any, Any]) -> None:
        """Entries pickled in recovery snapshots before the analytics fields existed (order books
        keep their entries) load with those fields unknown (`None`), instead of lacking them."""
        values = state.get("__dict__")
        if isinstance(values, dict):
            for name in _ANALYTICS_FIELDS:
                values.setdefault(name, None)
        super().__setstate__(state)


_ANALYTICS_FIELDS = ("shop", "coupon_code", "link_code")


class EntryApproval(CompactPickle, BaseModel):
    """The hold on a ledger entry ended: its status becomes `approved` (a status event, never an
    update of the entry). Decided by the dataflow from the program's hold period or the ERP's
    paid invoice (`dataflows.commission.holds`); the ledger sink applies it only while the
    entry's current status is `pending`, so a person's hold, rejection or payout wins."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant_id: str
    entry_id: str
    approved_at: AwareDatetime = Field(description="When the hold ended (`holds.approves_at`).")
    reason: str
