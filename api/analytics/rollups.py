"""Analytics rollups: where each part of a period is read from, and how rollups are built.

Every analytics query aggregates one stream of **facts**: rows of (time, agent, program, shop,
link, coupon) with the measures (clicks, a mergeable state of their distinct visitors,
conversions, revenue, commission entries and amount, refunds and refunded revenue). Facts come
from two sources:
- **raw rows**, read with `FINAL` (so replayed or retried rows count once), pre-grouped per minute;
- the **rollups** table (`rollups_v2`, `deploy/clickhouse/0007_rollups.sql` and
  `0009_rollups_v2.sql`): the same facts summed per UTC hour or day (minute too, for totals) in
  "cuboids" that keep one or all dimensions.

`plan` splits a period into the UTC days and hours a current rollup covers and the ranges left
to raw rows (the period's partial first and last hours, the open hour, hours touched since
their build). An hour is current when the build of its day covers it and ran after the latest
insert of a row in it (`rollup_touches`, fed by materialized views on every raw table), so a
late, retried or replayed row makes its hour read raw until the next build. Rollups are read
only for the gen `rollup_builds_v2` names, so a build in progress is never mixed in.

`build` rebuilds the stale closed hours of a day from raw rows with `FINAL`, into a new gen, and
then registers that gen: replays and duplicates are deduplicated by `FINAL`, never added to an
existing sum. Both paths share the facts SQL, so an answer read from rollups equals the answer
read from raw rows (`tests/api/test_analytics_rollups.py` checks every endpoint's query).

A refund counts under its order's conversion (agent, program, shop, coupon, link): the raw
refunds rows come straight from the webhook, before any decision, so they are attributed when
read — at build time for closed hours (by order id, the key of `conversion_orders`, for one
day's refunds) and for the raw ranges of a query (the few refunds of those ranges).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
# The rollup rows and the registry of the current build of each day (ClickHouse 0009: 32-row
# granules and a projection sorted by key; 0007's `rollups` / `rollup_builds` are no longer read).
ROLLUPS = "rollups_v2"
BUILDS = "rollup_builds_v2"
# Month rows (ClickHouse 0010): one row per tenant and whole UTC month of the cuboids in
# `MONTH_CUBOIDS`, summed from that month's current day rows, and the registry of the day gens
# each month row summed. A month row is read only while every day of its month is read from day
# rows under exactly those gens (see `plan`).
MONTHS = "rollup_months"
MONTH = "mon"  # the grain of month rows
# The totals only: a month row merges a whole month of visitor states into one, so a 180-day
# summary merges ~6 month states and the edge days instead of 180 day states. Per agent (or any
# other key) it would hold a month of that key's visitors for each key: bytes, not fewer reads.
MONTH_CUBOIDS = ("total",)
# The agent cuboid's rows again, sorted by (tenant, grain, agent, bucket) (ClickHouse 0011): a
# query narrowed on agents (a manager's or an agent's reach) reads them from here, each agent's
# days side by side, with one index analysis and no projection to weigh. The builder copies a
# day's agent rows here after writing them to `ROLLUPS` and registers their gen as the day's
# `agent_gen` with the day's build; a day without one (built before 0011, or by a builder of the
# previous version) is read from `ROLLUPS`, and the builder copies it here on its next pass.
AGENT_ROLLUPS = "rollup_agents"
AGENT_CUBOID = "agent"

DIMENSIONS = ("agent_id", "program_id", "shop", "link_code", "coupon_code")
# single-dimension cuboid → the dimension it keeps ("total" keeps none)
SINGLE = {"agent": "agent_id", "program": "program_id", "shop": "shop", "link": "link_code",
          "coupon": "coupon_code"}  # fmt: skip
# Hour rows for the totals and per agent (the reach of managers and agents), day rows for every
# cuboid: a query filtering on two dimensions, or on shop, link, coupon or program over partial
# days, reads the rest from raw rows ("full": no rollup).
GRAINS: dict[str, tuple[str, ...]] = {
    "total": ("m", "h", "d"),
    "agent": ("h", "d"),
    "program": ("d",),
    "shop": ("d",),
    "link": ("d",),
    "coupon": ("d",),
}

# Every part of the facts stream has these columns, in this order.
FACT_COLUMNS = (
    "t", *DIMENSIONS, "n_clicks", "visitors", "n_conversions", "m_revenue", "n_entries",
    "m_commission", "n_refunds", "m_refunded",
)  # fmt: skip
_MONEY = "Decimal(38, 12)"
_ZERO = f"CAST(0 AS {_MONEY})"
# Distinct visitors: HyperLogLog-based `uniqCombined(14)` (exact for small sets, then within
# about 0.8%), whose fixed 12 KiB state merges fast: a 30-day total merges 30 day states, which
# `uniq`'s states (up to 256 KiB each at 100k visitors a day) made cost 20-80 ms.
VISITORS, VISITORS_PRECISION = "uniqCombined", "(14)"
_NO_VISITORS = f"{VISITORS}State{VISITORS_PRECISION}(CAST(NULL AS Nullable(String)))"
_S = "Nullable(String)"


def _text(column: str) -> str:
    return f"CAST({column} AS {_S})"


def _minute(column: str) -> str:
    return f"toDateTime(toStartOfMinute({column}), 'UTC')"


def _amount(amount: str, rate: str) -> str:
    return f"CAST(sum(toDecimal128({amount}, 4) * {rate}) AS {_MONEY})"


# --- filters --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filters:
    """Equality filters on the facts (`None`: not filtered); `agents` is the reach."""

    agents: tuple[str, ...] | None = None
    program_id: str | None = None
    shop: str | None = None
    link_code: str | None = None
    coupon_code: str | None = None

    def dimensions(self) -> set[str]:
        """The cuboid dimensions the filters need."""
        values = {
            "agent": self.agents,
            "program": self.program_id,
            "shop": self.shop,
            "link": self.link_code,
            "coupon": self.coupon_code,
        }
        return {name for name, value in values.items() if value is not None}

    def conditions(self, columns: Mapping[str, str | None]) -> list[str]:
        """SQL conditions on the given columns (dimension → column, `None` = the source has no
        such column: a filter on it matches nothing). Values are server-side parameters."""
        wanted = (
            ("agent_id", self.agents, "{agents:Array(String)}", "IN"),
            ("program_id", self.program_id, "{program:String}", "="),
            ("shop", self.shop, "{shop:String}", "="),
            ("link_code", self.link_code, "{link:String}", "="),
            ("coupon_code", self.coupon_code, "{coupon:String}", "="),
        )
        out = []
        for dimension, value, placeholder, op in wanted:
            if value is None or dimension not in columns:
                continue
            column = columns[dimension]
            out.append("false" if column is None else f"{column} {op} {placeholder}")
        return out


_ALL: dict[str, str | None] = {d: d for d in DIMENSIONS}
_COUNTED_CLICKS = ("agent_id IS NOT NULL", "NOT is_bot", "NOT is_duplicate")


def choose_cuboid(filters: Filters, group: str | None) -> str:
    """The smallest cuboid that has every dimension the query filters or groups by."""
    needed = filters.dimensions() | ({group} if group is not None else set())
    if not needed:
        return "total"
    if len(needed) == 1:
        return next(iter(needed))
    return "full"


# --- raw facts ------------------------------------------------------------------------------


def ranges_sql(ranges: Sequence[tuple[int, int]], p: str = "") -> str:
    """`occurred_at` in any of the [start, end) ms ranges (parameters `r{i}a`, `r{i}b`)."""
    parts = [
        f"({p}occurred_at >= fromUnixTimestamp64Milli({{r{i}a:Int64}}, 'UTC')"
        f" AND {p}occurred_at < fromUnixTimestamp64Milli({{r{i}b:Int64}}, 'UTC'))"
        for i in range(len(ranges))
    ]
    return "(" + " OR ".join(parts) + ")" if parts else "false"


def ranges_parameters(ranges: Sequence[tuple[int, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, (start, end) in enumerate(ranges):
        out[f"r{i}a"], out[f"r{i}b"] = start, end
    return out


def _where(conditions: Iterable[str]) -> str:
    return " AND ".join(conditions)


def raw_facts(ranges: Sequence[tuple[int, int]], filters: Filters) -> list[str]:
    """SELECTs of the facts of the raw rows in `ranges` (parameters: `tenant`, the ranges'),
    per minute. `filters` are pushed down where a table has the column (the caller filters the
    facts again). Counted as the raw queries always did: clicks not bot, not duplicate, with an
    agent; conversions attributed to an agent, `revenue * fx_rate`; commission entries by entry
    time, `amount * fx_rate`; refunds by refund time under their order's attributed conversion,
    `amount * (refund rate, else the conversion's)`. A conversion's link: its `link_code`, else
    (rows written before ClickHouse 0004) its click's link from `click_links`."""
    within = ranges_sql(ranges)
    tenant = "tenant_id = {tenant:String}"
    clicks = filters.conditions(
        {"agent_id": "agent_id", "program_id": "program_id", "shop": "shop",
         "link_code": "link_code", "coupon_code": None}
    )  # fmt: skip
    click_part = (
        f"SELECT {_minute('occurred_at')} AS t, {_text('agent_id')} AS agent_id,"
        f" {_text('program_id')} AS program_id, {_text('shop')} AS shop,"
        f" {_text('link_code')} AS link_code, {_text('NULL')} AS coupon_code,"
        f" count() AS n_clicks, {VISITORS}State{VISITORS_PRECISION}(visitor_id) AS visitors,"
        f" toUInt64(0) AS n_conversions, {_ZERO} AS m_revenue, toUInt64(0) AS n_entries,"
        f" {_ZERO} AS m_commission, toUInt64(0) AS n_refunds, {_ZERO} AS m_refunded"
        f" FROM clicks FINAL WHERE {_where([tenant, within, *_COUNTED_CLICKS, *clicks])}"
        " GROUP BY t, agent_id, program_id, shop, link_code"
    )
    unlinked = (
        f"SELECT click_id FROM conversions WHERE {tenant} AND {within}"
        " AND link_code IS NULL AND click_id IS NOT NULL"
    )
    conversions = [
        "c.agent_id IS NOT NULL",
        *filters.conditions(
            {"agent_id": "c.agent_id", "program_id": "c.program_id", "shop": "c.shop",
             "coupon_code": "c.coupon_code"}
        ),
    ]  # fmt: skip
    conversion_part = (
        f"SELECT {_minute('c.occurred_at')} AS t, {_text('c.agent_id')} AS a,"
        f" {_text('c.program_id')} AS p, {_text('c.shop')} AS s,"
        f" nullIf({_text('ifNull(c.link_code, ck.link_code)')}, '') AS l,"
        f" {_text('c.coupon_code')} AS cc, toUInt64(0), {_NO_VISITORS}, count(),"
        f" {_amount('c.revenue', 'c.fx_rate')}, toUInt64(0), {_ZERO}, toUInt64(0), {_ZERO}"
        " FROM conversions AS c FINAL LEFT JOIN (SELECT click_id, link_code FROM click_links FINAL"
        f" WHERE {tenant} AND click_id IN ({unlinked})) AS ck ON c.click_id = ck.click_id"
        f" WHERE {_where([f'c.{tenant}', ranges_sql(ranges, 'c.'), *conversions])}"
        " GROUP BY t, a, p, s, l, cc"
    )
    entries = filters.conditions(_ALL)
    commission_part = (
        f"SELECT {_minute('occurred_at')} AS t, {_text('agent_id')}, {_text('program_id')},"
        f" {_text('shop')}, {_text('link_code')}, {_text('coupon_code')}, toUInt64(0),"
        f" {_NO_VISITORS}, toUInt64(0), {_ZERO}, count(), {_amount('amount', 'fx_rate')},"
        f" toUInt64(0), {_ZERO}"
        f" FROM commission_events FINAL WHERE {_where([tenant, within, *entries])}"
        " GROUP BY t, agent_id, program_id, shop, link_code, coupon_code"
    )
    refund_orders = f"SELECT order_id FROM refunds WHERE {tenant} AND {within}"
    orders = filters.conditions(
        {"agent_id": "o.agent_id", "program_id": "o.program_id", "shop": "o.shop",
         "coupon_code": "o.coupon_code"}
    )  # fmt: skip
    refund_part = (
        f"SELECT {_minute('r.occurred_at')} AS t, c.a, c.p, c.s, c.l, c.cc, toUInt64(0),"
        f" {_NO_VISITORS}, toUInt64(0), {_ZERO}, toUInt64(0), {_ZERO}, count(),"
        f" {_amount('r.amount', 'coalesce(r.fx_rate, c.fx)')}"
        " FROM (SELECT order_id, occurred_at, amount, fx_rate FROM refunds FINAL"
        f" WHERE {tenant} AND {within}) AS r"
        f" INNER JOIN (SELECT o.order_id AS order_id, {_text('o.agent_id')} AS a,"
        f" {_text('o.program_id')} AS p, {_text('o.shop')} AS s,"
        f" nullIf({_text('ifNull(o.link_code, ol.link_code)')}, '') AS l,"
        f" {_text('o.coupon_code')} AS cc, o.fx_rate AS fx"
        " FROM conversion_orders AS o FINAL LEFT JOIN (SELECT click_id, link_code"
        f" FROM click_links FINAL WHERE {tenant} AND click_id IN (SELECT click_id"
        f" FROM conversion_orders WHERE {tenant} AND order_id IN ({refund_orders})"
        " AND link_code IS NULL AND click_id IS NOT NULL)) AS ol ON o.click_id = ol.click_id"
        f" WHERE {_where([f'o.{tenant}', 'o.agent_id IS NOT NULL', *orders])}"
        f" AND o.order_id IN ({refund_orders})) AS c ON r.order_id = c.order_id"
        " GROUP BY t, c.a, c.p, c.s, c.l, c.cc"
    )
    return [click_part, conversion_part, commission_part, refund_part]


# --- rollup facts ---------------------------------------------------------------------------


_SINGLE_KEY = {
    "agent": "agents",
    "program": "program",
    "shop": "shop",
    "link": "link",
    "coupon": "coupon",
}


def _narrows_on_key(plan: Plan, filters: Filters) -> bool:
    """Whether the rollup rows of `plan` are narrowed on `k` (the query filters on the key of
    its single-dimension cuboid)."""
    if plan.cuboid not in SINGLE:
        return False
    return getattr(filters, "agents" if plan.cuboid == "agent" else SINGLE[plan.cuboid]) is not None


def read_settings(plan: Plan, filters: Filters) -> str:
    """Query settings (a `, name = value` list to append to a SETTINGS clause) for reading the
    rollup rows of `plan`; they change how rows are found, never which rows. Measured on the
    10M bench (2026-12-07, `README` "Analytics rollups"):
    - not narrowed on `k`: no projection. `by_key` (sorted by key, then bucket) can only help a
      read that filters on the key; otherwise the table's own order (bucket, then key) reads
      at most as many granules, and weighing the projection cost ClickHouse 0.5-3 ms a query;
    - narrowed on `k` and no raw rows: no PREWHERE. The projection's ranges are the keys' own
      rows, so reading the filter columns first filters little and costs 1-2 ms (not done for
      the other reads: the 180-day summary's few rows sit among hour rows whose large visitor
      states PREWHERE spares it)."""
    if not (plan.days or plan.hours or plan.months):
        return ""
    if not _narrows_on_key(plan, filters):
        return ", optimize_use_projections = 0"
    return "" if plan.raw else ", optimize_move_to_prewhere = 0"


def reads_agent_table(plan: Plan, filters: Filters) -> bool:
    """Whether the rollup rows of `plan` are read from `AGENT_ROLLUPS`: a read of the agent
    cuboid narrowed on agents, whose every day and hour has its agent rows there."""
    return bool(plan.agent_gens) and plan.cuboid == AGENT_CUBOID and filters.agents is not None


def rollup_facts(plan: Plan, filters: Filters) -> str | None:
    """The SELECT of the rollup rows `plan` reads (parameters `cuboid`, `gens`, `r_days`,
    `r_days_g`, `r_hours`, `r_hours_g`, and `r_months`, `r_months_g` when it reads month rows),
    or `None` when it reads none. A row is read only under
    its own day's gen: one build writes a batch of days under one gen, and when some of those
    days are rebuilt, their rows of that gen stay (superseded, deleted a minute later) while it
    is still the gen of the others. A bucket not in the plan's list maps to gen 0, which no
    build has (`new_gen`), so the gen check also keeps the rows to the listed buckets. Every
    filter is applied here too, so the SELECT stands alone when a plan reads no raw rows.
    Narrowed on agents, with agent rows for all it reads (`reads_agent_table`), it reads
    `AGENT_ROLLUPS` under the agent gens (`r_days_k`, `r_hours_k`, `k_gens`) instead."""
    keyed = reads_agent_table(plan, filters)
    g = "_kg" if keyed else "_g"  # the gens of the buckets' rows in the table read
    grains = []
    for present, grain, bucket, name in (
        (plan.days, "d", "bucket", "r_days"),
        (plan.hours, "m" if plan.minutes else "h",
         "toStartOfHour(bucket)" if plan.minutes else "bucket", "r_hours"),
    ):  # fmt: skip
        if present:
            grains.append(
                f"(grain = '{grain}'"
                f" AND transform(toUInt32({bucket}), {{{name}:Array(UInt32)}},"
                f" {{{name}{g}:Array(UInt64)}}, toUInt64(0)) = gen)"
            )
    if plan.months:
        grains.append(
            f"(grain = '{MONTH}' AND transform(toUInt32(bucket), {{r_months:Array(UInt32)}},"
            " {r_months_g:Array(UInt64)}, toUInt64(0)) = gen)"
        )
    if not grains:
        return None
    if keyed:  # only the agent cuboid's rows, sorted by grain, then agent
        # `k` is the row's agent (the builder writes no agent row without one), so the reach is
        # not checked on `agent_id` again: a second 50-agent set cost the manager's summary
        # about 4 ms (median of 60 interleaved runs at load 4.4, 2026-12-07)
        conditions = [
            "tenant_id = {tenant:String}",
            "k IN {agents:Array(String)}",
            "bucket >= toDateTime({rb_first:UInt32}, 'UTC')",
            "bucket < toDateTime({rb_last:UInt32}, 'UTC')",
            "(" + " OR ".join(grains) + ")",
            "gen IN {k_gens:Array(UInt64)}",
            *filters.conditions({d: d for d in DIMENSIONS if d != "agent_id"}),
        ]
        columns = ", ".join(FACT_COLUMNS[1:])
        return f"SELECT bucket AS t, {columns} FROM {AGENT_ROLLUPS} WHERE {_where(conditions)}"
    conditions = [
        "tenant_id = {tenant:String}",
        "cuboid = {cuboid:String}",
        "bucket >= toDateTime({rb_first:UInt32}, 'UTC')",
        "bucket < toDateTime({rb_last:UInt32}, 'UTC')",
        "(" + " OR ".join(grains) + ")",
        "gen IN {gens:Array(UInt64)}",
    ]
    if _narrows_on_key(plan, filters):  # narrow on the sort key
        placeholder = _SINGLE_KEY[plan.cuboid]
        op = "IN {agents:Array(String)}" if plan.cuboid == "agent" else "= "
        if plan.cuboid != "agent":
            op += f"{{{placeholder}:String}}"
        conditions.append(f"k {op}")
    conditions += filters.conditions(_ALL)
    columns = ", ".join(FACT_COLUMNS[1:])
    return f"SELECT bucket AS t, {columns} FROM {ROLLUPS} WHERE {_where(conditions)}"


# --- plan -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Build:
    """A day's current build: when it read the raw rows, up to which ms it covers, its gen, and
    the gen of its agent rows in `AGENT_ROLLUPS` (0: none there)."""

    built_ms: int
    until_ms: int
    gen: int
    agent_gen: int = 0


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a period is read from: rollup days and hours (ms at their start, of `cuboid`, gens
    `gens`; `minutes`: the hours' minute rows) and raw [start, end) ms ranges. `day_gens` and
    `hour_gens` are the gen each day and hour is read under; `agent_day_gens` and
    `agent_hour_gens` the gens of their rows in `AGENT_ROLLUPS` (`agent_gens`: all of them),
    empty unless the cuboid is the agents' and every day and hour has agent rows there."""

    cuboid: str
    days: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    minutes: bool = False
    gens: tuple[int, ...] = ()
    raw: tuple[tuple[int, int], ...] = field(default=())
    day_gens: tuple[int, ...] = ()
    hour_gens: tuple[int, ...] = ()
    months: tuple[int, ...] = ()
    month_gens: tuple[int, ...] = ()
    agent_gens: tuple[int, ...] = ()
    agent_day_gens: tuple[int, ...] = ()
    agent_hour_gens: tuple[int, ...] = ()

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = ranges_parameters(self.raw)
        if self.days or self.hours or self.months:
            ends = [
                *(d + DAY_MS for d in self.days),
                *(h + HOUR_MS for h in self.hours),
                *(next_month(m) for m in self.months),
            ]
            params |= {
                "cuboid": self.cuboid,
                "gens": list(self.gens),
                "r_days": [d // 1000 for d in self.days],
                "r_days_g": list(self.day_gens),
                "r_hours": [h // 1000 for h in self.hours],
                "r_hours_g": list(self.hour_gens),
                "rb_first": min([*self.days, *self.hours, *self.months]) // 1000,
                "rb_last": max(ends) // 1000,
            }
            if self.months:
                params |= {
                    "r_months": [m // 1000 for m in self.months],
                    "r_months_g": list(self.month_gens),
                }
            if self.agent_gens:
                params |= {
                    "k_gens": list(self.agent_gens),
                    "r_days_kg": list(self.agent_day_gens),
                    "r_hours_kg": list(self.agent_hour_gens),
                }
        return params


@dataclass(frozen=True, slots=True)
class MonthBuild:
    """A month's current month rows: their gen and the gens of the day rows they summed (one per
    day of the month, in order)."""

    gen: int
    day_gens: tuple[int, ...]


def month_start(ms: int) -> int:
    """The start (ms) of the UTC month holding `ms`. Pure."""
    at = datetime.fromtimestamp(ms / 1000, UTC)
    return utc_ms(datetime(at.year, at.month, 1, tzinfo=UTC))


def next_month(month_ms: int) -> int:
    """The start (ms) of the UTC month after the one starting at `month_ms`. Pure."""
    at = datetime.fromtimestamp(month_ms / 1000, UTC)
    year, month = (at.year + 1, 1) if at.month == 12 else (at.year, at.month + 1)
    return utc_ms(datetime(year, month, 1, tzinfo=UTC))


def whole_months(first_ms: int, last_ms: int) -> list[int]:
    """The starts of the UTC months lying wholly in [first_ms, last_ms). Pure."""
    out = []
    month = month_start(first_ms)
    if month < first_ms:
        month = next_month(month)
    while next_month(month) <= last_ms:
        out.append(month)
        month = next_month(month)
    return out


def _merge(ranges: Iterable[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(r for r in ranges if r[0] < r[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


def plan(
    start_ms: int,
    end_ms: int,
    cuboid: str,
    builds: Mapping[int, Build],
    touches: Mapping[int, int],
    *,
    grain: str,
    months: Mapping[int, MonthBuild] | None = None,
) -> Plan:
    """Split [start_ms, end_ms) into rollup days and hours and raw ranges. Pure.

    `builds`: the current build per UTC day (ms at its start); `touches`: the latest insert time
    (ms) per UTC hour (ms at its start). `grain`: "d" (days where a whole day is current, hours
    elsewhere; summaries and rankings), "h" (hours only: time series in hours or days, whose
    buckets must start on UTC hours, which the caller checks) or "m" (minute rows, total only).
    An hour is read from the rollup only when its day's build covers it and ran after its latest
    touch; everything else, and the partial hours at both ends, is read raw.

    `months`: the current month rows per UTC month (ms at its start). With grain "d" and a
    cuboid of `MONTH_CUBOIDS`, a month whose every day is read from day rows, each under the gen
    its month rows summed, is read from its month rows instead of those days; a month with a day
    rebuilt since (another gen), touched since its build or not built whole is read as before."""
    grains = GRAINS.get(cuboid, ())
    if grain not in grains:
        return Plan(cuboid, raw=((start_ms, end_ms),))
    with_hours = grain == "m" or "h" in grains
    first = -(-start_ms // HOUR_MS) * HOUR_MS
    last = end_ms // HOUR_MS * HOUR_MS
    raw: list[tuple[int, int]] = [(start_ms, min(first, end_ms)), (max(last, start_ms), end_ms)]
    # Hours touched after their day's build (few: late, retried or replayed rows); every other
    # hour of a day is current up to where its build reaches, so whole days are taken at once.
    stale: dict[int, set[int]] = {}
    for hour, touched in touches.items():
        day = hour // DAY_MS * DAY_MS
        build = builds.get(day)
        if build is not None and touched > build.built_ms:
            stale.setdefault(day, set()).add(hour)
    days: list[int] = []
    hours: list[int] = []
    for day in range(first // DAY_MS * DAY_MS, last, DAY_MS):
        lo, hi = max(day, first), min(day + DAY_MS, last)
        build = builds.get(day)
        # the hours whose end the build reaches: [lo, end)
        end = lo if build is None else min(hi, max(lo, build.until_ms // HOUR_MS * HOUR_MS))
        if end < hi:
            raw.append((end, hi))
        bad = sorted(h for h in stale.get(day, ()) if lo <= h < end)
        raw += [(h, h + HOUR_MS) for h in bad]
        if grain == "d" and lo == day and end == day + DAY_MS and not bad:
            days.append(day)
        elif bad:
            hours += [h for h in range(lo, end, HOUR_MS) if h not in stale[day]]
        else:
            hours.extend(range(lo, end, HOUR_MS))
    if not with_hours:
        raw += [(h, h + HOUR_MS) for h in hours]
        hours = []
    in_months: list[int] = []
    if months and grain == "d" and cuboid in MONTH_CUBOIDS and days:
        read = set(days)
        for month in whole_months(days[0], days[-1] + DAY_MS):
            built = months.get(month)
            month_days = range(month, next_month(month), DAY_MS)
            if (
                built is not None
                and all(d in read for d in month_days)
                and built.day_gens == tuple(builds[d].gen for d in month_days)
            ):
                in_months.append(month)
                read.difference_update(month_days)
        days = [d for d in days if d in read]
    day_gens = tuple(builds[d].gen for d in days)
    hour_gens = tuple(builds[h // DAY_MS * DAY_MS].gen for h in hours)
    month_gens = tuple(months[m].gen for m in in_months) if months else ()
    gens = tuple(sorted({*day_gens, *hour_gens, *month_gens}))
    agent_day_gens: tuple[int, ...] = ()
    agent_hour_gens: tuple[int, ...] = ()
    agent_gens: tuple[int, ...] = ()
    if cuboid == AGENT_CUBOID and (days or hours):
        agent_day_gens = tuple(builds[d].agent_gen for d in days)
        agent_hour_gens = tuple(builds[h // DAY_MS * DAY_MS].agent_gen for h in hours)
        if 0 in agent_day_gens or 0 in agent_hour_gens:  # some day's agent rows are not there
            agent_day_gens = agent_hour_gens = ()
        else:
            agent_gens = tuple(sorted({*agent_day_gens, *agent_hour_gens}))
    return Plan(
        cuboid, tuple(days), tuple(hours), grain == "m", gens, _merge(raw), day_gens, hour_gens,
        tuple(in_months), month_gens, agent_gens, agent_day_gens, agent_hour_gens,
    )  # fmt: skip


def raw_plan(start_ms: int, end_ms: int) -> Plan:
    """Everything from raw rows (the reference the rollups must equal)."""
    return Plan("total", raw=((start_ms, end_ms),))


STATE_SQL = (
    "SELECT 'b' AS what, toInt64(toUnixTimestamp(toDateTime(day, 'UTC'))) * 1000 AS at,"
    " toInt64(toUnixTimestamp64Milli(built_at)) AS b, toInt64(toUnixTimestamp(until)) * 1000,"
    f" gen, emptyArrayUInt64(), agent_gen FROM {BUILDS} FINAL WHERE tenant_id = {{tenant:String}}"
    " AND day >= toDate(fromUnixTimestamp64Milli({first:Int64}, 'UTC'))"
    " AND day < toDate(fromUnixTimestamp64Milli({last:Int64}, 'UTC')) + 1"
    "\nUNION ALL\n"
    "SELECT 't', toInt64(toUnixTimestamp(hour)) * 1000,"
    " toInt64(toUnixTimestamp64Milli(touched_at)), 0, toUInt64(0), emptyArrayUInt64(), toUInt64(0)"
    " FROM rollup_touches FINAL WHERE tenant_id = {tenant:String}"
    " AND hour >= fromUnixTimestamp64Milli({first:Int64}, 'UTC')"
    " AND hour < fromUnixTimestamp64Milli({last:Int64}, 'UTC')"
)
# Added to `STATE_SQL` only when the period holds a whole UTC month (a third table read costs a
# few ms): the month rows of the months starting in [first, last).
MONTHS_STATE_SQL = (
    "\nUNION ALL\n"
    "SELECT 'M', toInt64(toUnixTimestamp(toDateTime(month, 'UTC'))) * 1000,"
    " toInt64(toUnixTimestamp64Milli(built_at)), 0, gen, day_gens, toUInt64(0)"
    f" FROM {MONTHS} FINAL WHERE tenant_id = {{tenant:String}}"
    " AND month >= toDate(fromUnixTimestamp64Milli({first:Int64}, 'UTC'))"
    " AND month < toDate(fromUnixTimestamp64Milli({last:Int64}, 'UTC'))"
)


def state_sql(first_ms: int, last_ms: int) -> str:
    """The planning query of [first_ms, last_ms) (whole hours): builds and touches, and the
    month rows when the period holds a whole month (parameters `tenant`, `first`, `last`)."""
    return STATE_SQL + (MONTHS_STATE_SQL if whole_months(first_ms, last_ms) else "")


def read_state(
    rows: Iterable[Sequence[Any]],
) -> tuple[dict[int, Build], dict[int, int], dict[int, MonthBuild]]:
    """(builds per day, latest touch per hour, month rows per month) from the rows of
    `state_sql`."""
    builds: dict[int, Build] = {}
    touches: dict[int, int] = {}
    months: dict[int, MonthBuild] = {}
    for what, at, b, until, gen, day_gens, agent_gen in rows:
        if what == "t":
            touches[at] = max(b, touches.get(at, 0))
        elif what == "b":
            builds[int(at)] = Build(int(b), int(until), int(gen), int(agent_gen))
        else:
            months[int(at)] = MonthBuild(int(gen), tuple(int(g) for g in day_gens))
    return builds, touches, months


# --- build ----------------------------------------------------------------------------------


def _combos() -> str:
    pairs = [f"('{cuboid}', '{grain}')" for cuboid, grains in GRAINS.items() for grain in grains]
    return "[" + ", ".join(pairs) + "]"


def build_sql() -> str:
    """INSERT of every cuboid and grain of the facts of [r0a, r0b) (whole UTC days, the last
    one possibly cut at the open hour) under gen `gen`; day rows only for days before `whole`
    (ms: the end of the last whole day)."""
    facts = "\nUNION ALL\n".join(raw_facts([(0, 0)], Filters()))
    dims = []
    for dimension in DIMENSIONS:
        cuboid = next(c for c, d in SINGLE.items() if d == dimension)
        dims.append(f"if(x.1 = '{cuboid}', f.{dimension}, NULL) AS d_{dimension}")
    key = (
        "multiIf("
        + ", ".join(f"x.1 = '{c}', ifNull(f.{d}, '')" for c, d in SINGLE.items())
        + ", '')"
    )
    single_has_value = " OR ".join(
        f"(x.1 = '{c}' AND f.{d} IS NOT NULL)" for c, d in SINGLE.items()
    )
    return (
        f"INSERT INTO {ROLLUPS} (tenant_id, cuboid, grain, bucket, k, gen, agent_id, program_id,"
        " shop, link_code, coupon_code, n_clicks, visitors, n_conversions, m_revenue,"
        " n_entries, m_commission, n_refunds, m_refunded)\n"
        "SELECT {tenant:String}, x.1 AS c, x.2 AS g,"
        " multiIf(x.2 = 'm', f.t, x.2 = 'h', toStartOfHour(f.t), toStartOfDay(f.t)) AS b,"
        f" {key} AS key, {{gen:UInt64}}, {', '.join(dims)},"
        f" sum(f.n_clicks), {VISITORS}MergeState{VISITORS_PRECISION}(f.visitors),"
        " sum(f.n_conversions),"
        f" CAST(sum(f.m_revenue) AS {_MONEY}), sum(f.n_entries),"
        f" CAST(sum(f.m_commission) AS {_MONEY}), sum(f.n_refunds),"
        f" CAST(sum(f.m_refunded) AS {_MONEY})\n"
        f"FROM ({facts}) AS f ARRAY JOIN {_combos()} AS x\n"
        f"WHERE (x.1 = 'total' OR {single_has_value})"
        " AND (x.2 != 'd' OR f.t < fromUnixTimestamp64Milli({whole:Int64}, 'UTC'))\n"
        "GROUP BY c, g, b, key, " + ", ".join(f"d_{d}" for d in DIMENSIONS)
    )


@dataclass(frozen=True, slots=True)
class DayWork:
    """A day to build: its start, up to where (its end, or the open hour's start)."""

    tenant_id: str
    day_ms: int
    until_ms: int


def stale_days(
    touches: Iterable[tuple[str, int, int]],
    builds: Mapping[tuple[str, int], Build],
    closed_ms: int,
) -> list[DayWork]:
    """The days to (re)build: those with a touched closed hour their build does not cover or
    that was touched after it. `touches`: (tenant, hour ms, latest touch ms); `closed_ms`: the
    start of the open hour (hours before it are closed). Pure."""
    work: dict[tuple[str, int], DayWork] = {}
    for tenant, hour, touched in touches:
        if hour >= closed_ms:
            continue
        day = hour // DAY_MS * DAY_MS
        build = builds.get((tenant, day))
        if build is not None and hour + HOUR_MS <= build.until_ms and touched <= build.built_ms:
            continue
        work[(tenant, day)] = DayWork(tenant, day, min(day + DAY_MS, closed_ms))
    return [work[key] for key in sorted(work)]


@dataclass(frozen=True, slots=True)
class MonthWork:
    """A month to sum from its day rows: the tenant, its start and its days' current gens."""

    tenant_id: str
    month_ms: int
    day_gens: tuple[int, ...]


def stale_months(
    builds: Mapping[tuple[str, int], Build],
    months: Mapping[tuple[str, int], tuple[int, ...]],
) -> list[MonthWork]:
    """The whole UTC months to sum again: every day built whole (its build reaches its end), and
    no month rows, or month rows summed from other gens than the days' current ones. `builds`:
    (tenant, day ms) → current build; `months`: (tenant, month ms) → the day gens its current
    month rows summed. Pure."""
    candidates = {(tenant, month_start(day)) for tenant, day in builds}
    out = []
    for tenant, month in sorted(candidates):
        gens = []
        for day in range(month, next_month(month), DAY_MS):
            build = builds.get((tenant, day))
            if build is None or build.until_ms < day + DAY_MS:
                break
            gens.append(build.gen)
        else:
            if months.get((tenant, month)) != tuple(gens):
                out.append(MonthWork(tenant, month, tuple(gens)))
    return out


def month_sql() -> str:
    """INSERT of the month rows of the `MONTH_CUBOIDS` of the month [month, next) of tenant
    `tenant` under gen `gen`, summed from its day rows, each day under its own gen (`days`,
    `day_gens`: epoch seconds of the days and their gens)."""
    dims = ", ".join(DIMENSIONS)
    cuboids = ", ".join(f"'{c}'" for c in MONTH_CUBOIDS)
    return (
        f"INSERT INTO {ROLLUPS} (tenant_id, cuboid, grain, bucket, k, gen, {dims}, n_clicks,"
        " visitors, n_conversions, m_revenue, n_entries, m_commission, n_refunds, m_refunded)\n"
        f"SELECT tenant_id, cuboid, '{MONTH}', toDateTime({{month:UInt32}}, 'UTC'), k,"
        f" {{gen:UInt64}}, {dims}, sum(n_clicks),"
        f" {VISITORS}MergeState{VISITORS_PRECISION}(visitors), sum(n_conversions),"
        f" CAST(sum(m_revenue) AS {_MONEY}), sum(n_entries), CAST(sum(m_commission) AS {_MONEY}),"
        f" sum(n_refunds), CAST(sum(m_refunded) AS {_MONEY})\n"
        f"FROM {ROLLUPS} WHERE tenant_id = {{tenant:String}} AND cuboid IN ({cuboids})"
        " AND grain = 'd' AND bucket >= toDateTime({month:UInt32}, 'UTC')"
        " AND bucket < toDateTime({next:UInt32}, 'UTC')"
        " AND transform(toUInt32(bucket), {days:Array(UInt32)}, {day_gens:Array(UInt64)},"
        " toUInt64(0)) = gen\n"
        f"GROUP BY tenant_id, cuboid, k, {dims}"
    )


def new_gen() -> int:
    """A random gen, never 0 (0 is "no gen" in the rollup queries' gen lookups)."""
    return secrets.randbits(63) or 1


def utc_ms(at: datetime) -> int:
    return int(at.astimezone(UTC).timestamp() * 1000)


def aligned(starts: Sequence[datetime]) -> bool:
    """Whether every bucket starts on a UTC hour (so whole hours of rollup fall in one bucket)."""
    return all(utc_ms(s) % HOUR_MS == 0 for s in starts)


__all__ = [
    "AGENT_ROLLUPS",
    "BUILDS",
    "MONTHS",
    "ROLLUPS",
    "Build",
    "DayWork",
    "Filters",
    "MonthBuild",
    "MonthWork",
    "Plan",
    "aligned",
    "build_sql",
    "choose_cuboid",
    "month_sql",
    "month_start",
    "new_gen",
    "next_month",
    "plan",
    "raw_facts",
    "raw_plan",
    "read_settings",
    "read_state",
    "reads_agent_table",
    "rollup_facts",
    "stale_days",
    "stale_months",
    "state_sql",
    "whole_months",
]
