"""The decided orders in ClickHouse's `conversions` (one row per order, attributed or not, with
its decision since ClickHouse 0006), read with `FINAL` so a re-emitted or replayed row counts
once. SQL is fixed text; every value is a server-side parameter.

A page is read in two steps, because `FINAL` cannot filter before it merges (no PREWHERE), so
every column a query names is read for every row of the scanned range:
1. the page's keys, `(occurred_at, conversion_id)`, naming only the light columns it filters and
   sorts on, over a time window that widens until the page is full (`WINDOWS`): newest first,
   a page of a busy company is found in the last day and a sparse filter widens to all time;
2. the page's rows, explanation and rejected candidates included, by their sorting key
   (tenant, day, conversion id), which reads only the granules that hold them.
A lookup by order id or name finds the order's key in `conversion_refs` (ClickHouse 0006, sorted
by tenant and order id or name) instead: two primary-key reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from api.clickhouse import ClickHouseReader

COLUMNS = (
    "conversion_id", "order_id", "order_name", "shop", "occurred_at", "attributed_at", "rule",
    "agent_id", "program_id", "click_id", "link_code", "coupon_code", "customer_id", "currency",
    "revenue", "is_new_customer", "explanation", "rejected",
)  # fmt: skip

# How far back from the page's anchor (the cursor, else `to`, else now) each try reads; `None` =
# no lower bound but the caller's `from`. Each window holds the previous one, so the first full
# page is the page the unbounded query would return.
WINDOWS: tuple[timedelta | None, ...] = (
    timedelta(days=1), timedelta(days=7), timedelta(days=30), timedelta(days=120), None,
)  # fmt: skip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def epoch_ms(when: datetime) -> int:
    """Milliseconds since the epoch, exactly (no float rounding: cursors must match rows)."""
    return (when - _EPOCH) // timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class OrderQuery:
    """Which decided orders to read: the tenant, the agents in reach (`None` = all, and then the
    unattributed orders too), and the optional filters. `after` = (order time, conversion id) of
    the last row of the previous page (newest first)."""

    tenant_id: str
    agents: tuple[str, ...] | None
    order: str | None = None
    program_id: str | None = None
    attributed: bool | None = None
    start: datetime | None = None
    end: datetime | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


def windows(q: OrderQuery, now: datetime) -> list[OrderQuery]:
    """The queries to try in turn: `q` with ever earlier `start`s, ending with `q` itself.

    An order lookup (`order`) has its own index and is tried once; so is a query whose `from`
    is within the first window."""
    if q.order is not None:
        return [q]
    anchor = q.after[0] if q.after is not None else q.end if q.end is not None else now
    tries: list[OrderQuery] = []
    for span in WINDOWS:
        if span is None:
            break
        start = anchor - span
        if q.start is not None and start <= q.start:
            break
        tries.append(replace(q, start=start))
    return [*tries, q]


# The keys of the orders whose id or name is `{order}`: the sorting key of `conversions` reads
# only their granules.
_BY_REF = (
    "(toDate(occurred_at), conversion_id) IN (SELECT toDate(occurred_at), conversion_id"
    " FROM conversion_refs FINAL WHERE tenant_id = {tenant:String} AND ref = {order:String})"
)


def keys_sql(q: OrderQuery) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of one page's keys `(occurred_at, conversion_id)`, newest first."""
    conditions = ["tenant_id = {tenant:String}"]
    params: dict[str, Any] = {"tenant": q.tenant_id, "limit": q.limit}
    if q.agents is not None:
        # A restricted reach sees the orders credited to its agents: never an unattributed one.
        conditions.append("agent_id IN {agents:Array(String)}")
        params["agents"] = list(q.agents)
    if q.attributed is True:
        conditions.append("rule != 'unattributed'")
    elif q.attributed is False:
        conditions.append("rule = 'unattributed'")
    if q.order is not None:
        conditions.append(
            f"{_BY_REF} AND (order_id = {{order:String}} OR order_name = {{order:String}})"
        )
        params["order"] = q.order
    if q.program_id is not None:
        conditions.append("program_id = {program:String}")
        params["program"] = q.program_id
    if q.start is not None:
        conditions.append("occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')")
        params["start_ms"] = epoch_ms(q.start)
    if q.end is not None:
        conditions.append("occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')")
        params["end_ms"] = epoch_ms(q.end)
    if q.after is not None:
        # The plain bound lets the sorting key skip newer days; the tuple orders ties by id.
        conditions.append(
            "occurred_at <= fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC')"
            " AND (occurred_at, conversion_id) < "
            "(fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC'), {after_id:String})"
        )
        params["after_ms"], params["after_id"] = epoch_ms(q.after[0]), q.after[1]
    sql = (
        "SELECT toUnixTimestamp64Milli(occurred_at), conversion_id FROM conversions FINAL"
        f" WHERE {' AND '.join(conditions)}"
        " ORDER BY occurred_at DESC, conversion_id DESC LIMIT {limit:UInt32}"
    )
    return sql, params


def rows_sql(tenant_id: str, keys: Sequence[tuple[int, str]]) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of the full rows of `keys` (epoch ms, conversion id), by sorting key."""
    days = sorted({(_EPOCH + timedelta(milliseconds=ms)).date() for ms, _ in keys})
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM conversions FINAL"
        " WHERE tenant_id = {tenant:String} AND toDate(occurred_at) IN {days:Array(Date)}"
        " AND conversion_id IN {ids:Array(String)}"
    )
    return sql, {"tenant": tenant_id, "days": days, "ids": [cid for _, cid in keys]}


def order_sql(tenant_id: str, order_id: str) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of one order's decision by order id (the newest, should a company have
    the same order id in two shops)."""
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM conversions FINAL"
        f" WHERE tenant_id = {{tenant:String}} AND {_BY_REF} AND order_id = {{order:String}}"
        " ORDER BY occurred_at DESC, conversion_id DESC LIMIT 1"
    )
    return sql, {"tenant": tenant_id, "order": order_id}


class DecisionStore:
    def __init__(self, reader: ClickHouseReader) -> None:
        self.reader = reader

    async def orders(self, q: OrderQuery, now: datetime) -> list[dict[str, Any]]:
        """One page of decided orders, newest first (see the module's two steps)."""
        if q.agents == ():
            return []  # nothing in reach: no query
        keys: list[tuple[int, str]] = []
        for attempt in windows(q, now):
            keys = [(int(ms), str(cid)) for ms, cid in await self.reader.query(*keys_sql(attempt))]
            if len(keys) >= q.limit:
                break
        if not keys:
            return []
        by_id = {row["conversion_id"]: row for row in
                 _records(await self.reader.query(*rows_sql(q.tenant_id, keys)))}  # fmt: skip
        return [by_id[cid] for _, cid in keys if cid in by_id]

    async def order(self, tenant_id: str, order_id: str) -> dict[str, Any] | None:
        rows = _records(await self.reader.query(*order_sql(tenant_id, order_id)))
        return rows[0] if rows else None


def _records(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]
