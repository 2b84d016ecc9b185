"""All analytics database access: who may see which agents (PostgreSQL) and the aggregate
queries over the dataflow's tables (ClickHouse).

ClickHouse SQL is assembled from fixed fragments chosen by enums; every value travels as a
server-side parameter (`{name:Type}`), never in the SQL text. Tables are ReplacingMergeTree and
are read with `FINAL`, so replayed or retried rows never count twice.

What the queries count (the same rules for every endpoint, so a tenant's summary equals the sum
of its per-agent breakdown):
- clicks: not bot, not duplicate, with an agent; `unique_visitors` = distinct visitor ids,
  ClickHouse's `uniqCombined(14)` (exact for small sets, then a HyperLogLog estimate within
  about 0.8%; its small fixed-size state is what makes per-day rollups mergeable fast);
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
from api.analytics.periods import Bucket, bucket_starts, company_zone
from api.analytics.rollups import (
    DIMENSIONS,
    GRAINS,
    HOUR_MS,
    VISITORS,
    VISITORS_PRECISION,
    Filters,
    Plan,
    aligned,
    choose_cuboid,
    plan,
    raw_facts,
    raw_plan,
    read_settings,
    read_state,
    rollup_facts,
    state_sql,
    utc_ms,
)
from api.analytics.schemas import Dimension, Metric
from api.authz.policies import Principal, is_root_path, readable_scope
from api.clickhouse import ClickHouseReader
from api.db import ReadSession
from api.models import Agent, Program, Tenant, Unit

PERMISSION = "analytics.read"
_MONEY = "Decimal(38, 12)"


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


def _filters(q: Question) -> Filters:
    return Filters(q.agents, q.program_id, q.shop, q.link_code, q.coupon_code)


def facts_sql(q: Question, where: Plan) -> str:
    """The facts of `q`'s period as `where` splits it (rollup rows, then raw rows), filtered."""
    filters = _filters(q)
    rolled = rollup_facts(where, filters)
    if rolled is not None and not where.raw:
        return rolled  # it applies every filter itself: one subquery less to plan
    parts = [part for part in [rolled] if part is not None]
    parts += raw_facts(where.raw, filters) if where.raw else []
    conditions = filters.conditions(_ALL_DIMENSIONS)
    having = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return "SELECT * FROM (" + "\nUNION ALL\n".join(parts) + f"){having}"


_ALL_DIMENSIONS = {d: d for d in DIMENSIONS}

# No JIT compilation: ClickHouse compiles an expression, aggregate or sort the third time it sees
# it (`min_count_to_compile_*`), inside the query that sees it next, and these queries read at
# most a few ten thousand rows. On the 10M bench data the 4th run of each query took 20-85 ms
# longer (summary 30 d 58 ms against 28-33 for the others, 180 d 134 against about 50, the agent
# breakdown 75 against 33-37); without compilation no run stood out and the medians did not
# grow. The periods' days and gens are constants in the SQL; if the compiled-code cache keys on
# them (not verified), each new period or build would pay the compile again in service.
NO_JIT = (
    " SETTINGS compile_expressions = 0, compile_aggregate_expressions = 0,"
    " compile_sort_description = 0"
)


def _money(column: str) -> str:
    return f"CAST(sum({column}) AS {_MONEY})"


def summary_sql(q: Question, where: Plan) -> str:
    """One row: clicks, unique visitors, conversions, revenue, commission, refunds, refunded."""
    return (
        f"SELECT sum(n_clicks), ifNull({VISITORS}Merge{VISITORS_PRECISION}(visitors), 0),"
        " sum(n_conversions),"
        f" {_money('m_revenue')}, {_money('m_commission')}, sum(n_refunds),"
        f" {_money('m_refunded')} FROM ({facts_sql(q, where)}){NO_JIT}"
        f"{read_settings(where, _filters(q))}"
    )


_INTERVAL = {"minute": "MINUTE", "hour": "HOUR", "day": "DAY"}


def timeseries_sql(q: Question, where: Plan, bucket: str) -> str:
    """Rows (bucket start as UTC epoch seconds, clicks, conversions, revenue, commission);
    needs parameter `tz`."""
    key = (
        f"toInt64(toUnixTimestamp(toStartOfInterval(t, INTERVAL 1 {_INTERVAL[bucket]},"
        " {tz:String})))"
    )
    return (
        f"SELECT {key} AS k, sum(n_clicks), sum(n_conversions), {_money('m_revenue')},"
        f" {_money('m_commission')} FROM ({facts_sql(q, where)}) GROUP BY k{NO_JIT}"
        f"{read_settings(where, _filters(q))}"
    )


_KEY = {
    Dimension.agent: "agent_id",
    Dimension.unit: (
        "transform(assumeNotNull(agent_id), {unit_agents:Array(String)},"
        " {unit_ids:Array(String)}, '')"
    ),
    Dimension.program: "program_id",
    Dimension.shop: "shop",
    Dimension.link: "link_code",
    Dimension.coupon: "coupon_code",
}
_GROUP = {
    Dimension.agent: "agent",
    Dimension.unit: "agent",
    Dimension.program: "program",
    Dimension.shop: "shop",
    Dimension.link: "link",
    Dimension.coupon: "coupon",
}

_SORT_TYPE = {
    Metric.revenue: _MONEY,
    Metric.commission: _MONEY,
    Metric.conversions: "UInt64",
    Metric.clicks: "UInt64",
}


def ranked_sql(q: Question, where: Plan, by: Dimension, sort: Metric, *, after: bool) -> str:
    """Rows (key, clicks, conversions, revenue, commission) per key, best `sort` first, then by
    key; parameters `limit` and, with `after`, `after_value`/`after_key` (keyset). A key is
    listed when it has clicks, conversions or commission entries in the period (refunds alone
    do not list it), as before rollups."""
    having = ""
    if after:
        value = f"{{after_value:{_SORT_TYPE[sort]}}}"
        having = (
            f" AND ({sort.value} < {value} OR ({sort.value} = {value}"
            " AND key > {after_key:String}))"
        )
    return (
        f"SELECT ifNull({_KEY[by]}, '') AS key, sum(n_clicks) AS clicks,"
        f" sum(n_conversions) AS conversions, {_money('m_revenue')} AS revenue,"
        f" {_money('m_commission')} AS commission FROM ({facts_sql(q, where)})"
        " GROUP BY key HAVING key != '' AND clicks + conversions + sum(n_entries) > 0"
        f"{having} ORDER BY {sort.value} DESC, key ASC LIMIT {{limit:UInt32}}{NO_JIT}"
        f"{read_settings(where, _filters(q))}"
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
    in the reporting currency. With `rollups` (the default) each query first asks which hours
    of its period a current rollup covers (`api.analytics.rollups.plan`) and reads those from
    the rollups; without, it reads every raw row (the reference the rollups must equal)."""

    def __init__(self, reader: ClickHouseReader, *, rollups: bool = True) -> None:
        self.reader = reader
        self.rollups = rollups

    async def where(self, q: Question, cuboid: str, grain: str) -> Plan:
        """Where to read `q`'s period from (see `api.analytics.rollups.plan`)."""
        start, end = utc_ms(q.start), utc_ms(q.end)
        first, last = -(-start // HOUR_MS) * HOUR_MS, end // HOUR_MS * HOUR_MS
        if not self.rollups or first >= last or grain not in GRAINS.get(cuboid, ()):
            return raw_plan(start, end)
        rows = await self.reader.query(
            state_sql(first, last) + NO_JIT, {"tenant": q.tenant_id, "first": first, "last": last}
        )
        builds, touches, months = read_state(rows)
        return plan(start, end, cuboid, builds, touches, grain=grain, months=months)

    async def totals(self, q: Question) -> Totals:
        where = await self.where(q, choose_cuboid(_filters(q), None), "d")
        rows = await self.reader.query(summary_sql(q, where), q.parameters() | where.parameters())
        clicks, visitors, conversions, revenue, commission, refunds, refunded = rows[0]
        return Totals(
            clicks=int(clicks),
            unique_visitors=int(visitors),
            conversions=int(conversions),
            revenue=Decimal(revenue),
            commission=Decimal(commission),
            refunds=int(refunds),
            refunded_revenue=Decimal(refunded),
        )

    async def per_bucket(self, q: Question, bucket: str, timezone: str) -> dict[int, BucketTotals]:
        """Totals per bucket start (UTC epoch seconds); buckets without rows are absent. Hour
        and day buckets read hourly rollups when every bucket starts on a UTC hour (not in zones
        with half-hour offsets), minute buckets the minute rollups of the totals."""
        cuboid = choose_cuboid(_filters(q), None)
        grain = "m"
        if bucket != "minute":
            starts = bucket_starts(q.start, q.end, Bucket(bucket), company_zone(timezone))
            grain = "h" if aligned(starts) else "raw"
        where = await self.where(q, cuboid, grain)
        rows = await self.reader.query(
            timeseries_sql(q, where, bucket), q.parameters() | where.parameters() | {"tz": timezone}
        )
        return {
            int(key): BucketTotals(
                clicks=int(clicks),
                conversions=int(conversions),
                revenue=Decimal(revenue),
                commission=Decimal(commission),
            )
            for key, clicks, conversions, revenue, commission in rows
        }

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
        where = await self.where(q, choose_cuboid(_filters(q), _GROUP[by]), "d")
        params = q.parameters() | where.parameters() | {"limit": limit}
        if by is Dimension.unit:
            mapping = dict(unit_of or {})
            params |= {"unit_agents": list(mapping), "unit_ids": list(mapping.values())}
        if after is not None:
            value, key = after
            params |= {"after_value": value, "after_key": key}
        sql = ranked_sql(q, where, by, sort, after=after is not None)
        rows = await self.reader.query(sql, params)
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
