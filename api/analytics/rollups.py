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


def rollup_facts(plan: Plan, filters: Filters) -> str | None:
    """The SELECT of the rollup rows `plan` reads (parameters `cuboid`, `gens`, `r_days`,
    `r_days_g`, `r_hours`, `r_hours_g`), or `None` when it reads none. A row is read only under
    its own day's gen: one build writes a batch of days under one gen, and when some of those
    days are rebuilt, their rows of that gen stay (superseded, deleted a minute later) while it
    is still the gen of the others. A bucket not in the plan's list maps to gen 0, which no
    build has (`new_gen`), so the gen check also keeps the rows to the listed buckets. Every
    filter is applied here too, so the SELECT stands alone when a plan reads no raw rows."""
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
                f" {{{name}_g:Array(UInt64)}}, toUInt64(0)) = gen)"
            )
    if not grains:
        return None
    conditions = [
        "tenant_id = {tenant:String}",
        "cuboid = {cuboid:String}",
        "bucket >= toDateTime({rb_first:UInt32}, 'UTC')",
        "bucket < toDateTime({rb_last:UInt32}, 'UTC')",
        "(" + " OR ".join(grains) + ")",
        "gen IN {gens:Array(UInt64)}",
    ]
    if plan.cuboid in SINGLE:  # narrow on the sort key
        placeholder = _SINGLE_KEY[plan.cuboid]
        value = getattr(filters, "agents" if plan.cuboid == "agent" else SINGLE[plan.cuboid])
        if value is not None:
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
    """A day's current build: when it read the raw rows, up to which ms it covers, its gen."""

    built_ms: int
    until_ms: int
    gen: int


@dataclass(frozen=True, slots=True)
class Plan:
    """Where a period is read from: rollup days and hours (ms at their start, of `cuboid`, gens
    `gens`; `minutes`: the hours' minute rows) and raw [start, end) ms ranges. `day_gens` and
    `hour_gens` are the gen each day and hour is read under."""

    cuboid: str
    days: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    minutes: bool = False
    gens: tuple[int, ...] = ()
    raw: tuple[tuple[int, int], ...] = field(default=())
    day_gens: tuple[int, ...] = ()
    hour_gens: tuple[int, ...] = ()

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = ranges_parameters(self.raw)
        if self.days or self.hours:
            params |= {
                "cuboid": self.cuboid,
                "gens": list(self.gens),
                "r_days": [d // 1000 for d in self.days],
                "r_days_g": list(self.day_gens),
                "r_hours": [h // 1000 for h in self.hours],
                "r_hours_g": list(self.hour_gens),
                "rb_first": min([*self.days, *self.hours]) // 1000,
                "rb_last": max(
                    [*(d + DAY_MS for d in self.days), *(h + HOUR_MS for h in self.hours)]
                )
                // 1000,
            }
        return params


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
) -> Plan:
    """Split [start_ms, end_ms) into rollup days and hours and raw ranges. Pure.

    `builds`: the current build per UTC day (ms at its start); `touches`: the latest insert time
    (ms) per UTC hour (ms at its start). `grain`: "d" (days where a whole day is current, hours
    elsewhere; summaries and rankings), "h" (hours only: time series in hours or days, whose
    buckets must start on UTC hours, which the caller checks) or "m" (minute rows, total only).
    An hour is read from the rollup only when its day's build covers it and ran after its latest
    touch; everything else, and the partial hours at both ends, is read raw."""
    grains = GRAINS.get(cuboid, ())
    if grain not in grains:
        return Plan(cuboid, raw=((start_ms, end_ms),))
    with_hours = grain == "m" or "h" in grains
    first = -(-start_ms // HOUR_MS) * HOUR_MS
    last = end_ms // HOUR_MS * HOUR_MS
    raw: list[tuple[int, int]] = [(start_ms, min(first, end_ms)), (max(last, start_ms), end_ms)]
    current: list[int] = []
    for hour in range(first, last, HOUR_MS):
        build = builds.get(hour // DAY_MS * DAY_MS)
        if (
            build is not None
            and hour + HOUR_MS <= build.until_ms
            and (touches.get(hour, 0) <= build.built_ms)
        ):
            current.append(hour)
        else:
            raw.append((hour, hour + HOUR_MS))
    days: list[int] = []
    hours: list[int] = []
    if grain == "d":
        whole = set(current)
        for day in sorted({h // DAY_MS * DAY_MS for h in current}):
            if all(day + i * HOUR_MS in whole for i in range(24)):
                days.append(day)
        in_days = set(days)
        hours = [h for h in current if h // DAY_MS * DAY_MS not in in_days]
    else:
        hours = current
    if not with_hours:
        raw += [(h, h + HOUR_MS) for h in hours]
        hours = []
    day_gens = tuple(builds[d].gen for d in days)
    hour_gens = tuple(builds[h // DAY_MS * DAY_MS].gen for h in hours)
    gens = tuple(sorted({*day_gens, *hour_gens}))
    return Plan(
        cuboid, tuple(days), tuple(hours), grain == "m", gens, _merge(raw), day_gens, hour_gens
    )


def raw_plan(start_ms: int, end_ms: int) -> Plan:
    """Everything from raw rows (the reference the rollups must equal)."""
    return Plan("total", raw=((start_ms, end_ms),))


STATE_SQL = (
    "SELECT 'b' AS what, toInt64(toUnixTimestamp(toDateTime(day, 'UTC'))) * 1000 AS at,"
    " toInt64(toUnixTimestamp64Milli(built_at)) AS b, toInt64(toUnixTimestamp(until)) * 1000,"
    f" gen FROM {BUILDS} FINAL WHERE tenant_id = {{tenant:String}}"
    " AND day >= toDate(fromUnixTimestamp64Milli({first:Int64}, 'UTC'))"
    " AND day < toDate(fromUnixTimestamp64Milli({last:Int64}, 'UTC')) + 1"
    "\nUNION ALL\n"
    "SELECT 't', toInt64(toUnixTimestamp(hour)) * 1000,"
    " toInt64(toUnixTimestamp64Milli(touched_at)), 0, toUInt64(0) FROM rollup_touches FINAL"
    " WHERE tenant_id = {tenant:String}"
    " AND hour >= fromUnixTimestamp64Milli({first:Int64}, 'UTC')"
    " AND hour < fromUnixTimestamp64Milli({last:Int64}, 'UTC')"
)


def read_state(
    rows: Iterable[Sequence[Any]],
) -> tuple[dict[int, Build], dict[int, int]]:
    """(builds per day, latest touch per hour) from the rows of `STATE_SQL`."""
    builds: dict[int, Build] = {}
    touches: dict[int, int] = {}
    for what, at, b, until, gen in rows:
        if what == "b":
            builds[int(at)] = Build(int(b), int(until), int(gen))
        else:
            touches[int(at)] = max(int(b), touches.get(int(at), 0))
    return builds, touches


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


def new_gen() -> int:
    """A random gen, never 0 (0 is "no gen" in the rollup queries' gen lookups)."""
    return secrets.randbits(63) or 1


def utc_ms(at: datetime) -> int:
    return int(at.astimezone(UTC).timestamp() * 1000)


def aligned(starts: Sequence[datetime]) -> bool:
    """Whether every bucket starts on a UTC hour (so whole hours of rollup fall in one bucket)."""
    return all(utc_ms(s) % HOUR_MS == 0 for s in starts)


__all__ = [
    "BUILDS",
    "ROLLUPS",
    "Build",
    "DayWork",
    "Filters",
    "Plan",
    "aligned",
    "build_sql",
    "choose_cuboid",
    "new_gen",
    "plan",
    "raw_facts",
    "raw_plan",
    "read_state",
    "rollup_facts",
    "stale_days",
]
