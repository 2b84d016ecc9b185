"""All analytics database access: who may see which agents (PostgreSQL) and the aggregate
queries over the dataflow's tables (ClickHouse).

ClickHouse SQL is assembled from fixed fragments chosen by enums; every value travels as a
server-side parameter (`{name:Type}`), never in the SQL text. Tables are ReplacingMergeTree and
are read with `FINAL`, so replayed or retried rows never count twice.

What the queries count (the same rules for every endpoint, so a tenant's summary equals the sum
of its per-agent breakdown):
- clicks: not bot, not duplicate, with an agent; `unique_visitors` = distinct visitor ids,
  ClickHouse's `uniq` (exact up to 65,536 distinct visitors, then an adaptive-sampling estimate,
  measured within 0.3% on 2.8M: `uniqExact` took 2-3x as long on 3M clicks);
- conversions and revenue: orders attributed to an agent (unattributed orders are not
  referral revenue), by order time, `revenue * fx_rate`;
- commission: the signed ledger entries (accruals, reversals, overrides) by entry time, credited
  to the agent who earns them, `amount * fx_rate`;
- refunds: refunds made in the period, attributed through the conversion of the same order
  (found by order id in `conversion_orders`, a copy of `conversions` sorted by order),
  `amount * (the refund's fx_rate, else the conversion's)`;
- a conversion's link: its `link_code` (the winning click's, written by the dataflow), else, for
  rows without one that cite a click, that click's link from `click_links`.
Scope: `agents=None` reads the whole tenant; a tuple restricts every table to those agents
(commission by the earning agent). Filters on shop, link or coupon reach commission through the
entry's conversion; clicks carry no coupon, so a coupon filter leaves no clicks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, select

from api.agents.repository import agent_scope_clause
from api.analytics.schemas import Dimension, Metric
from api.authz.policies import Principal, is_root_path, readable_scope
from api.clickhouse import ClickHouseReader
from api.db import ReadSession
from api.models import Agent, Program, Tenant, Unit

PERMISSION = "analytics.read"
_MONEY = "Decimal(38, 12)"
_ZERO = f"CAST(0 AS {_MONEY})"


# --- PostgreSQL: reach and labels ----------------------------------------------------------


class AnalyticsDirectory:
    """The company settings, agent reach and display names analytics needs, for one principal."""

    def __init__(self, session: ReadSession, principal: Principal) -> None:
        self.session = session
        self.principal = principal
        self.tenant_id = principal.tenant_id

    async def company(self) -> tuple[str, str]:
        """(time zone, reporting currency) of the caller's company."""
        row = (
            await self.session.execute(
                select(Tenant.timezone, Tenant.currency).where(Tenant.id == self.tenant_id)
            )
        ).one()
        return row[0], row[1]

    async def reachable_agents(self) -> tuple[str, ...] | None:
        """The agents whose rows the caller may read: `None` = the whole company (a grant on the
        root unit), else the agents in the caller's subtrees plus, for agent grants, their own."""
        scope = readable_scope(self.principal, PERMISSION)
        if scope.empty:
            return ()
        if any(is_root_path(path) for path in scope.subtree_paths):
            return None
        statement = (
            select(Agent.id)
            .outerjoin(Unit, Unit.id == Agent.unit_id)
            .where(Agent.tenant_id == self.tenant_id, agent_scope_clause(self.principal, scope))
        )
        return tuple(sorted((await self.session.scalars(statement)).all()))

    async def own_agents(self) -> tuple[str, ...]:
        """The agent rows linked to the calling user (none for API keys)."""
        if self.principal.user_id is None:
            return ()
        statement = select(Agent.id).where(
            Agent.tenant_id == self.tenant_id, Agent.user_id == self.principal.user_id
        )
        return tuple(sorted((await self.session.scalars(statement)).all()))

    async def agents_under(self, unit_id: str) -> tuple[str, ...]:
        """The company's agents in `unit_id`'s subtree (none for an unknown unit)."""
        path = await self.session.scalar(
            select(Unit.path).where(Unit.id == unit_id, Unit.tenant_id == self.tenant_id)
        )
        if path is None:
            return ()
        statement = (
            select(Agent.id)
            .join(Unit, Unit.id == Agent.unit_id)
            .where(Agent.tenant_id == self.tenant_id, Unit.path.startswith(path, autoescape=True))
        )
        return tuple(sorted((await self.session.scalars(statement)).all()))

    async def agent_units(self, agents: tuple[str, ...] | None) -> list[tuple[str, str]]:
        """(agent id, unit id) of the given agents (`None`: every agent) that have a unit."""
        statement = select(Agent.id, Agent.unit_id).where(
            Agent.tenant_id == self.tenant_id, Agent.unit_id.is_not(None)
        )
        if agents is not None:
            statement = statement.where(Agent.id.in_(agents))
        return [(a, u) for a, u in (await self.session.execute(statement)).all()]

    async def labels(self, by: Dimension, keys: Sequence[str]) -> dict[str, str]:
        """Display names of the keys: agent and program names, unit names; none for the others."""
        if not keys:
            return {}
        column: Any
        if by is Dimension.agent:
            column, key = Agent.name, Agent.id
            tenant = Agent.tenant_id
        elif by is Dimension.unit:
            column, key, tenant = Unit.name, Unit.id, Unit.tenant_id
        elif by is Dimension.program:
            column, key, tenant = Program.name, Program.id, Program.tenant_id
        else:
            return {}
        rows = await self.session.execute(
            select(key, column).where(and_(tenant == self.tenant_id, key.in_(list(keys))))
        )
        return {str(k): str(v) for k, v in rows.all()}


# --- ClickHouse: aggregates -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Question:
    """What every analytics query is restricted to: the tenant, [start, end) in UTC, the agents
    in reach (`None` = all) and the optional equality filters."""

    tenant_id: str
    start: datetime
    end: datetime
    agents: tuple[str, ...] | None = None
    program_id: str | None = None
    shop: str | None = None
    link_code: str | None = None
    coupon_code: str | None = None

    @property
    def via_conversion(self) -> bool:
        """Whether a filter needs an entry's conversion (shop, link, coupon)."""
        return any(v is not None for v in (self.shop, self.link_code, self.coupon_code))

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "tenant": self.tenant_id,
            "start_ms": int(self.start.timestamp() * 1000),
            "end_ms": int(self.end.timestamp() * 1000),
        }
        optional = {
            "agents": list(self.agents) if self.agents is not None else None,
            "program": self.program_id,
            "shop": self.shop,
            "link": self.link_code,
            "coupon": self.coupon_code,
        }
        return params | {k: v for k, v in optional.items() if v is not None}


_PERIOD = (
    "{p}occurred_at >= fromUnixTimestamp64Milli({{start_ms:Int64}}, 'UTC')"
    " AND {p}occurred_at < fromUnixTimestamp64Milli({{end_ms:Int64}}, 'UTC')"
)


def _all(conditions: list[str]) -> str:
    return " AND ".join(conditions)


def clicks_where(q: Question, p: str = "") -> str:
    conditions = [
        f"{p}tenant_id = {{tenant:String}}",
        _PERIOD.format(p=p),
        f"{p}agent_id IS NOT NULL",
        f"NOT {p}is_bot",
        f"NOT {p}is_duplicate",
    ]
    if q.agents is not None:
        conditions.append(f"{p}agent_id IN {{agents:Array(String)}}")
    if q.program_id is not None:
        conditions.append(f"{p}program_id = {{program:String}}")
    if q.shop is not None:
        conditions.append(f"{p}shop = {{shop:String}}")
    if q.link_code is not None:
        conditions.append(f"{p}link_code = {{link:String}}")
    if q.coupon_code is not None:
        conditions.append("false")  # clicks carry no coupon
    return _all(conditions)


def _unlinked_clicks(table: str, timed: bool) -> str:
    """Click ids of the `table` rows that cite a click but carry no `link_code` (written before
    ClickHouse 0004, or re-emitted from a decision restored from an older recovery snapshot)."""
    period = f" AND {_PERIOD.format(p='')}" if timed else ""
    return (
        f"SELECT click_id FROM {table} WHERE tenant_id = {{tenant:String}}{period}"
        " AND link_code IS NULL AND click_id IS NOT NULL"
    )


def _fallback_links(table: str, timed: bool) -> str:
    """(click_id, link_code) from `click_links` for the rows `_unlinked_clicks` lists; usually
    none, and then the lookup reads no granule (click id leads `click_links`' key)."""
    return (
        "SELECT click_id, link_code FROM click_links FINAL WHERE tenant_id = {tenant:String}"
        f" AND click_id IN ({_unlinked_clicks(table, timed)})"
    )


def conversions_where(q: Question, p: str = "", *, timed: bool = True, scoped: bool = True) -> str:
    """Conditions on `conversions` (or, untimed, on `conversion_orders`, same columns)."""
    conditions = [f"{p}tenant_id = {{tenant:String}}", f"{p}agent_id IS NOT NULL"]
    if timed:
        conditions.append(_PERIOD.format(p=p))
    if scoped and q.agents is not None:
        conditions.append(f"{p}agent_id IN {{agents:Array(String)}}")
    if q.program_id is not None:
        conditions.append(f"{p}program_id = {{program:String}}")
    if q.shop is not None:
        conditions.append(f"{p}shop = {{shop:String}}")
    if q.coupon_code is not None:
        conditions.append(f"{p}coupon_code = {{coupon:String}}")
    if q.link_code is not None:
        table = "conversions" if timed else "conversion_orders"
        conditions.append(
            f"({p}link_code = {{link:String}} OR ({p}link_code IS NULL AND {p}click_id IN"
            f" (SELECT click_id FROM ({_fallback_links(table, timed)})"
            " WHERE link_code = {link:String})))"
        )
    return _all(conditions)


def _orders_in_period(table: str) -> str:
    return (
        f"SELECT order_id FROM {table} WHERE tenant_id = {{tenant:String}}"
        f" AND {_PERIOD.format(p='')}"
    )


def commission_where(q: Question, p: str = "") -> str:
    conditions = [f"{p}tenant_id = {{tenant:String}}", _PERIOD.format(p=p)]
    if q.agents is not None:
        conditions.append(f"{p}agent_id IN {{agents:Array(String)}}")
    if q.program_id is not None:
        conditions.append(f"{p}program_id = {{program:String}}")
    if q.via_conversion:
        # The entry's conversion decides shop/link/coupon, whoever earns the entry; looked up by
        # order id (the key of `conversion_orders`) for the orders with entries in the period.
        conditions.append(
            f"{p}order_id IN (SELECT order_id FROM conversion_orders FINAL WHERE "
            f"{conversions_where(q, timed=False, scoped=False)}"
            f" AND order_id IN ({_orders_in_period('commission_events')}))"
        )
    return _all(conditions)


def _money(amount: str, rate: str) -> str:
    return f"CAST(sum(toDecimal128({amount}, 4) * {rate}) AS {_MONEY})"


def refunds_from(q: Question) -> str:
    """(refund rows in the period) joined to (their orders' conversions in reach)."""
    return (
        "(SELECT order_id, amount, fx_rate FROM refunds FINAL WHERE tenant_id = {tenant:String}"
        f" AND {_PERIOD.format(p='')}) AS r"
        " INNER JOIN (SELECT order_id, fx_rate AS conversion_fx FROM conversion_orders FINAL"
        f" WHERE {conversions_where(q, timed=False)}"
        f" AND order_id IN ({_orders_in_period('refunds')})) AS c ON r.order_id = c.order_id"
    )


# One row per part: (part, n, u, money)
def summary_sql(q: Question) -> str:
    return "\nUNION ALL\n".join(
        [
            "SELECT 'clicks' AS part, count() AS n, uniq(visitor_id) AS u,"
            f" {_ZERO} AS m FROM clicks FINAL WHERE {clicks_where(q)}",
            "SELECT 'conversions', count(), toUInt64(0),"
            f" {_money('revenue', 'fx_rate')} FROM conversions FINAL WHERE {conversions_where(q)}",
            "SELECT 'commission', count(), toUInt64(0),"
            f" {_money('amount', 'fx_rate')} FROM commission_events FINAL"
            f" WHERE {commission_where(q)}",
            "SELECT 'refunds', count(), toUInt64(0),"
            f" {_money('r.amount', 'coalesce(r.fx_rate, c.conversion_fx)')} FROM {refunds_from(q)}",
        ]
    )


_INTERVAL = {"minute": "MINUTE", "hour": "HOUR", "day": "DAY"}


def timeseries_sql(q: Question, bucket: str) -> str:
    """Rows (part, bucket start as UTC epoch seconds, n, money); needs parameter `tz`."""
    key = (
        f"toInt64(toUnixTimestamp(toStartOfInterval({{p}}occurred_at, INTERVAL 1 "
        f"{_INTERVAL[bucket]}, {{{{tz:String}}}})))"
    )
    return "\nUNION ALL\n".join(
        [
            f"SELECT 'clicks' AS part, {key.format(p='')} AS k, count() AS n, {_ZERO} AS m"
            f" FROM clicks FINAL WHERE {clicks_where(q)} GROUP BY k",
            f"SELECT 'conversions', {key.format(p='')} AS k, count(),"
            f" {_money('revenue', 'fx_rate')} FROM conversions FINAL"
            f" WHERE {conversions_where(q)} GROUP BY k",
            f"SELECT 'commission', {key.format(p='')} AS k, toUInt64(0),"
            f" {_money('amount', 'fx_rate')} FROM commission_events FINAL"
            f" WHERE {commission_where(q)} GROUP BY k",
        ]
    )


# Dimension columns on each table; None = the table has no such column.
_UNIT = (
    "transform(assumeNotNull({p}agent_id), {{unit_agents:Array(String)}},"
    " {{unit_ids:Array(String)}}, '')"
)
_DIRECT: dict[Dimension, tuple[str | None, str | None, str | None]] = {
    # (clicks, conversions, commission_events)
    Dimension.agent: ("{p}agent_id", "{p}agent_id", "{p}agent_id"),
    Dimension.program: ("{p}program_id", "{p}program_id", "{p}program_id"),
    Dimension.unit: (_UNIT, _UNIT, _UNIT),
    Dimension.shop: ("{p}shop", "{p}shop", None),
    Dimension.coupon: (None, "{p}coupon_code", None),
    Dimension.link: ("{p}link_code", None, None),  # conversions: link_code, else by click
}


def _order_keys(by: Dimension, orders: str) -> str:
    """(order_id, key) of the orders listed by the subquery `orders`, for the dimensions that
    commission entries only reach through their order's conversion (shop, coupon, link)."""
    if by is Dimension.link:
        return (
            "SELECT o.order_id AS order_id, ifNull(o.link_code, l.link_code) AS key FROM"
            " (SELECT order_id, click_id, link_code FROM conversion_orders FINAL"
            f" WHERE tenant_id = {{tenant:String}} AND order_id IN ({orders})"
            " AND (link_code IS NOT NULL OR click_id IS NOT NULL)) AS o"
            f" LEFT JOIN ({_fallback_links('conversion_orders', timed=False)}) AS l"
            " ON o.click_id = l.click_id"
        )
    column = "shop" if by is Dimension.shop else "coupon_code"
    return (
        f"SELECT order_id, {column} AS key FROM conversion_orders FINAL"
        f" WHERE tenant_id = {{tenant:String}} AND order_id IN ({orders})"
        f" AND {column} IS NOT NULL"
    )


def _branches(q: Question, by: Dimension) -> list[str]:
    """Rows (part, key, n, money) of clicks, conversions and commission per key."""
    on_clicks, on_conversions, on_commission = _DIRECT[by]
    branches = []
    if on_clicks is not None:
        key = on_clicks.format(p="")
        branches.append(
            f"SELECT 'clicks' AS part, ifNull({key}, '') AS key, count() AS n, {_ZERO} AS m"
            f" FROM clicks FINAL WHERE {clicks_where(q)} GROUP BY key"
        )
    if on_conversions is not None:
        key = on_conversions.format(p="")
        branches.append(
            f"SELECT 'conversions' AS part, ifNull({key}, '') AS key, count() AS n,"
            f" {_money('revenue', 'fx_rate')} AS m FROM conversions FINAL"
            f" WHERE {conversions_where(q)} GROUP BY key"
        )
    else:  # by link: the row's link_code, else its click's link looked up by click id
        branches.append(
            "SELECT 'conversions' AS part, ifNull(c.link_code, ck.link_code) AS key,"
            f" count() AS n, {_money('c.revenue', 'c.fx_rate')} AS m FROM conversions AS c FINAL"
            f" LEFT JOIN ({_fallback_links('conversions', timed=True)}) AS ck"
            f" ON c.click_id = ck.click_id WHERE {conversions_where(q, 'c.')} GROUP BY key"
        )
    if on_commission is not None:
        key = on_commission.format(p="")
        branches.append(
            f"SELECT 'commission' AS part, ifNull({key}, '') AS key, toUInt64(0) AS n,"
            f" {_money('amount', 'fx_rate')} AS m FROM commission_events FINAL"
            f" WHERE {commission_where(q)} GROUP BY key"
        )
    else:
        orders = f"SELECT order_id FROM commission_events WHERE {commission_where(q)}"
        branches.append(
            "SELECT 'commission' AS part, ck.key AS key, toUInt64(0) AS n,"
            f" {_money('e.amount', 'e.fx_rate')} AS m FROM commission_events AS e FINAL"
            f" INNER JOIN ({_order_keys(by, orders)}) AS ck"
            f" ON e.order_id = ck.order_id WHERE {commission_where(q, 'e.')}"
            " GROUP BY key"
        )
    return branches


_SORT_TYPE = {
    Metric.revenue: _MONEY,
    Metric.commission: _MONEY,
    Metric.conversions: "UInt64",
    Metric.clicks: "UInt64",
}


def ranked_sql(q: Question, by: Dimension, sort: Metric, *, after: bool) -> str:
    """Rows (key, clicks, conversions, revenue, commission) per key, best `sort` first, then by
    key; parameters `limit` and, with `after`, `after_value`/`after_key` (keyset)."""
    union = "\nUNION ALL\n".join(_branches(q, by))
    having = ""
    if after:
        value = f"{{after_value:{_SORT_TYPE[sort]}}}"
        having = (
            f" HAVING {sort.value} < {value} OR ({sort.value} = {value}"
            " AND key > {after_key:String})"
        )
    return (
        "SELECT key, sumIf(n, part = 'clicks') AS clicks,"
        " sumIf(n, part = 'conversions') AS conversions,"
        f" CAST(sumIf(m, part = 'conversions') AS {_MONEY}) AS revenue,"
        f" CAST(sumIf(m, part = 'commission') AS {_MONEY}) AS commission"
        f" FROM ({union}) WHERE key != '' GROUP BY key{having}"
        f" ORDER BY {sort.value} DESC, key ASC LIMIT {{limit:UInt32}}"
    )


@dataclass(frozen=True, slots=True)
class Totals:
    clicks: int = 0
    unique_visitors: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)
    refunds: int = 0
    refunded_revenue: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class BucketTotals:
    clicks: int = 0
    conversions: int = 0
    revenue: Decimal = Decimal(0)
    commission: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class KeyTotals:
    key: str
    clicks: int
    conversions: int
    revenue: Decimal
    commission: Decimal


class AnalyticsStore:
    """The aggregate queries, over a `ClickHouseReader`. Money comes back unrounded (scale 12)
    in the reporting currency."""

    def __init__(self, reader: ClickHouseReader) -> None:
        self.reader = reader

    async def totals(self, q: Question) -> Totals:
        rows = await self.reader.query(summary_sql(q), q.parameters())
        parts = {row[0]: row for row in rows}
        clicks, conversions = parts["clicks"], parts["conversions"]
        commission, refunds = parts["commission"], parts["refunds"]
        return Totals(
            clicks=int(clicks[1]),
            unique_visitors=int(clicks[2]),
            conversions=int(conversions[1]),
            revenue=Decimal(conversions[3]),
            commission=Decimal(commission[3]),
            refunds=int(refunds[1]),
            refunded_revenue=Decimal(refunds[3]),
        )

    async def per_bucket(self, q: Question, bucket: str, timezone: str) -> dict[int, BucketTotals]:
        """Totals per bucket start (UTC epoch seconds); buckets without rows are absent."""
        rows = await self.reader.query(timeseries_sql(q, bucket), q.parameters() | {"tz": timezone})
        found: dict[int, dict[str, Any]] = {}
        for part, key, n, money in rows:
            slot = found.setdefault(int(key), {})
            if part == "clicks":
                slot["clicks"] = int(n)
            elif part == "conversions":
                slot["conversions"], slot["revenue"] = int(n), Decimal(money)
            else:
                slot["commission"] = Decimal(money)
        return {key: BucketTotals(**values) for key, values in found.items()}

    async def ranked(
        self,
        q: Question,
        by: Dimension,
        sort: Metric,
        *,
        limit: int,
        after: tuple[str, str] | None = None,
        unit_of: Mapping[str, str] | None = None,
    ) -> list[KeyTotals]:
        """Up to `limit` keys, best `sort` first; `after` = (sort value, key) of the previous
        page's last item; `unit_of` maps agents to units (for `by=unit`)."""
        params = q.parameters() | {"limit": limit}
        if by is Dimension.unit:
            mapping = dict(unit_of or {})
            params |= {"unit_agents": list(mapping), "unit_ids": list(mapping.values())}
        if after is not None:
            value, key = after
            params |= {"after_value": value, "after_key": key}
        rows = await self.reader.query(ranked_sql(q, by, sort, after=after is not None), params)
        return [
            KeyTotals(
                key=str(key),
                clicks=int(clicks),
                conversions=int(conversions),
                revenue=Decimal(revenue),
                commission=Decimal(commission),
            )
            for key, clicks, conversions, revenue, commission in rows
        ]
