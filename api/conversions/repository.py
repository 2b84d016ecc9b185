"""The decided orders in ClickHouse's `conversions` (one row per order, attributed or not, with
its decision since ClickHouse 0006), read with `FINAL` so a re-emitted or replayed row counts
once. SQL is fixed text; every value is a server-side parameter."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from api.clickhouse import ClickHouseReader

COLUMNS = (
    "conversion_id", "order_id", "order_name", "shop", "occurred_at", "attributed_at", "rule",
    "agent_id", "program_id", "click_id", "link_code", "coupon_code", "customer_id", "currency",
    "revenue", "is_new_customer", "explanation", "rejected",
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
    attributed: bool | None = None
    start: datetime | None = None
    end: datetime | None = None
    after: tuple[datetime, str] | None = None
    limit: int = 50


def orders_sql(q: OrderQuery) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of one page of decided orders, newest first."""
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
        conditions.append("(order_id = {order:String} OR order_name = {order:String})")
        params["order"] = q.order
    if q.start is not None:
        conditions.append("occurred_at >= fromUnixTimestamp64Milli({start_ms:Int64}, 'UTC')")
        params["start_ms"] = epoch_ms(q.start)
    if q.end is not None:
        conditions.append("occurred_at < fromUnixTimestamp64Milli({end_ms:Int64}, 'UTC')")
        params["end_ms"] = epoch_ms(q.end)
    if q.after is not None:
        conditions.append(
            "(occurred_at, conversion_id) < "
            "(fromUnixTimestamp64Milli({after_ms:Int64}, 'UTC'), {after_id:String})"
        )
        params["after_ms"], params["after_id"] = epoch_ms(q.after[0]), q.after[1]
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM conversions FINAL WHERE {' AND '.join(conditions)}"
        " ORDER BY occurred_at DESC, conversion_id DESC LIMIT {limit:UInt32}"
    )
    return sql, params


def order_sql(tenant_id: str, order_id: str) -> tuple[str, dict[str, Any]]:
    """(SQL, parameters) of one order's decision by order id (the newest, should a company have
    the same order id in two shops)."""
    sql = (
        f"SELECT {', '.join(COLUMNS)} FROM conversions FINAL"
        " WHERE tenant_id = {tenant:String} AND order_id = {order:String}"
        " ORDER BY occurred_at DESC, conversion_id DESC LIMIT 1"
    )
    return sql, {"tenant": tenant_id, "order": order_id}


class DecisionStore:
    def __init__(self, reader: ClickHouseReader) -> None:
        self.reader = reader

    async def orders(self, q: OrderQuery) -> list[dict[str, Any]]:
        if q.agents == ():
            return []  # nothing in reach: no query
        return _records(await self.reader.query(*orders_sql(q)))

    async def order(self, tenant_id: str, order_id: str) -> dict[str, Any] | None:
        rows = _records(await self.reader.query(*order_sql(tenant_id, order_id)))
        return rows[0] if rows else None


def _records(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows]
