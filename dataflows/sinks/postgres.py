"""PostgreSQL ledger sink: commission entries appended idempotently.

Entries arrive in batches (upstream `op.collect`); each batch is one transaction of
`INSERT … ON CONFLICT (entry_id) DO NOTHING` (psycopg pipelines `executemany`). Entry ids are
derived from the inputs, so a replayed or retried batch inserts nothing new and the append-only
ledger never changes a row.
"""

from __future__ import annotations

from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from schemas.ledger import CommissionAccrual

INSERT = """
INSERT INTO ledger_entries (
    entry_id, tenant_id, agent_id, program_id, conversion_id, order_id, line_item_id, kind,
    status, level, amount, currency, fx_rate, rule_id, rule_version, occurred_at, reason,
    source_event_id
) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (entry_id) DO NOTHING
"""


def ledger_row(e: CommissionAccrual) -> tuple[Any, ...]:
    return (
        e.entry_id, e.tenant_id, e.agent_id, e.program_id, e.conversion_id, e.order_id,
        e.line_item_id, e.kind.value, e.status.value, e.level, e.amount, e.currency, e.fx_rate,
        e.rule_id, e.rule_version, e.occurred_at, e.reason, e.source_event_id,
    )  # fmt: skip


def write_entries(conn: psycopg.Connection[Any], entries: list[CommissionAccrual]) -> None:
    """Append `entries` in one transaction; entries already present are left untouched."""
    if not entries:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(INSERT, [ledger_row(e) for e in entries])


class _Partition(StatelessSinkPartition[tuple[str, list[CommissionAccrual]]]):
    def __init__(self, postgres_url: str) -> None:
        self._conn = psycopg.connect(postgres_url, autocommit=True)

    def write_batch(self, items: list[tuple[str, list[CommissionAccrual]]]) -> None:
        write_entries(self._conn, [e for _, batch in items for e in batch])

    def close(self) -> None:
        self._conn.close()


class LedgerSink(DynamicSink[tuple[str, list[CommissionAccrual]]]):
    """Writes keyed batches of entries to `ledger_entries`; one connection per worker."""

    def __init__(self, postgres_url: str) -> None:
        self._url = postgres_url

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._url)
