"""PostgreSQL ledger sink: commission entries and their approvals, appended idempotently.

Entries and approvals arrive in batches per tenant, in the order the dataflow decided them (an
approval after its entry); each batch is one transaction:
- entries: `INSERT … ON CONFLICT (entry_id) DO NOTHING` (psycopg pipelines `executemany`).
  Entry ids are derived from the inputs, so a replayed or retried batch inserts nothing new and
  the append-only ledger never changes a row;
- approvals: an `approved` status event by `system:holds` for each entry that is still
  `pending` (its newest status event, else its initial status) and was never approved by the
  holds before. The entries' rows are locked first (`FOR UPDATE`, as the API's status changes
  do), so a person's hold or rejection and this approval serialise: whichever commits first
  decides, and an approval never overrides a person. A replayed approval finds its earlier copy
  and writes nothing.
"""

from __future__ import annotations

from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from dataflows.sinks.deadletter import DeadLetterWriter, isolate
from dataflows.sinks.retry import with_retries
from schemas.ledger import CommissionAccrual, EntryApproval
from schemas.topics import Topic

HOLDS_ACTOR = "system:holds"

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
        e.line_item_id, e.kind._value_, e.status._value_, e.level, e.amount, e.currency, e.fx_rate,
        e.rule_id, e.rule_version, e.occurred_at, e.reason, e.source_event_id,
    )  # fmt: skip


LOCK_ENTRIES = """
SELECT entry_id FROM ledger_entries WHERE entry_id = ANY(%s) ORDER BY entry_id FOR UPDATE
"""

APPROVE = f"""
INSERT INTO ledger_status_events (entry_id, status, actor, reason, changed_at)
SELECT e.entry_id, 'approved', '{HOLDS_ACTOR}', a.reason, a.approved_at
FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS a (entry_id, reason, approved_at)
JOIN ledger_entries e ON e.entry_id = a.entry_id
WHERE COALESCE(
        (SELECT s.status FROM ledger_status_events s
         WHERE s.entry_id = e.entry_id ORDER BY s.id DESC LIMIT 1),
        e.status
      ) = 'pending'
  AND NOT EXISTS (
        SELECT 1 FROM ledger_status_events s
        WHERE s.entry_id = e.entry_id AND s.actor = '{HOLDS_ACTOR}'
      )
ORDER BY a.approved_at, e.entry_id
"""


def write_entries(
    conn: psycopg.Connection[Any], items: list[CommissionAccrual | EntryApproval]
) -> None:
    """Append the entries, then apply the approvals (see the module docstring), in one
    transaction; entries already present and approvals already applied are left untouched."""
    entries = [i for i in items if isinstance(i, CommissionAccrual)]
    approvals = {i.entry_id: i for i in items if isinstance(i, EntryApproval)}
    if not entries and not approvals:
        return
    with conn.transaction(), conn.cursor() as cur:
        if entries:
            cur.executemany(INSERT, [ledger_row(e) for e in entries])
        if approvals:
            ids = sorted(approvals)
            cur.execute(LOCK_ENTRIES, (ids,))
            reasons = [approvals[i].reason for i in ids]
            cur.execute(APPROVE, (ids, reasons, [approvals[i].approved_at for i in ids]))


LedgerBatch = tuple[str, list[CommissionAccrual | EntryApproval]]


def is_content_error(exc: BaseException) -> bool:
    """PostgreSQL refused the values themselves (class 22 data exceptions such as a numeric
    overflow, class 23 constraint violations): retrying the same entry can never succeed."""
    return isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError)


def is_unavailable(exc: BaseException) -> bool:
    """The server could not be reached or the connection broke (a restart, a failover)."""
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


class _Partition(StatelessSinkPartition[LedgerBatch]):
    def __init__(self, postgres_url: str, dead: DeadLetterWriter) -> None:
        self._url = postgres_url
        self._conn = with_retries(self._connect, is_unavailable, store="postgres")
        self._dead = dead

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=5)

    def _reconnect(self) -> None:
        self._conn.close()
        self._conn = self._connect()

    def write_batch(self, items: list[LedgerBatch]) -> None:
        # An entry PostgreSQL refuses for its content is dead-lettered on its own; the others
        # are written (one transaction per surviving part, entries before their approvals).
        # An outage is waited out (`retry`): each part is one transaction, retried whole.
        isolate(
            [e for _, batch in items for e in batch],
            lambda part: with_retries(lambda: write_entries(self._conn, list(part)),
                                      is_unavailable, store="postgres", recover=self._reconnect),
            is_content_error,
            self._reject,
        )  # fmt: skip

    def _reject(self, item: CommissionAccrual | EntryApproval, error: BaseException) -> None:
        what = "ledger entry" if isinstance(item, CommissionAccrual) else "approval"
        self._dead.reject("sink:ledger", f"{what} {item.entry_id}", item.model_dump(), error)

    def close(self) -> None:
        self._conn.close()
        self._dead.close()


class LedgerSink(DynamicSink[LedgerBatch]):
    """Writes keyed batches of entries (`ledger_entries`) and approvals (`ledger_status_events`);
    one connection per worker. Entries refused for their content go to `deadletter_topic`."""

    def __init__(
        self, postgres_url: str, kafka_bootstrap: str, deadletter_topic: str = Topic.DEADLETTER
    ) -> None:
        self._url = postgres_url
        self._kafka = kafka_bootstrap
        self._topic = deadletter_topic

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._url, DeadLetterWriter(self._kafka, self._topic))
