"""Differential test of the analytics rollups (issue #16), against the real ClickHouse server: on
one generated company with duplicates, edited conversions, late rows, replays, legacy rows and a
refund whose conversion arrives after it, every query behind the analytics endpoints (summary and
/me: `totals`; timeseries: `per_bucket`; breakdown and top agents: `ranked`) answers the same
from rollups as from raw `FINAL` rows — after a build, after late rows and a replay touched
built hours (before any rebuild), and after the rebuild."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client

from api.analytics.builder import (
    KEEP_SUPERSEDED_MS,
    SAFETY_MS,
    Builder,
    merge_parts,
    partition_ids,
    server_ms,
)
from api.analytics.repository import AnalyticsStore, Question
from api.analytics.rollups import (
    AGENT_ROLLUPS,
    BUILDS,
    DAY_MS,
    HOUR_MS,
    ROLLUPS,
    Filters,
    Plan,
    reads_agent_table,
    utc_ms,
)
from api.analytics.schemas import Dimension, Metric
from api.clickhouse import ClickHouseReader
from dataflows.sinks.clickhouse import COLUMNS
from schemas.settings import Settings

D0 = datetime(2026, 10, 5, tzinfo=UTC)
SPAN = timedelta(days=4)
# The builder's clock: day 4 is built up to 05:00; 05:00 on is the open hour and later.
NOW = D0 + timedelta(days=3, hours=5, minutes=20)
AGENTS = [f"agt_{i}" for i in range(6)]
PROGRAMS = ["prg_a", "prg_b", "prg_c"]
SHOPS = ["s0.myshopify.com", "s1.myshopify.com"]
COUPONS = ["CODE0", "CODE1", "CODE2", "CODE3"]
FX = {"EUR": Decimal("1"), "USD": Decimal("0.9"), "GBP": Decimal("1.15")}


@dataclass
class Rows:
    """Rows per table, as the dataflow writes them."""

    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any]) -> None:
        self.tables.setdefault(table, []).append(row)


def insert(ch: Client, rows: Rows) -> None:
    for table, items in rows.tables.items():
        columns = COLUMNS[table]
        ch.insert(table, [[row[c] for c in columns] for row in items], column_names=list(columns))


def _when(rng: random.Random, start: datetime, span: timedelta) -> datetime:
    return start + timedelta(milliseconds=rng.randrange(int(span.total_seconds() * 1000)))


def click(tenant: str, rng: random.Random, when: datetime, n: int) -> dict[str, Any]:
    agent = rng.choice([*AGENTS, None])
    return {
        "tenant_id": tenant, "click_id": f"clk_{n}", "link_code": f"l_{agent or 'x'}",
        "program_id": rng.choice(PROGRAMS), "agent_id": agent, "shop": rng.choice(SHOPS),
        "visitor_id": rng.choice([None, *(f"v{i}" for i in range(40))]), "occurred_at": when,
        "landing_url": None, "referrer": None, "user_agent": None, "ip_hash": None,
        "is_bot": rng.random() < 0.05, "is_duplicate": rng.random() < 0.03, "version": 1,
    }  # fmt: skip


def conversion(tenant: str, rng: random.Random, when: datetime, n: int,
               clicks: list[dict[str, Any]], *, version: int = 1,
               ) -> tuple[dict[str, Any], str | None]:  # fmt: skip
    """A conversion row and the link its commission entries carry (the resolved link)."""
    agent = rng.choice([*AGENTS, *AGENTS, None])
    kind = rng.random()
    click_id = link = coupon = None
    entry_link = None
    if agent is not None and kind < 0.6:
        cited = rng.choice(clicks)
        click_id, entry_link = cited["click_id"], cited["link_code"]
        link = entry_link if kind < 0.5 else None  # a row written before ClickHouse 0004
    elif agent is not None:
        coupon = rng.choice(COUPONS)
    currency = rng.choice(list(FX))
    return {
        "tenant_id": tenant, "conversion_id": f"cv_{n}", "shop": rng.choice(SHOPS),
        "order_id": f"o{n}", "order_name": f"#{n}", "occurred_at": when, "attributed_at": when,
        "rule": "last_click" if agent else "unattributed", "agent_id": agent,
        "program_id": rng.choice(PROGRAMS) if agent else None, "click_id": click_id,
        "coupon_code": coupon, "customer_id": None, "is_new_customer": False,
        "currency": currency, "revenue": Decimal(rng.randrange(100, 50000)) / 100,
        "fx_rate": FX[currency], "source_event_id": f"ev_{n}", "version": version,
        "link_code": link, "explanation": "", "rejected": [],  # the decision (ClickHouse 0006)
    }, entry_link  # fmt: skip


def entry(conv: dict[str, Any], link: str | None, n: str, agent: str, amount: Decimal,
          when: datetime) -> dict[str, Any]:  # fmt: skip
    return {
        "tenant_id": conv["tenant_id"], "entry_id": f"le_{n}", "agent_id": agent,
        "program_id": conv["program_id"], "conversion_id": conv["conversion_id"],
        "order_id": conv["order_id"], "line_item_id": None, "kind": "accrual",
        "status": "pending", "level": 0, "amount": amount, "currency": conv["currency"],
        "fx_rate": conv["fx_rate"], "rule_id": None, "rule_version": None, "occurred_at": when,
        "source_event_id": f"ev_{n}", "version": 1, "shop": conv["shop"], "link_code": link,
        "coupon_code": conv["coupon_code"],
    }  # fmt: skip


def refund(conv: dict[str, Any], n: str, when: datetime, *, fx: bool = False) -> dict[str, Any]:
    return {
        "tenant_id": conv["tenant_id"], "refund_id": f"rf_{n}", "order_id": conv["order_id"],
        "shop": conv["shop"], "occurred_at": when, "currency": conv["currency"],
        "amount": conv["revenue"] / 3, "fx_rate": Decimal("1.05") if fx else None,
        "line_count": 1, "source_event_id": f"ev_rf_{n}", "version": 1,
    }  # fmt: skip


@dataclass
class Dataset:
    first: Rows
    late: Rows
    late_hours: set[int]  # UTC hours (ms) the late rows fall in, all built before they arrive


def generate(tenant: str, seed: int = 16) -> Dataset:
    rng = random.Random(seed)
    first, late = Rows(), Rows()
    clicks = [click(tenant, rng, _when(rng, D0, SPAN), n) for n in range(400)]
    for row in clicks:
        first.add("clicks", row)
    first.tables["clicks"] += clicks[:50]  # a retried batch
    held_back: list[dict[str, Any]] = []
    for n in range(160):
        when = _when(rng, D0, SPAN)
        conv, link = conversion(tenant, rng, when, n, clicks)
        if n % 40 == 7 and when < D0 + timedelta(days=2):  # its refund comes first
            held_back.append(conv)
        else:
            first.add("conversions", conv)
        if n % 10 == 3:  # an edit: a later version with another revenue
            first.add("conversions", conv | {"revenue": conv["revenue"] + 1, "version": 2})
        if conv["agent_id"] is not None:
            first.add("commission_events", entry(conv, link, f"{n}", conv["agent_id"],
                                                 conv["revenue"] / 10, when))  # fmt: skip
            if n % 5 == 0:  # a manager's override
                manager = AGENTS[(AGENTS.index(conv["agent_id"]) + 1) % len(AGENTS)]
                first.add("commission_events", entry(conv, link, f"{n}m", manager,
                                                     conv["revenue"] / 200, when))  # fmt: skip
        if n % 6 == 0 or conv in held_back:
            at = when + timedelta(hours=rng.randrange(1, 30), minutes=rng.randrange(60))
            first.add("refunds", refund(conv, f"{n}", at, fx=n % 12 == 0))
    for table in ("conversions", "commission_events", "refunds"):
        first.tables[table] += first.tables[table][::7]  # duplicates
    # Late rows, all in hours of day 2 (built before they arrive), and the held-back orders.
    late_hours: set[int] = set()
    for n in range(1000, 1030):
        when = _when(rng, D0 + timedelta(days=1), timedelta(days=1))
        late_hours.add(utc_ms(when) // HOUR_MS * HOUR_MS)
        if n % 3 == 0:
            late.add("clicks", click(tenant, rng, when, n))
            continue
        conv, link = conversion(tenant, rng, when, n, clicks)
        late.add("conversions", conv)
        if conv["agent_id"] is not None:
            late.add("commission_events", entry(conv, link, f"{n}", conv["agent_id"],
                                                Decimal("1.23"), when))  # fmt: skip
    day2 = (D0 + timedelta(days=1), D0 + timedelta(days=2))
    edited = next(
        c
        for c in first.tables["conversions"]
        if c["agent_id"] is not None and day2[0] <= c["occurred_at"] < day2[1]
    )
    late.add("conversions", edited | {"revenue": edited["revenue"] * 2, "version": 9})
    late_hours.add(utc_ms(edited["occurred_at"]) // HOUR_MS * HOUR_MS)
    for conv in held_back:
        late.add("conversions", conv)
        for row in first.tables["refunds"]:
            closed = row["occurred_at"] < NOW - timedelta(hours=1)
            if row["order_id"] == conv["order_id"] and closed:
                late_hours.add(utc_ms(row["occurred_at"]) // HOUR_MS * HOUR_MS)
    return Dataset(first, late, late_hours)


@pytest.fixture
def ch(api_clickhouse_url: str) -> Iterator[Client]:
    target = Settings(clickhouse_url=api_clickhouse_url).clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    yield client
    client.close()


@pytest.fixture
def reader(api_clickhouse_url: str) -> Iterator[ClickHouseReader]:
    reader = ClickHouseReader(Settings(clickhouse_url=api_clickhouse_url))
    yield reader
    reader.close()


def questions(tenant: str) -> list[Question]:
    periods = [
        (D0 - timedelta(minutes=43), D0 + SPAN),  # partial first hour, the open hours at the end
        (D0, D0 + timedelta(days=3)),  # whole days
        (D0 + timedelta(days=1, hours=2, minutes=30), D0 + timedelta(days=2, hours=1)),
    ]
    filters: list[dict[str, Any]] = [
        {}, {"agents": ("agt_1", "agt_3")}, {"agents": ("agt_2",)}, {"agents": ()},
        {"program_id": "prg_b"}, {"shop": SHOPS[0]}, {"link_code": "l_agt_4"},
        {"coupon_code": "CODE2"}, {"agents": ("agt_0", "agt_5"), "shop": SHOPS[1]},
        {"program_id": "prg_a", "coupon_code": "CODE1"},
    ]  # fmt: skip
    # Every filter on the first period, the first ones on the others (the machine is shared).
    return [
        Question(tenant_id=tenant, start=s, end=e, **f)
        for i, (s, e) in enumerate(periods)
        for f in (filters if i == 0 else filters[:i])
    ]


UNITS = {"agt_0": "u_a", "agt_1": "u_a", "agt_2": "u_b", "agt_3": "u_b", "agt_4": "u_c"}


# Queries in flight at once: the answers are compared the same, only sooner (most of a query's
# time on this small data is ClickHouse planning it, single-threaded, so two cores serve several).
CONCURRENT = 4


async def gathered(calls: dict[str, Callable[[], Awaitable[Any]]]) -> dict[str, Any]:
    """Every call's answer by its key, up to `CONCURRENT` calls at a time."""
    slots = asyncio.Semaphore(CONCURRENT)

    async def one(call: Callable[[], Awaitable[Any]]) -> Any:
        async with slots:
            return await call()

    results = await asyncio.gather(*(one(call) for call in calls.values()))
    return dict(zip(calls, results, strict=True))


async def answers(store: AnalyticsStore, tenant: str) -> dict[str, Any]:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    qs = questions(tenant)
    for i, q in enumerate(qs):
        calls[f"{i} totals"] = partial(store.totals, q)
        for by in Dimension:
            calls[f"{i} {by}"] = partial(
                store.ranked, q, by, Metric.revenue, limit=50, unit_of=UNITS
            )
        calls[f"{i} agents by clicks"] = partial(
            store.ranked, q, Dimension.agent, Metric.clicks, limit=50
        )
        calls[f"{i} day Berlin"] = partial(store.per_bucket, q, "day", "Europe/Berlin")
        if q.agents is None and q.shop is None:
            for zone in ("UTC", "Asia/Kolkata"):  # Kolkata: days start at 18:30 UTC
                for bucket in ("hour", "day"):
                    calls[f"{i} {bucket} {zone}"] = partial(store.per_bucket, q, bucket, zone)
    day = Question(tenant_id=tenant, start=D0 + timedelta(days=1, hours=3), end=D0 + timedelta(
        days=2, hours=1, minutes=30))  # fmt: skip
    calls["minutes"] = partial(store.per_bucket, day, "minute", "Europe/Berlin")
    out = await gathered(calls)
    pages: dict[str, Callable[[], Awaitable[Any]]] = {}
    for i, q in enumerate(qs):
        rows = out[f"{i} agents by clicks"]
        if len(rows) > 2:  # the next page after the second key
            after = (str(rows[1].clicks), rows[1].key)
            pages[f"{i} agents by clicks, page 2"] = partial(
                store.ranked, q, Dimension.agent, Metric.clicks, limit=2, after=after
            )
    return out | await gathered(pages)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{key}: {a[key]} != {b.get(key)}" for key in a if a[key] != b.get(key)]


async def settle() -> None:
    """Let the builder's safety margin pass: it treats rows inserted within `SAFETY_MS` before a
    build as possibly unseen, leaving their hours stale."""
    await asyncio.sleep(SAFETY_MS / 1000 + 0.5)


async def rolled_up(store: AnalyticsStore, tenant: str) -> Plan:
    whole = Question(tenant_id=tenant, start=D0 - timedelta(minutes=43), end=D0 + SPAN)
    return await store.where(whole, "total", "d")


async def agent_plans(store: AnalyticsStore, tenant: str) -> list[Plan]:
    """The plans of the questions narrowed on agents (a manager's or an agent's reach) that
    read rollup rows."""
    plans = []
    for q in questions(tenant):
        if q.agents and q.shop is None:
            where = await store.where(q, "agent", "d")
            if where.days or where.hours:
                plans.append(where)
    return plans


async def read_from_agent_table(store: AnalyticsStore, tenant: str) -> list[bool]:
    return [reads_agent_table(p, Filters(agents=("a",))) for p in await agent_plans(store, tenant)]


@pytest.mark.timeout(900)  # about 1,000 queries, half of them over raw rows
async def test_every_query_answers_the_same_from_rollups_as_from_raw_rows(
    ch: Client, reader: ClickHouseReader
) -> None:
    tenant = f"t_roll_{uuid.uuid4().hex[:8]}"
    data = generate(tenant)
    raw, rollups = AnalyticsStore(reader, rollups=False), AnalyticsStore(reader)
    insert(ch, data.first)
    builder = Builder(ch)
    now = utc_ms(NOW)
    unbuilt = (utc_ms(D0) - 43 * 60_000, utc_ms(D0 + SPAN))
    assert (await rolled_up(rollups, tenant)).raw == (unbuilt,)  # nothing built: all raw
    await settle()
    builder.cycle(now_ms=now)
    plan = await rolled_up(rollups, tenant)
    # Days 1-3 from day rollups, day 4's closed hours from hour rollups, the rest raw.
    assert (len(plan.days), len(plan.hours)) == (3, 5)
    assert plan.raw[-1] == (utc_ms(D0) + 3 * DAY_MS + 5 * HOUR_MS, utc_ms(D0 + SPAN))
    # The reaches narrowed on agents read the agent rows from `rollup_agents` (ClickHouse 0011).
    keyed = await read_from_agent_table(rollups, tenant)
    assert keyed
    assert all(keyed)
    expected = await answers(raw, tenant)
    assert differences(expected, await answers(rollups, tenant)) == []

    # Late rows, an edit and a late conversion of refunded orders: the hours they touch read raw
    # until rebuilt, so the answers stay exact before any rebuild.
    insert(ch, data.late)
    plan = await rolled_up(rollups, tenant)
    raw_hours = {h for start, end in plan.raw for h in range(start, end, HOUR_MS)}
    assert data.late_hours <= raw_hours
    assert len(plan.days) < 3
    expected = await answers(raw, tenant)
    assert differences(expected, await answers(rollups, tenant)) == []
    # A replay of everything (and a retried batch) counts once, before and after the rebuild.
    insert(ch, data.first)
    whole = questions(tenant)[0]
    assert await raw.totals(whole) == expected["0 totals"]
    assert differences(expected, await answers(rollups, tenant)) == []

    await settle()
    rebuilt = builder.cycle(now_ms=now)
    assert len(rebuilt) == 4
    plan = await rolled_up(rollups, tenant)
    assert (len(plan.days), len(plan.hours)) == (3, 5)
    keyed = await read_from_agent_table(rollups, tenant)
    assert keyed
    assert all(keyed)
    assert differences(expected, await answers(rollups, tenant)) == []
    # Nothing stale is left: another pass builds nothing.
    assert builder.cycle(now_ms=now) == []


async def test_rows_of_superseded_builds_are_deleted_a_minute_after_the_switch(
    ch: Client, reader: ClickHouseReader
) -> None:
    tenant = f"t_roll_{uuid.uuid4().hex[:8]}"
    data = generate(tenant, seed=7)
    insert(ch, data.first)
    builder, now = Builder(ch), utc_ms(NOW)
    await settle()
    first = builder.cycle(now_ms=now)
    insert(ch, data.late)
    await settle()
    again = builder.cycle(now_ms=now)
    assert 0 < len(again) < len(first)

    def superseded_in(table: str, gen_column: str) -> int:
        """Rows of `table` of another gen than their day's current one (`gen_column`)."""
        return int(
            ch.command(
                f"SELECT count() FROM {table} WHERE tenant_id = {{t:String}}"
                f" AND (toDate(bucket), gen) NOT IN (SELECT day, {gen_column} FROM {BUILDS} FINAL"
                " WHERE tenant_id = {t:String})",
                parameters={"t": tenant},
            )  # type: ignore[arg-type]
        )

    def superseded() -> int:
        """Rollup rows of a day written by another gen than the day's current build."""
        return superseded_in(ROLLUPS, "gen")

    def superseded_agents() -> int:
        """Rows of `rollup_agents` of another gen than their day's current agent gen."""
        return superseded_in(AGENT_ROLLUPS, "agent_gen")

    assert superseded() > 0  # still there for queries planned before the switch
    assert superseded_agents() > 0
    # ... and not read: the day that kept the first build's gen and the rebuilt day next to it
    # (whose rows of that same gen are superseded) count each day once.
    whole = questions(tenant)[0]
    managed = Question(tenant_id=tenant, start=whole.start, end=whole.end, agents=AGENTS[:4])
    raw, rollups = AnalyticsStore(reader, rollups=False), AnalyticsStore(reader)
    plan = await rolled_up(rollups, tenant)
    assert len(plan.gens) > 1
    assert len((await rollups.where(managed, "agent", "d")).agent_gens) > 1
    assert await rollups.totals(whole) == await raw.totals(whole)
    assert await rollups.totals(managed) == await raw.totals(managed)
    by_agent = Dimension.agent, Metric.revenue
    assert await rollups.ranked(whole, *by_agent, limit=9) == await raw.ranked(
        whole, *by_agent, limit=9
    )
    assert await rollups.ranked(managed, *by_agent, limit=9) == await raw.ranked(
        managed, *by_agent, limit=9
    )
    builder.clean(server_ms(ch))
    assert superseded() > 0  # not yet a minute
    assert superseded_agents() > 0
    builder.clean(server_ms(ch) + KEEP_SUPERSEDED_MS)
    assert superseded() == 0
    assert superseded_agents() == 0
    assert await rollups.totals(whole) == await raw.totals(whole)
    assert await rollups.totals(managed) == await raw.totals(managed)

    # Merging the month's parts (what a pass does past `MERGE_ABOVE_PARTS`; background merges
    # may already have merged some, so any count is merged here) leaves one part and the same
    # answers.
    def parts() -> int:
        return int(
            ch.command(
                "SELECT count() FROM system.parts WHERE database = currentDatabase()"
                f" AND table = '{ROLLUPS}' AND active AND partition_id = '202610'"
            )  # type: ignore[arg-type]
        )

    # (this tenant's days: a pass also builds the stale days of tenants of earlier tests)
    month = partition_ids([day for day in first if day.tenant_id == tenant])
    assert month == ["202610"]
    assert parts() >= 1
    assert merge_parts(ch, month, above=0) == month
    assert parts() == 1
    assert merge_parts(ch, month, above=1) == []  # one part: nothing to merge
    assert await rollups.totals(whole) == await raw.totals(whole)


@pytest.mark.timeout(300)
async def test_refstream_analytics_build_once_registers_the_builds(
    ch: Client, api_clickhouse_url: str
) -> None:
    """`refstream analytics build --once` (what `refstream up`, compose and k8s run, as a loop)
    builds every day holding rows, registers it in `rollup_builds_v2`, writes its rows, and
    exits."""
    tenant = f"t_cli_{uuid.uuid4().hex[:8]}"
    data = generate(tenant)
    insert(ch, data.first)
    await settle()  # else the newest rows' hours stay stale for a second pass
    env = {**os.environ, "REFSTREAM_CLICKHOUSE_URL": api_clickhouse_url}
    ran = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "analytics", "build", "--once"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout + ran.stderr
    days = {row["occurred_at"].date() for rows in data.first.tables.values() for row in rows}
    builds = ch.query(
        f"SELECT day, gen FROM {BUILDS} FINAL WHERE tenant_id = {{t:String}}",
        parameters={"t": tenant},
    ).result_rows
    assert {day for day, _ in builds} == days
    gens = {gen for _, gen in builds}
    written = ch.query(
        f"SELECT DISTINCT gen FROM {ROLLUPS} WHERE tenant_id = {{t:String}}",
        parameters={"t": tenant},
    ).result_rows
    assert {gen for (gen,) in written} == gens
    assert Builder(ch).cycle() == []  # nothing left stale: the CLI pass built it all


async def test_days_built_without_agent_rows_are_read_from_rollups_then_copied_once(
    ch: Client, reader: ClickHouseReader
) -> None:
    """Days whose build has no agent gen (built before ClickHouse 0011, or by a builder of the
    previous version during a rollout) are read from `rollups_v2` by every reach; the next pass
    copies their agent rows into `rollup_agents` ("keying", without rebuilding them), after
    which the reaches narrowed on agents read those, with the same answers as raw rows."""
    tenant = f"t_key_{uuid.uuid4().hex[:8]}"
    data = generate(tenant, seed=5)
    insert(ch, data.first)
    builder, now = Builder(ch), utc_ms(NOW)
    await settle()
    builder.cycle(now_ms=now)
    # As a builder of the previous version leaves them: no agent rows, agent gen 0 (the default
    # of the column 0011 added; the same `built_at`, so the last registration stays).
    ch.command(
        f"ALTER TABLE {AGENT_ROLLUPS} DELETE WHERE tenant_id = {{t:String}}",
        parameters={"t": tenant}, settings={"mutations_sync": 2},
    )  # fmt: skip
    ch.command(
        f"INSERT INTO {BUILDS} (tenant_id, day, built_at, until, gen) SELECT tenant_id, day,"
        f" built_at, until, gen FROM {BUILDS} FINAL WHERE tenant_id = {{t:String}}",
        parameters={"t": tenant},
    )
    raw, rollups = AnalyticsStore(reader, rollups=False), AnalyticsStore(reader)
    qs = [q for q in questions(tenant) if q.agents and q.shop is None]

    async def compare() -> None:
        for q in qs:
            assert await rollups.totals(q) == await raw.totals(q)
            for by in (Dimension.agent, Dimension.unit):
                assert await rollups.ranked(
                    q, by, Metric.revenue, limit=50, unit_of=UNITS
                ) == await raw.ranked(q, by, Metric.revenue, limit=50, unit_of=UNITS)
            assert await rollups.per_bucket(q, "day", "Europe/Berlin") == await raw.per_bucket(
                q, "day", "Europe/Berlin"
            )

    def agent_rows() -> tuple[int, int]:
        """(rows of the tenant's agent cuboid in `rollups_v2`, its rows in `rollup_agents`)"""
        return tuple(  # type: ignore[return-value]
            int(ch.command(sql, parameters={"t": tenant}))  # type: ignore[arg-type]
            for sql in (
                f"SELECT count() FROM {ROLLUPS} WHERE tenant_id = {{t:String}}"
                " AND cuboid = 'agent'",
                f"SELECT count() FROM {AGENT_ROLLUPS} WHERE tenant_id = {{t:String}}",
            )
        )

    assert agent_rows()[1] == 0
    keyed = await read_from_agent_table(rollups, tenant)
    assert keyed
    assert not any(keyed)
    await compare()
    assert builder.cycle(now_ms=now) == []  # nothing rebuilt, the days keyed
    keyed = await read_from_agent_table(rollups, tenant)
    assert keyed
    assert all(keyed)
    rows = agent_rows()
    assert rows[0] > 0
    assert rows == (rows[0], rows[0])
    await compare()
    assert builder.cycle(now_ms=now) == []
    assert agent_rows() == rows  # keyed once


# --- month rows of the totals ----------------------------------------------------------------

SEPTEMBER = datetime(2026, 9, 1, tzinfo=UTC)
# Rows on every day from Aug 29 to Oct 2 (every day of September must be built for its month
# rows to exist); the builder's clock is Oct 3, 06:20.
M_FIRST, M_DAYS = SEPTEMBER - timedelta(days=3), 35
M_NOW = SEPTEMBER + timedelta(days=32, hours=6, minutes=20)


def generate_months(tenant: str, seed: int = 10) -> Dataset:
    """A few rows a day over `M_DAYS` days (clicks, conversions, edits, entries, refunds with
    duplicates), and late rows on Sep 1 and Sep 14: the first day of the month, whose day
    rows share their bucket with the month rows, and a day inside it."""
    rng = random.Random(seed)
    first, late = Rows(), Rows()
    clicks: list[dict[str, Any]] = []
    for day in range(M_DAYS):
        start = M_FIRST + timedelta(days=day)
        for _ in range(3):
            row = click(tenant, rng, _when(rng, start, timedelta(days=1)), len(clicks))
            clicks.append(row)
            first.add("clicks", row)
        for n in range(2):
            number = day * 10 + n
            when = _when(rng, start, timedelta(days=1))
            conv, link = conversion(tenant, rng, when, number, clicks, version=1 + n)
            first.add("conversions", conv)
            if conv["agent_id"] is not None:
                first.add("commission_events", entry(conv, link, f"{number}", conv["agent_id"],
                                                     conv["revenue"] / 10, when))  # fmt: skip
            if number % 3 == 0:
                first.add("refunds", refund(conv, f"{number}", when + timedelta(hours=5)))
    for table in ("clicks", "conversions", "commission_events", "refunds"):
        first.tables[table] += first.tables[table][::5]  # duplicates
    late_hours: set[int] = set()
    for n, start in enumerate((SEPTEMBER, SEPTEMBER + timedelta(days=13))):
        when = _when(rng, start, timedelta(days=1))
        late_hours.add(utc_ms(when) // HOUR_MS * HOUR_MS)
        counted = {"agent_id": "agt_1", "visitor_id": f"late{n}", "is_bot": False,
                   "is_duplicate": False}  # fmt: skip
        late.add("clicks", click(tenant, rng, when, 9000 + n) | counted)
        conv, link = conversion(tenant, rng, when, 9000 + n, clicks)
        conv |= {"agent_id": "agt_2", "program_id": PROGRAMS[0], "rule": "last_click"}
        late.add("conversions", conv)
        late.add("commission_events", entry(conv, link, f"{9000 + n}", "agt_2",
                                            Decimal("2.5"), when))  # fmt: skip
    return Dataset(first, late, late_hours)


def month_questions(tenant: str) -> list[Question]:
    """Periods holding all of September: from a partial hour of Aug 30, from Aug 31's midnight,
    and exactly September; plus one filtered (read from agent rows, never month rows)."""
    periods = [
        (SEPTEMBER - timedelta(days=1, hours=13, minutes=43), SEPTEMBER + timedelta(days=31)),
        (SEPTEMBER - timedelta(days=1), SEPTEMBER + timedelta(days=30, hours=5)),
        (SEPTEMBER, SEPTEMBER + timedelta(days=30)),
    ]
    out = [Question(tenant_id=tenant, start=s, end=e) for s, e in periods]
    return [*out, Question(tenant_id=tenant, start=periods[0][0], end=periods[0][1],
                           agents=("agt_1", "agt_2"))]  # fmt: skip


async def month_answers(store: AnalyticsStore, tenant: str) -> dict[str, Any]:
    calls: dict[str, Callable[[], Awaitable[Any]]] = {}
    for i, q in enumerate(month_questions(tenant)):
        calls[f"{i} totals"] = partial(store.totals, q)
    calls["by agent"] = partial(store.ranked, month_questions(tenant)[0], Dimension.agent,
                                Metric.revenue, limit=50)  # fmt: skip
    return await gathered(calls)


async def month_plans(store: AnalyticsStore, tenant: str) -> list[Plan]:
    return [await store.where(q, "total", "d") for q in month_questions(tenant)[:3]]


@pytest.mark.timeout(600)
async def test_month_rows_answer_as_raw_rows_through_late_rows_replays_and_rebuilds(
    ch: Client, reader: ClickHouseReader
) -> None:
    """The summary of a period holding a whole month reads that month's month row (the totals
    of its days summed once, ClickHouse 0010) and answers exactly as raw rows do; late rows in
    the month (on its first day too) make it read days and raw hours until the rebuild, which
    sums the month again from the rebuilt days; superseded month rows are deleted."""
    tenant = f"t_mon_{uuid.uuid4().hex[:8]}"
    data = generate_months(tenant)
    raw, rollups = AnalyticsStore(reader, rollups=False), AnalyticsStore(reader)
    insert(ch, data.first)
    builder, now = Builder(ch), utc_ms(M_NOW)
    await settle()
    builder.cycle(now_ms=now)
    september = utc_ms(SEPTEMBER)
    plans = await month_plans(rollups, tenant)
    assert [p.months for p in plans] == [(september,)] * 3
    first_gen = plans[0].month_gens
    expected = await month_answers(raw, tenant)
    assert expected["0 totals"].conversions > 0
    assert differences(expected, await month_answers(rollups, tenant)) == []

    # Late rows on Sep 1 and Sep 14: their hours read raw, September read as days.
    insert(ch, data.late)
    plans = await month_plans(rollups, tenant)
    assert [p.months for p in plans] == [()] * 3
    raw_hours = {h for start, end in plans[0].raw for h in range(start, end, HOUR_MS)}
    assert data.late_hours <= raw_hours
    late = await month_answers(raw, tenant)
    assert late["0 totals"].conversions == expected["0 totals"].conversions + 2
    assert late["0 totals"].unique_visitors == expected["0 totals"].unique_visitors + 2
    assert differences(late, await month_answers(rollups, tenant)) == []
    insert(ch, data.first)  # a replay counts once
    assert differences(late, await month_answers(rollups, tenant)) == []

    # The rebuild, first of the days only (as between the two steps of a pass): the days (all
    # of them, after the replay) have new gens, so the month row, summed from their old gens,
    # is not read.
    await settle()
    summing = builder.build_months
    builder.build_months = lambda *_: []  # type: ignore[method-assign]
    rebuilt = builder.cycle(now_ms=now)
    assert {d.day_ms for d in rebuilt if d.tenant_id == tenant} >= {
        september, september + 13 * DAY_MS
    }  # fmt: skip
    plans = await month_plans(rollups, tenant)
    assert [p.months for p in plans] == [()] * 3
    assert all(not p.raw for p in plans[1:])  # every hour current again: read as days
    assert differences(late, await month_answers(rollups, tenant)) == []
    # Then September is summed again from the rebuilt days.
    builder.build_months = summing  # type: ignore[method-assign]
    assert builder.cycle(now_ms=now) == []  # no day left to build ...
    plans = await month_plans(rollups, tenant)  # ... but the month was
    assert [p.months for p in plans] == [(september,)] * 3
    assert plans[0].month_gens != first_gen
    assert differences(late, await month_answers(rollups, tenant)) == []

    def month_rows() -> int:
        return int(
            ch.command(
                f"SELECT count() FROM {ROLLUPS} WHERE tenant_id = {{t:String}} AND grain = 'mon'",
                parameters={"t": tenant},
            )  # type: ignore[arg-type]
        )

    assert month_rows() == 2  # the superseded one is still there for queries planned before
    # A minute later both the superseded day rows and month row are gone, and the current month
    # row stays (it shares its bucket, Sep 1, with the rebuilt day's rows).
    builder.clean(server_ms(ch) + KEEP_SUPERSEDED_MS)
    assert month_rows() == 1
    assert [p.months for p in await month_plans(rollups, tenant)] == [(september,)] * 3
    assert differences(late, await month_answers(rollups, tenant)) == []
    assert builder.cycle(now_ms=now) == []
