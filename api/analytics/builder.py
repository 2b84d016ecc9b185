"""The rollup builder: rebuilds the stale closed hours of each day (see `api.analytics.rollups`).

Run it next to the API (one is enough; two are safe, they only duplicate work)::

    python -m api.analytics.builder [--interval 10] [--once]
    refstream analytics build [--interval 10] [--once]   # the same loop

`refstream up`, docker-compose (service `rollups`) and deploy/k8s (`rollups.yaml`) run it.

Each cycle: (1) days with a closed hour that no build covers, or touched after their build
(`rollup_touches`: materialized views record every insert's hours, and a conversion's insert the
hours of its order's refunds), are rebuilt whole from raw rows with `FINAL` into a new gen,
several consecutive days per INSERT; (2) the new gen is registered in
`rollup_builds_v2` only once all its rows are written, so queries switch to it atomically; rows
of superseded gens are deleted a minute later, when no query planned before the switch can still
be reading them, in one `ALTER TABLE ... DELETE` per tenant and pass (a mutation that rewrites
the parts it touches, the `by_key` projection included; ClickHouse 0009 says why not a lightweight
DELETE); (3) every whole UTC month whose days are all built, and whose month rows are missing
or were summed from other day gens, gets its month rows (totals) summed from the current day
rows under a gen of its own, registered in `rollup_months` with those day gens once written
(superseded month rows are deleted like days); (4) a monthly partition of `rollups_v2` the pass
wrote is merged into one part once it has more than `MERGE_ABOVE_PARTS` parts.

Each build also copies its days' agent rows into `rollup_agents` (ClickHouse 0011, sorted by
agent, read by queries narrowed on agents) under the same gen, before it registers the gen, and
registers it as the days' `agent_gen`. A current build without one (written before 0011, or by a
builder of the previous version during a rollout) gets its agent rows copied from `rollups_v2`
under a new gen, then registered again with that `agent_gen` and its own `built_at` (in a
`ReplacingMergeTree`, of rows with the same version the last inserted one stays): "keying".
Superseded agent rows are deleted like the days', in one more mutation per tenant and pass.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field, replace

import clickhouse_connect
from clickhouse_connect.driver.client import Client

from api.analytics.rollups import (
    AGENT_CUBOID,
    AGENT_ROLLUPS,
    BUILDS,
    DAY_MS,
    HOUR_MS,
    MONTH,
    MONTHS,
    ROLLUPS,
    Build,
    DayWork,
    MonthWork,
    build_sql,
    month_sql,
    new_gen,
    next_month,
    stale_days,
    stale_months,
)
from schemas.settings import Settings

logger = logging.getLogger(__name__)

# A build's `built_at` is recorded this much before it started reading: a row whose touch was
# taken just before the build but whose part became visible after the read started still leaves
# its hour stale (rebuilt next cycle) instead of missing from a "current" build.
SAFETY_MS = 2_000
# Superseded gens are deleted this long after the switch (longer than any plan → query gap).
KEEP_SUPERSEDED_MS = 60_000
# Days per INSERT when many are stale (a first build, a replay): fewer statements, bounded memory.
BATCH_DAYS = 7
# After a pass, a monthly partition of `rollups_v2` it wrote is merged into one part when it has
# more parts than this: every part a query touches costs it an index lookup and a read of its own
# (after a first build, 27 parts made the 180-day summary about twice as slow as 7 merged ones).
# A builder rebuilding the current day each hour adds a part an hour, so the current month is
# merged every few hours; background merges may do it sooner.
MERGE_ABOVE_PARTS = 3

_TOUCHES = (
    "SELECT tenant_id, toInt64(toUnixTimestamp(hour)) * 1000,"
    " toInt64(toUnixTimestamp64Milli(touched_at)) FROM rollup_touches FINAL"
    " WHERE hour < fromUnixTimestamp64Milli({closed:Int64}, 'UTC')"
)
_BUILDS = (
    "SELECT tenant_id, toInt64(toUnixTimestamp(toDateTime(day, 'UTC'))) * 1000,"
    " toInt64(toUnixTimestamp64Milli(built_at)), toInt64(toUnixTimestamp(until)) * 1000, gen,"
    f" agent_gen FROM {BUILDS} FINAL"
)
_REGISTER = (
    f"INSERT INTO {BUILDS} (tenant_id, day, built_at, until, gen, agent_gen)"
    " SELECT {tenant:String}, toDate(fromUnixTimestamp64Milli({day:Int64}, 'UTC')),"
    " fromUnixTimestamp64Milli({built:Int64}, 'UTC'),"
    " toDateTime(intDiv({until:Int64}, 1000), 'UTC'), {gen:UInt64}, {agent_gen:UInt64}"
)
_COLUMNS = (
    "tenant_id, cuboid, grain, bucket, k, gen, agent_id, program_id, shop, link_code,"
    " coupon_code, n_clicks, visitors, n_conversions, m_revenue, n_entries, m_commission,"
    " n_refunds, m_refunded"
)
_DAY = "intDiv(toUInt32(bucket), 86400) * 86400"
# The agent rows of the given days (UTC day starts, epoch seconds), each of its day's gen in
# `rollups_v2`, copied into `rollup_agents` under gen `agent_gen`.
_COPY_AGENTS = (
    f"INSERT INTO {AGENT_ROLLUPS} ({_COLUMNS}) SELECT "
    + _COLUMNS.replace(" gen,", " {agent_gen:UInt64},")
    + f" FROM {ROLLUPS} WHERE tenant_id = {{tenant:String}} AND cuboid = '{AGENT_CUBOID}'"
    " AND bucket >= toDateTime({first:UInt32}, 'UTC')"
    " AND bucket < toDateTime({last:UInt32}, 'UTC')"
    f" AND gen = transform({_DAY}, {{days:Array(UInt32)}}, {{gens:Array(UInt64)}}, toUInt64(0))"
    " SETTINGS optimize_use_projections = 0"
)
# Every agent row of the given days that is not of its day's current agent gen.
_DELETE_AGENTS = (
    f"ALTER TABLE {AGENT_ROLLUPS} DELETE WHERE tenant_id = {{tenant:String}}"
    " AND bucket >= toDateTime({first:UInt32}, 'UTC')"
    " AND bucket < toDateTime({last:UInt32}, 'UTC')"
    f" AND {_DAY} IN {{days:Array(UInt32)}}"
    f" AND gen != transform({_DAY}, {{days:Array(UInt32)}}, {{gens:Array(UInt64)}}, toUInt64(0))"
)
_MONTHS = (
    "SELECT tenant_id, toInt64(toUnixTimestamp(toDateTime(month, 'UTC'))) * 1000, gen, day_gens"
    f" FROM {MONTHS} FINAL"
)
_REGISTER_MONTH = (
    f"INSERT INTO {MONTHS} (tenant_id, month, built_at, gen, day_gens) SELECT {{tenant:String}},"
    " toDate(fromUnixTimestamp64Milli({month:Int64}, 'UTC')),"
    " fromUnixTimestamp64Milli({built:Int64}, 'UTC'), {gen:UInt64}, {day_gens:Array(UInt64)}"
)
# Every row of the given days (UTC day starts, epoch seconds) that is not of its day's gen, and
# every month row of the given months that is not of its month's gen. A month row's bucket is
# its month's first day, so the day part leaves month rows alone (they have gens of their own).
_DELETE = (
    f"ALTER TABLE {ROLLUPS} DELETE WHERE tenant_id = {{tenant:String}}"
    " AND bucket >= toDateTime({first:UInt32}, 'UTC')"
    " AND bucket < toDateTime({last:UInt32}, 'UTC')"
    f" AND ((grain != '{MONTH}'"
    " AND intDiv(toUInt32(bucket), 86400) * 86400 IN {days:Array(UInt32)}"
    " AND gen != transform(intDiv(toUInt32(bucket), 86400) * 86400, {days:Array(UInt32)},"
    " {gens:Array(UInt64)}, toUInt64(0)))"
    f" OR (grain = '{MONTH}' AND toUInt32(bucket) IN {{months:Array(UInt32)}}"
    " AND gen != transform(toUInt32(bucket), {months:Array(UInt32)},"
    " {month_gens:Array(UInt64)}, toUInt64(0))))"
)


_PARTS = (
    "SELECT partition_id, count() FROM system.parts WHERE database = currentDatabase()"
    " AND table = {table:String} AND active AND partition_id IN {ids:Array(String)}"
    " GROUP BY partition_id"
)


def partition_ids(work: list[DayWork], months: list[MonthWork] | None = None) -> list[str]:
    """The `rollups_v2` partitions (`toYYYYMM(bucket)`) the days of `work` (and the month rows
    of `months`) write."""
    starts = [day.day_ms for day in work] + [month.month_ms for month in months or []]
    return sorted({time.strftime("%Y%m", time.gmtime(ms // 1000)) for ms in starts})


def merge_parts(
    client: Client, ids: list[str], *, above: int = MERGE_ABOVE_PARTS, table: str = ROLLUPS
) -> list[str]:
    """Merge each of the partitions `ids` of `table` (`rollups_v2`, or `rollup_agents`, which is
    partitioned alike) that has more than `above` active parts into one (`OPTIMIZE ... FINAL`);
    returns the partitions merged."""
    if not ids:
        return []
    rows = client.query(_PARTS, parameters={"table": table, "ids": ids}).result_rows
    merged = []
    for partition, parts in rows:
        if int(parts) > above and str(partition).isdigit():  # ids are YYYYMM
            client.command(f"OPTIMIZE TABLE {table} PARTITION ID '{partition}' FINAL")
            merged.append(str(partition))
    return sorted(merged)


def server_ms(client: Client) -> int:
    return int(client.command("SELECT toUnixTimestamp64Milli(now64(3))"))  # type: ignore[arg-type]


def batches(work: list[DayWork], days: int = BATCH_DAYS) -> list[list[DayWork]]:
    """Consecutive days of one tenant, at most `days` per batch (one INSERT each)."""
    out: list[list[DayWork]] = []
    for day in work:
        last = out[-1][-1] if out else None
        if (
            last is not None
            and last.tenant_id == day.tenant_id
            and last.day_ms + DAY_MS == day.day_ms
            and last.until_ms == last.day_ms + DAY_MS
            and len(out[-1]) < days
        ):
            out[-1].append(day)
        else:
            out.append([day])
    return out


def copy_agents(
    client: Client, tenant: str, days: list[int], gens: list[int], agent_gen: int
) -> None:
    """Copy the agent rows of the consecutive `days` (ms), each of its gen in `gens`, from
    `rollups_v2` into `rollup_agents` under `agent_gen`."""
    client.command(
        _COPY_AGENTS,
        parameters={"tenant": tenant, "first": days[0] // 1000,
                    "last": (days[-1] + DAY_MS) // 1000, "days": [d // 1000 for d in days],
                    "gens": gens, "agent_gen": agent_gen},
    )  # fmt: skip


def register(client: Client, tenant: str, day_ms: int, build: Build) -> None:
    """Register `build` as the current one of the tenant's day (`rollup_builds_v2`)."""
    client.command(
        _REGISTER,
        parameters={"tenant": tenant, "day": day_ms, "built": build.built_ms,
                    "until": build.until_ms, "gen": build.gen, "agent_gen": build.agent_gen},
    )  # fmt: skip


def build_days(client: Client, batch: list[DayWork], *, built_ms: int) -> int:
    """Write the consecutive days of `batch` (their closed hours) under a new gen, copy their
    agent rows into `rollup_agents` under the same gen, then register the gen (as gen and
    agent gen) for each day; returns the gen."""
    gen = new_gen()
    first, last = batch[0], batch[-1]
    whole = last.until_ms if last.until_ms == last.day_ms + DAY_MS else last.day_ms
    client.command(
        build_sql(),
        parameters={"tenant": first.tenant_id, "r0a": first.day_ms, "r0b": last.until_ms,
                    "gen": gen, "whole": whole},
    )  # fmt: skip
    days = [day.day_ms for day in batch]
    copy_agents(client, first.tenant_id, days, [gen] * len(days), gen)
    for day in batch:
        register(client, day.tenant_id, day.day_ms, Build(built_ms, day.until_ms, gen, gen))
    return gen


def key_days(client: Client, builds: dict[tuple[str, int], Build]) -> list[tuple[str, int]]:
    """Copy the agent rows of every current build without an agent gen (`builds`: (tenant, day
    ms) → current build) into `rollup_agents`, a few consecutive days per INSERT under a new
    gen, then register each build again with that agent gen (same `built_at`, `until`, gen);
    returns the (tenant, day) keyed. A build replaced meanwhile wins over this registration
    (its `built_at` is later) and the copied rows are never read."""
    todo = [
        DayWork(tenant, day, build.until_ms)
        for (tenant, day), build in sorted(builds.items())
        if build.agent_gen == 0
    ]
    keyed = []
    for batch in batches(todo):
        agent_gen = new_gen()
        tenant, days = batch[0].tenant_id, [day.day_ms for day in batch]
        copy_agents(client, tenant, days, [builds[(tenant, d)].gen for d in days], agent_gen)
        for day in days:
            builds[(tenant, day)] = replace(builds[(tenant, day)], agent_gen=agent_gen)
            register(client, tenant, day, builds[(tenant, day)])
            keyed.append((tenant, day))
    return keyed


def build_month(client: Client, work: MonthWork, *, built_ms: int) -> int:
    """Sum the month rows of `work` from its days' rows of the gens it names, under a new gen,
    then register the gen with those day gens; returns the gen."""
    gen = new_gen()
    days = [d // 1000 for d in range(work.month_ms, next_month(work.month_ms), DAY_MS)]
    client.command(
        month_sql(),
        parameters={"tenant": work.tenant_id, "month": work.month_ms // 1000,
                    "next": next_month(work.month_ms) // 1000, "gen": gen, "days": days,
                    "day_gens": list(work.day_gens)},
    )  # fmt: skip
    client.command(
        _REGISTER_MONTH,
        parameters={"tenant": work.tenant_id, "month": work.month_ms, "built": built_ms,
                    "gen": gen, "day_gens": list(work.day_gens)},
    )  # fmt: skip
    return gen


@dataclass
class Builder:
    """Builds rollups over one ClickHouse database; `cycle` is one pass."""

    client: Client
    # (when, tenant, day) of days rebuilt: older gens are deleted `KEEP_SUPERSEDED_MS` later
    superseded: list[tuple[int, str, int]] = field(default_factory=list)
    # (when, tenant, month) of months summed again, likewise
    superseded_months: list[tuple[int, str, int]] = field(default_factory=list)

    def cycle(self, now_ms: int | None = None) -> list[DayWork]:
        """One pass; returns the days built. `now_ms` (server time) decides which hour is open."""
        started = server_ms(self.client)
        now = started if now_ms is None else now_ms
        closed = now // HOUR_MS * HOUR_MS
        touches = [
            (str(t), int(h), int(at))
            for t, h, at in self.client.query(_TOUCHES, parameters={"closed": closed}).result_rows
        ]
        builds = {
            (str(t), int(d)): Build(int(b), int(u), int(g), int(a))
            for t, d, b, u, g, a in self.client.query(_BUILDS).result_rows
        }
        work = stale_days(touches, builds, closed)
        current = dict(builds)
        for batch in batches(work):
            built = server_ms(self.client) - SAFETY_MS
            gen = build_days(self.client, batch, built_ms=built)
            self.superseded += [
                (started, day.tenant_id, day.day_ms)
                for day in batch
                if (day.tenant_id, day.day_ms) in builds
            ]
            for day in batch:
                current[(day.tenant_id, day.day_ms)] = Build(built, day.until_ms, gen, gen)
        keyed = key_days(self.client, current)
        months = self.build_months(current, started)
        ids = partition_ids(work, months)
        merge_parts(self.client, ids)
        keyed_work = [DayWork(t, d, d) for t, d in keyed]
        merge_parts(self.client, partition_ids(work + keyed_work), table=AGENT_ROLLUPS)
        self.clean(started)
        return work

    def build_months(self, builds: dict[tuple[str, int], Build], started: int) -> list[MonthWork]:
        """Sum every whole month whose days are built and whose month rows are missing or were
        summed from other day gens (`stale_months`); returns the months summed."""
        registered = {
            (str(t), int(m)): tuple(int(g) for g in gens)
            for t, m, _, gens in self.client.query(_MONTHS).result_rows
        }
        work = stale_months(builds, registered)
        for month in work:
            build_month(self.client, month, built_ms=server_ms(self.client))
            if (month.tenant_id, month.month_ms) in registered:
                self.superseded_months.append((started, month.tenant_id, month.month_ms))
        return work

    def clean(self, now_ms: int) -> None:
        """Delete the rows of gens (of days and of months) superseded at least
        `KEEP_SUPERSEDED_MS` before `now_ms`."""
        cutoff = now_ms - KEEP_SUPERSEDED_MS
        due = [s for s in self.superseded if s[0] <= cutoff]
        due_months = [s for s in self.superseded_months if s[0] <= cutoff]
        if not due and not due_months:
            return
        rows = self.client.query(_BUILDS).result_rows
        current = {(str(t), int(d)): int(g) for t, d, _, _, g, _ in rows}
        # a day whose current build has no agent rows (0: built by a previous builder version)
        # keeps its agent rows until it has: its agent gen is not known to be superseded
        current_agents = {(str(t), int(d)): int(a) for t, d, _, _, _, a in rows if int(a)}
        current_months = {
            (str(t), int(m)): int(g) for t, m, g, _ in self.client.query(_MONTHS).result_rows
        }
        agent_days = _current_gens(due, current_agents)  # (taken off `superseded` below)
        days = _current_gens(due, current, self.superseded)
        months = _current_gens(due_months, current_months, self.superseded_months)
        # One mutation per tenant: each one rewrites every part it touches.
        for tenant in sorted({*days, *months}):
            day_gens, month_gens = days.get(tenant, {}), months.get(tenant, {})
            starts, firsts = sorted(day_gens), sorted(month_gens)
            ends = [d + DAY_MS for d in starts] + [next_month(m) for m in firsts]
            # (an empty list is given one entry no bucket has: 1970-01-01 under gen 0)
            self.client.command(
                _DELETE,
                parameters={"tenant": tenant, "first": min(starts + firsts) // 1000,
                            "last": max(ends) // 1000,
                            "days": [d // 1000 for d in starts] or [0],
                            "gens": [day_gens[d] for d in starts] or [0],
                            "months": [m // 1000 for m in firsts] or [0],
                            "month_gens": [month_gens[m] for m in firsts] or [0]},
                settings={"mutations_sync": 2},
            )  # fmt: skip
        for tenant, gens in sorted(agent_days.items()):
            starts = sorted(gens)
            self.client.command(
                _DELETE_AGENTS,
                parameters={"tenant": tenant, "first": starts[0] // 1000,
                            "last": (starts[-1] + DAY_MS) // 1000,
                            "days": [d // 1000 for d in starts],
                            "gens": [gens[d] for d in starts]},
                settings={"mutations_sync": 2},
            )  # fmt: skip


def client_for(settings: Settings) -> Client:
    target = settings.clickhouse
    return clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username, password=target.password,
        database=target.database, secure=target.secure, send_receive_timeout=3600,
    )  # fmt: skip


def run(settings: Settings, *, interval: float = 10.0, once: bool = False) -> None:
    """The builder's loop: a pass every `interval` seconds (one pass with `once`). Shared by
    `python -m api.analytics.builder` and `refstream analytics build`, which `refstream up`,
    docker-compose and deploy/k8s run."""
    builder = Builder(client_for(settings))
    while True:
        started = time.monotonic()
        built = builder.cycle()
        if built:
            logger.info("rollups: built %d day(s) in %.1f s", len(built),
                        time.monotonic() - started)  # fmt: skip
        if once:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - started)))


def _current_gens(
    due: list[tuple[int, str, int]],
    current: dict[tuple[str, int], int],
    pending: list[tuple[int, str, int]] | None = None,
) -> dict[str, dict[int, int]]:
    """Per tenant, the current gen of each bucket (day or month) in `due` (superseded entries
    `(at, tenant, bucket)`), each entry taken off `pending` when given; a bucket with no
    current gen is left out."""
    out: dict[str, dict[int, int]] = {}
    for item in due:
        _, tenant, bucket = item
        gen = current.get((tenant, bucket))
        if gen is not None:
            out.setdefault(tenant, {})[bucket] = gen
        if pending is not None:
            pending.remove(item)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between passes")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    run(Settings(), interval=args.interval, once=args.once)


if __name__ == "__main__":
    main()
