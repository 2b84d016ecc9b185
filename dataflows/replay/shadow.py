"""The shadow ledger: the replay's entries and decided orders written to PostgreSQL
(idempotent COPY), its dead letters counted, and the canonical dump its digest is taken of."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import bytewax.operators as op
import psycopg
from bytewax.dataflow import Stream
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from dataflows.attribution.flow import (
    Batching,
    LedgerItem,
    attribution_steps,
)
from dataflows.config import (
    ConfigProvider,
)
from dataflows.replay.scope import REPLAY_TUNING, ReplayCounters
from dataflows.sinks.clickhouse import COLUMNS, Row
from dataflows.sinks.postgres import ledger_row
from schemas.events.envelope import DeadLetter
from schemas.ledger import CommissionAccrual

# --- the shadow ledger -----------------------------------------------------------------------

_SHADOW_COLUMNS = (
    "entry_id, tenant_id, agent_id, program_id, conversion_id, order_id, line_item_id, kind, "
    "status, level, amount, currency, fx_rate, rule_id, rule_version, occurred_at, reason, "
    "source_event_id"
)


def _copy_insert(
    conn: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[Sequence[Any]]
) -> None:
    """COPY rows into a temporary table, then INSERT … ON CONFLICT DO NOTHING: idempotent like
    the live ledger sink, at COPY speed. One transaction."""
    temp = f"{table}_in"
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY {temp} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp} ON CONFLICT DO NOTHING"
        )


def write_shadow_entries(
    conn: psycopg.Connection[Any], replay_id: str, entries: Sequence[CommissionAccrual]
) -> None:
    """Append `entries` to replay `replay_id`'s shadow ledger (entries already there stay)."""
    if entries:
        rows = ((replay_id, *ledger_row(e)) for e in entries)
        _copy_insert(conn, "ledger_shadow_entries", f"replay_id, {_SHADOW_COLUMNS}", rows)


def write_replay_orders(
    conn: psycopg.Connection[Any], replay_id: str, order_ids: Iterable[str]
) -> None:
    rows = [(replay_id, order_id) for order_id in sorted(set(order_ids))]
    if rows:
        _copy_insert(conn, "ledger_replay_orders", "replay_id, order_id", rows)


class _ShadowPartition(StatelessSinkPartition[Any]):
    def __init__(self, postgres_url: str, replay_id: str, write: Callable[..., None]) -> None:
        self._conn = psycopg.connect(postgres_url, autocommit=True)
        self._replay_id = replay_id
        self._write = write

    def write_batch(self, items: list[Any]) -> None:
        self._write(self._conn, self._replay_id, items)

    def close(self) -> None:
        self._conn.close()


class _ShadowSink(DynamicSink[Any]):
    def __init__(self, postgres_url: str, replay_id: str, write: Callable[..., None]) -> None:
        self._args = (postgres_url, replay_id, write)

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ShadowPartition:
        return _ShadowPartition(*self._args)


class _CountingPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, counters: ReplayCounters) -> None:
        self._counters = counters

    def write_batch(self, items: list[DeadLetter]) -> None:
        for dead in items:
            reason = dead.reason.split(":", 1)[0]
            self._counters.dead[reason] = self._counters.dead.get(reason, 0) + 1

    def close(self) -> None:
        pass


class _CountingSink(DynamicSink[DeadLetter]):
    def __init__(self, counters: ReplayCounters) -> None:
        self._counters = counters

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self._counters)


_CONVERSION_ORDER = COLUMNS["conversions"].index("order_id")


def _order_ids(batch: tuple[str, list[Row]]) -> list[str]:
    table, rows = batch
    return [row[_CONVERSION_ORDER] for row in rows] if table == "conversions" else []


def replay_flow(
    values: Stream[bytes | None],
    config: ConfigProvider,
    *,
    postgres_url: str,
    replay_id: str,
    programs: Sequence[str],
    counters: ReplayCounters,
    batching: Batching,
) -> None:
    """Wires `values` through `attribution_steps` into the shadow ledger of `replay_id`; the
    analytics rows are not written (the live ClickHouse tables are not the replay's)."""
    outputs = attribution_steps(
        values, config, tuning=REPLAY_TUNING, batching=batching, analytics=False
    )
    wanted = frozenset(programs)

    def entries(batch: tuple[str, list[LedgerItem]]) -> list[CommissionAccrual]:
        # REPLAY_TUNING decides no approvals: a shadow ledger has entries, not statuses.
        kept = [
            e for e in batch[1]
            if isinstance(e, CommissionAccrual) and (not wanted or e.program_id in wanted)
        ]  # fmt: skip
        counters.entries += len(kept)
        return kept

    def orders(batch: tuple[str, list[Row]]) -> list[str]:
        found = _order_ids(batch)
        counters.orders += len(found)
        return found

    op.output(
        "shadow_out",
        op.map("shadow_entries", outputs.ledger, entries),
        _ShadowSink(postgres_url, replay_id, _write_entry_batches),
    )
    op.output(
        "orders_out",
        op.map("scope_orders", outputs.rows, orders),
        _ShadowSink(postgres_url, replay_id, _write_order_batches),
    )
    op.output("dead_out", outputs.dead, _CountingSink(counters))


def _write_entry_batches(
    conn: psycopg.Connection[Any], replay_id: str, batches: list[list[CommissionAccrual]]
) -> None:
    write_shadow_entries(conn, replay_id, [e for batch in batches for e in batch])


def _write_order_batches(
    conn: psycopg.Connection[Any], replay_id: str, batches: list[list[str]]
) -> None:
    write_replay_orders(conn, replay_id, [o for batch in batches for o in batch])


def shadow_dump(conn: psycopg.Connection[Any], replay_id: str) -> bytes:
    """The canonical text of a shadow ledger version (every column, in UTC, ordered by entry
    id): two replays of the same input give the same bytes."""
    out = bytearray()
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        query = (
            f"COPY (SELECT {_SHADOW_COLUMNS} FROM ledger_shadow_entries"
            f" WHERE replay_id = {_literal(conn, replay_id)} ORDER BY entry_id) TO STDOUT"
        )
        with cur.copy(query) as copy:
            for chunk in copy:
                out += chunk
    return bytes(out)


def _literal(conn: psycopg.Connection[Any], value: str) -> str:
    return psycopg.sql.Literal(value).as_string(conn)
