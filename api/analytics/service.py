"""Analytics use cases: resolve who may see which agents, ask ClickHouse, shape the answer.

Scoping rule (the same as the core's): a grant on the company's root unit reads the whole
company; other staff grants read the agents of their unit subtrees; an agent grant reads only the
agent rows linked to the caller. Filters narrow that reach and never widen it: an `agent_id` or
`unit_id` outside it (or unknown, or another company's) yields empty results, never an error, so
a filter discloses nothing about what exists outside the caller's reach.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from api.analytics.periods import (
    Bucket,
    PeriodError,
    bucket_starts,
    company_zone,
    epoch_seconds,
    resolve_period,
)
from api.analytics.repository import (
    AnalyticsDirectory,
    AnalyticsStore,
    BucketTotals,
    KeyTotals,
    Question,
)
from api.analytics.schemas import (
    Breakdown,
    BreakdownItem,
    Dimension,
    Metric,
    Point,
    Summary,
    Timeseries,
    TopAgents,
)
from api.errors import BadRequest, Forbidden, Unprocessable
from schemas.conversion import normalise_coupon
from schemas.money import decimal_to_text, quantize

RATIO_PLACES = Decimal("0.0001")  # conversion rate and EPC: four decimal places


@dataclass(frozen=True, slots=True)
class Filters:
    """The common query parameters, as sent."""

    start: datetime | None = None
    end: datetime | None = None
    agent_id: str | None = None
    program_id: str | None = None
    unit_id: str | None = None
    shop: str | None = None
    link_code: str | None = None
    coupon_code: str | None = None


class RangeTooLarge(Unprocessable):
    type = "range-too-large"
    title = "Period too large for the bucket"


# --- pure helpers ---------------------------------------------------------------------------


def narrow(
    reach: tuple[str, ...] | None,
    *,
    agent_id: str | None = None,
    unit_agents: tuple[str, ...] | None = None,
) -> tuple[str, ...] | None:
    """The agents to read: `reach` (`None` = all) narrowed by an agent filter and by the agents
    of a unit filter. Never wider than `reach`."""
    agents = reach
    if agent_id is not None:
        agents = (agent_id,) if agents is None or agent_id in agents else ()
    if unit_agents is not None:
        allowed = set(unit_agents)
        agents = unit_agents if agents is None else tuple(a for a in agents if a in allowed)
    return agents


def money_text(amount: Decimal, currency: str) -> str:
    return decimal_to_text(quantize(amount, currency))


def ratio_text(numerator: Decimal | int, clicks: int) -> str | None:
    """`numerator / clicks` with four decimals (half-even), or `None` without clicks."""
    if clicks == 0:
        return None
    value = (Decimal(numerator) / Decimal(clicks)).quantize(RATIO_PLACES, ROUND_HALF_EVEN)
    return decimal_to_text(value)


def encode_rank_cursor(by: Dimension, sort: Metric, value: Decimal | int, key: str) -> str:
    raw = json.dumps([by.value, sort.value, str(value), key]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_rank_cursor(cursor: str, by: Dimension, sort: Metric) -> tuple[str, str]:
    """(sort value, key) from `encode_rank_cursor`; `BadRequest` if malformed or made for
    another `by`/`sort`."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_by, cursor_sort, value, key = json.loads(raw)
        if not isinstance(value, str) or not isinstance(key, str):
            raise ValueError("cursor fields are not strings")
        number = Decimal(value)
        if not number.is_finite() or (sort in (Metric.clicks, Metric.conversions) and (
            number != number.to_integral_value() or number < 0
        )):  # fmt: skip
            raise ValueError("cursor value does not fit the sort")
    except (ValueError, TypeError, InvalidOperation, binascii.Error) as exc:
        raise BadRequest("Malformed cursor.") from exc
    if (cursor_by, cursor_sort) != (by.value, sort.value):
        raise BadRequest("The cursor belongs to another `by` or `sort`.")
    return value, key


def sort_value(totals: KeyTotals, sort: Metric) -> Decimal | int:
    value: Decimal | int = getattr(totals, sort.value)
    return value


def to_item(totals: KeyTotals, label: str | None, currency: str) -> BreakdownItem:
    return BreakdownItem(
        key=totals.key,
        label=label,
        clicks=totals.clicks,
        conversions=totals.conversions,
        revenue=money_text(totals.revenue, currency),
        commission=money_text(totals.commission, currency),
        epc=ratio_text(totals.commission, totals.clicks),
    )


# --- use cases ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Context:
    """A resolved request: the question for ClickHouse and the company's zone and currency."""

    question: Question
    timezone: str
    currency: str


async def resolve(
    directory: AnalyticsDirectory,
    filters: Filters,
    *,
    now: datetime,
    own_only: bool = False,
) -> Context:
    """The question a caller may ask: `own_only` reads the caller's own agent rows (`Forbidden`
    when no agent is linked to the caller), else everything in the caller's reach."""
    try:
        start, end = resolve_period(filters.start, filters.end, now=now)
    except PeriodError as exc:
        raise Unprocessable(str(exc)) from exc
    reach: tuple[str, ...] | None
    if own_only:
        reach = await directory.own_agents()
        if not reach:
            raise Forbidden("No agent is linked to the caller: /v1/analytics/me is for agents.")
    else:
        reach = await directory.reachable_agents()
    unit_agents = None
    if filters.unit_id is not None:
        unit_agents = await directory.agents_under(filters.unit_id)
    timezone, currency = await directory.company()
    zone = company_zone(timezone)
    question = Question(
        tenant_id=directory.tenant_id,
        start=start,
        end=end,
        agents=narrow(reach, agent_id=filters.agent_id, unit_agents=unit_agents),
        program_id=filters.program_id,
        shop=filters.shop,
        link_code=filters.link_code,
        coupon_code=normalise_coupon(filters.coupon_code) if filters.coupon_code else None,
    )
    return Context(question=question, timezone=zone.key, currency=currency)


async def summary(
    directory: AnalyticsDirectory,
    store: AnalyticsStore,
    filters: Filters,
    *,
    now: datetime,
    own_only: bool = False,
) -> Summary:
    ctx = await resolve(directory, filters, now=now, own_only=own_only)
    totals = await store.totals(ctx.question)
    return Summary(
        from_=ctx.question.start,
        to=ctx.question.end,
        timezone=ctx.timezone,
        currency=ctx.currency,
        clicks=totals.clicks,
        unique_visitors=totals.unique_visitors,
        conversions=totals.conversions,
        conversion_rate=ratio_text(totals.conversions, totals.clicks),
        revenue=money_text(totals.revenue, ctx.currency),
        refunds=totals.refunds,
        refunded_revenue=money_text(totals.refunded_revenue, ctx.currency),
        commission=money_text(totals.commission, ctx.currency),
        epc=ratio_text(totals.commission, totals.clicks),
    )


async def timeseries(
    directory: AnalyticsDirectory,
    store: AnalyticsStore,
    filters: Filters,
    bucket: Bucket,
    *,
    now: datetime,
) -> Timeseries:
    """Every bucket of the period, empty ones as zeros; `RangeTooLarge` past `MAX_BUCKETS`."""
    ctx = await resolve(directory, filters, now=now)
    q = ctx.question
    try:
        starts = bucket_starts(q.start, q.end, bucket, company_zone(ctx.timezone))
    except PeriodError as exc:
        raise RangeTooLarge(str(exc)) from exc
    found = await store.per_bucket(q, bucket.value, ctx.timezone)
    empty = BucketTotals()
    points = []
    for start in starts:
        totals = found.get(epoch_seconds(start), empty)
        points.append(
            Point(
                t=start,
                clicks=totals.clicks,
                conversions=totals.conversions,
                revenue=money_text(totals.revenue, ctx.currency),
                commission=money_text(totals.commission, ctx.currency),
            )
        )
    return Timeseries(
        bucket=bucket,
        timezone=ctx.timezone,
        currency=ctx.currency,
        from_=q.start,
        to=q.end,
        points=points,
    )


async def _labelled(
    directory: AnalyticsDirectory, by: Dimension, rows: list[KeyTotals], currency: str
) -> list[BreakdownItem]:
    labels = await directory.labels(by, [row.key for row in rows])
    return [to_item(row, labels.get(row.key), currency) for row in rows]


async def breakdown(
    directory: AnalyticsDirectory,
    store: AnalyticsStore,
    filters: Filters,
    by: Dimension,
    *,
    sort: Metric = Metric.revenue,
    limit: int,
    cursor: str | None,
    now: datetime,
) -> Breakdown:
    """One page of keys, best `sort` first (ties by key); `next_cursor` continues after the
    last item (keyset on (sort value, key), stable while totals do not change)."""
    after = decode_rank_cursor(cursor, by, sort) if cursor else None
    ctx = await resolve(directory, filters, now=now)
    unit_of = None
    if by is Dimension.unit:
        unit_of = dict(await directory.agent_units(ctx.question.agents))
    rows = await store.ranked(ctx.question, by, sort, limit=limit + 1, after=after, unit_of=unit_of)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = None
    if more:
        last = page[-1]
        next_cursor = encode_rank_cursor(by, sort, sort_value(last, sort), last.key)
    return Breakdown(
        by=by,
        currency=ctx.currency,
        sort=sort,
        items=await _labelled(directory, by, page, ctx.currency),
        next_cursor=next_cursor,
    )


async def top_agents(
    directory: AnalyticsDirectory,
    store: AnalyticsStore,
    filters: Filters,
    metric: Metric,
    *,
    limit: int,
    now: datetime,
) -> TopAgents:
    ctx = await resolve(directory, filters, now=now)
    rows = await store.ranked(ctx.question, Dimension.agent, metric, limit=limit)
    return TopAgents(
        metric=metric,
        currency=ctx.currency,
        items=await _labelled(directory, Dimension.agent, rows, ctx.currency),
    )
