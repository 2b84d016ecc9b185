"""Decided orders and their explanations, as the caller may see them.

Scope (the analytics rule, `api.analytics.service`): a grant on the company's root unit reads
every decided order, attributed or not; other staff grants read the orders credited to the
agents of their subtrees; an agent grant only the orders credited to the caller's own agent rows.
An `agent_id` filter narrows that reach and never widens it. An order outside the reach is
"not found", whether it exists or not.

What a restricted reader sees of a decision: the winner (in reach, or the order would not be
visible) in full; a rejected candidate of an agent outside the reach only by its kind and code
(`RejectedRead.redacted`), and any text that names such a candidate (its agent id or its ref) is
replaced by generic wording, so the explanation of one's own order never discloses another
agent's clicks, coupons or customers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from api.analytics.service import narrow
from api.conversions.repository import DecisionStore, OrderQuery
from api.conversions.schemas import (
    ConversionDecision,
    ConversionFilters,
    ConversionPage,
    ConversionStatus,
    Referral,
    RejectedRead,
)
from api.errors import NotFound
from api.kit.pagination import decode_keyset, encode_keyset
from schemas.ledger import AttributionRule, CandidateKind, RejectionCode
from schemas.money import decimal_to_text, quantize

# What a redacted reason says: the code in words, naming nobody.
CODE_TEXT: dict[RejectionCode, str] = {
    RejectionCode.NOT_CITED: "not cited by the order and not from its visitor",
    RejectionCode.AFTER_ORDER: "click after the order",
    RejectionCode.OUTSIDE_WINDOW: "outside the lookback window",
    RejectionCode.DUPLICATE: "duplicate of an earlier click",
    RejectionCode.BOT: "bot click",
    RejectionCode.NO_AGENT: "click has no agent",
    RejectionCode.AGENT_INACTIVE: "the agent was not active at the order's time",
    RejectionCode.SELF_REFERRAL: "self-referral: the agent is the buyer",
    RejectionCode.BINDING_NOT_STARTED: "binding starts after the order",
    RejectionCode.BINDING_EXPIRED: "binding expired",
    RejectionCode.BOUND_CUSTOMER: "the customer is bound to another agent",
    RejectionCode.COUPON_WINS: "a coupon wins (coupon_beats_cookie)",
    RejectionCode.CLICK_WINS: "a click wins (cookie beats coupon)",
    RejectionCode.ANOTHER_COUPON: "another coupon comes first on the order",
    RejectionCode.ANOTHER_PROGRAM: "a more recent click of another program governs",
    RejectionCode.ATTRIBUTION_MODEL: "the attribution model picked another click",
    RejectionCode.OTHER: "rejected",
}


def _field(value: Any, index: int, name: str) -> Any:
    """A field of a `rejected` element: clickhouse-connect gives named tuples as tuples or as
    dicts, depending on its settings."""
    return value[name] if isinstance(value, Mapping) else value[index]


_REJECTED_FIELDS = ("kind", "ref", "agent_id", "program_id", "link_code", "at", "code", "reason")


def rejected_from(value: Any) -> RejectedRead:
    """One element of the `rejected` column as the API model (unredacted)."""
    f = {name: _field(value, i, name) for i, name in enumerate(_REJECTED_FIELDS)}
    try:
        code = RejectionCode(f["code"])
    except ValueError:  # a code a newer dataflow wrote: still shown, as `other`
        code = RejectionCode.OTHER
    return RejectedRead(
        kind=CandidateKind(f["kind"]), ref=f["ref"], agent_id=f["agent_id"],
        program_id=f["program_id"], link_code=f["link_code"], at=_utc(f["at"]), code=code,
        reason=f["reason"],
    )  # fmt: skip


def _utc(when: datetime | None) -> datetime | None:
    """Every time column is `DateTime64(3, 'UTC')`, but clickhouse-connect may return it naive
    (always inside a tuple): it is UTC."""
    if when is None or when.tzinfo is not None:
        return when
    return when.replace(tzinfo=UTC)


def winner_of(row: Mapping[str, Any]) -> Referral | None:
    """The winning referral of a decided order's row, from its rule."""
    rule, agent = AttributionRule(row["rule"]), row["agent_id"]
    if rule is AttributionRule.UNATTRIBUTED or agent is None:
        return None
    if rule is AttributionRule.COUPON:
        kind, ref = CandidateKind.COUPON, row["coupon_code"]
    elif rule is AttributionRule.CUSTOMER_BINDING:
        kind, ref = CandidateKind.BINDING, row["customer_id"]
    else:
        kind, ref = CandidateKind.CLICK, row["click_id"]
    return Referral(
        kind=kind, ref=ref or "", agent_id=agent, program_id=row["program_id"],
        link_code=row["link_code"] if kind is CandidateKind.CLICK else None,
    )  # fmt: skip


def winner_text(winner: Referral | None) -> str:
    """The decision in generic words (used when the stored explanation names a hidden agent)."""
    if winner is None:
        return "no eligible binding, coupon or click"
    if winner.kind is CandidateKind.CLICK:
        link = f" via link {winner.link_code}" if winner.link_code else ""
        return f"click {winner.ref} of agent {winner.agent_id}{link}"
    if winner.kind is CandidateKind.COUPON:
        return f"coupon {winner.ref} owned by agent {winner.agent_id}"
    return f"customer {winner.ref} bound to agent {winner.agent_id}"


def _names_any(text: str, tokens: frozenset[str]) -> bool:
    return any(token in text for token in tokens)


def redact(
    explanation: str,
    rejected: Sequence[RejectedRead],
    winner: Referral | None,
    reach: tuple[str, ...] | None,
) -> tuple[str, list[RejectedRead]]:
    """(explanation, rejected) as a reader with `reach` may see them (`None` = everything).

    A candidate whose agent is outside `reach` keeps only its kind and code; any text naming a
    hidden candidate (its agent id or ref) is replaced by generic wording. Candidates without an
    agent (a click with no agent) disclose nobody and stay whole."""
    if reach is None:
        return explanation, list(rejected)
    allowed = set(reach)
    hidden = [r for r in rejected if r.agent_id is not None and r.agent_id not in allowed]
    tokens = frozenset(t for r in hidden for t in (r.agent_id, r.ref) if t)
    hidden_ids = {id(r) for r in hidden}
    shown: list[RejectedRead] = []
    for r in rejected:
        if id(r) in hidden_ids:
            shown.append(RejectedRead(
                kind=r.kind, ref=None, agent_id=None, program_id=r.program_id, code=r.code,
                reason=CODE_TEXT[r.code], redacted=True,
            ))  # fmt: skip
        elif _names_any(r.reason, tokens):
            shown.append(r.model_copy(update={"reason": CODE_TEXT[r.code]}))
        else:
            shown.append(r)
    if _names_any(explanation, tokens):
        explanation = winner_text(winner)
    return explanation, shown


def decision_from(row: Mapping[str, Any], reach: tuple[str, ...] | None) -> ConversionDecision:
    """A `conversions` row (ClickHouse 0006 columns) as the reader with `reach` may see it."""
    winner = winner_of(row)
    rejected = [rejected_from(v) for v in row["rejected"] or ()]
    explanation, shown = redact(row["explanation"] or "", rejected, winner, reach)
    rule = AttributionRule(row["rule"])
    attributed = rule is not AttributionRule.UNATTRIBUTED
    return ConversionDecision(
        conversion_id=row["conversion_id"], order_id=row["order_id"],
        order_name=row["order_name"], shop=row["shop"], occurred_at=_utc(row["occurred_at"]),
        decided_at=_utc(row["attributed_at"]),
        status=ConversionStatus.attributed if attributed else ConversionStatus.unattributed,
        rule=rule, agent_id=row["agent_id"], program_id=row["program_id"], winner=winner,
        revenue=decimal_to_text(quantize(row["revenue"], row["currency"])),
        currency=row["currency"], is_new_customer=bool(row["is_new_customer"]),
        explanation=explanation, rejected=shown, explained=bool(row["explanation"]),
    )  # fmt: skip


def order_query(
    tenant_id: str, reach: tuple[str, ...] | None, filters: ConversionFilters
) -> OrderQuery:
    """The store query for `filters` within `reach`. The status filter maps to the rule; an
    agent filter narrows the reach (and so excludes unattributed orders)."""
    after: tuple[datetime, str] | None = None
    if filters.cursor is not None:
        after = decode_keyset(filters.cursor, datetime)
    attributed = None if filters.status is None else filters.status is ConversionStatus.attributed
    return OrderQuery(
        tenant_id=tenant_id, agents=narrow(reach, agent_id=filters.agent_id),
        order=filters.order, program_id=filters.program_id, attributed=attributed,
        start=filters.from_, end=filters.to, after=after, limit=filters.limit,
    )  # fmt: skip


async def list_orders(
    store: DecisionStore,
    tenant_id: str,
    reach: tuple[str, ...] | None,
    filters: ConversionFilters,
    *,
    now: datetime,
) -> ConversionPage:
    rows = await store.orders(order_query(tenant_id, reach, filters), now)
    items = [decision_from(row, reach) for row in rows]
    last = rows[-1] if len(rows) == filters.limit else None
    cursor = encode_keyset(items[-1].occurred_at, items[-1].conversion_id) if last else None
    return ConversionPage(items=items, next_cursor=cursor)


async def get_order(
    store: DecisionStore, tenant_id: str, reach: tuple[str, ...] | None, order_id: str
) -> ConversionDecision:
    row = await store.order(tenant_id, order_id)
    if row is None or (reach is not None and row["agent_id"] not in reach):
        raise NotFound(f"No decided order {order_id!r} in your reach.")
    return decision_from(row, reach)
