"""The PostgreSQL ledger sink against the real database: entries appended idempotently, and
approvals from the holds applied as status events only to entries that are still pending."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg

from dataflows.sinks.postgres import HOLDS_ACTOR, write_entries
from ingest.cli import ensure_tenant
from schemas.ledger import CommissionAccrual, EntryApproval, EntryKind

AT = datetime(2026, 11, 1, tzinfo=UTC)
APPROVED_AT = datetime(2026, 12, 1, tzinfo=UTC)


def accrual(tenant: str, n: int) -> CommissionAccrual:
    return CommissionAccrual(
        entry_id=f"le_{tenant}_{n}", tenant_id=tenant, agent_id="agt_ana", program_id="prg",
        conversion_id=f"cv_{n}", order_id=str(n), line_item_id="1", kind=EntryKind.ACCRUAL,
        amount=Decimal("10.00"), currency="USD", rule_id="r", rule_version=1, occurred_at=AT,
        source_event_id=f"ev_{n}",
    )  # fmt: skip


def approval(
    entry: CommissionAccrual, reason: str = "hold period of 30 days ended"
) -> EntryApproval:
    return EntryApproval(
        tenant_id=entry.tenant_id, entry_id=entry.entry_id, approved_at=APPROVED_AT, reason=reason
    )


def history(conn: psycopg.Connection[Any], entry_id: str) -> list[tuple[str, str, str]]:
    rows = conn.execute(
        "SELECT status, actor, reason FROM ledger_status_events WHERE entry_id = %s ORDER BY id",
        (entry_id,),
    ).fetchall()
    return [(r[0], r[1], r[2]) for r in rows]


def new_tenant(conn: psycopg.Connection[Any]) -> str:
    tenant = f"t_{uuid.uuid4().hex[:8]}"
    ensure_tenant(conn, tenant)
    return tenant


def test_entries_and_their_approvals_in_one_batch_are_written_in_order(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tenant = new_tenant(conn)
        entry = accrual(tenant, 1)

        write_entries(conn, [entry, approval(entry)])

        assert history(conn, entry.entry_id) == [
            ("approved", HOLDS_ACTOR, "hold period of 30 days ended")
        ]
        changed = conn.execute(
            "SELECT changed_at FROM ledger_status_events WHERE entry_id = %s", (entry.entry_id,)
        ).fetchone()
        assert changed is not None
        assert changed[0] == APPROVED_AT


def test_a_replayed_batch_adds_no_entry_and_no_second_approval(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tenant = new_tenant(conn)
        entries = [accrual(tenant, n) for n in range(3)]
        batch = [*entries, *(approval(e) for e in entries)]

        write_entries(conn, batch)
        write_entries(conn, batch)
        write_entries(conn, [approval(entries[0], reason="invoice INV/1 paid")])

        count = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s", (tenant,)
        ).fetchone()
        assert count == (3,)
        for entry in entries:
            assert [s for s, _, _ in history(conn, entry.entry_id)] == ["approved"]


def test_a_persons_hold_rejection_or_approval_wins_over_the_holds(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tenant = new_tenant(conn)
        held, rejected, approved, pending = (accrual(tenant, n) for n in range(4))
        write_entries(conn, [held, rejected, approved, pending])
        for entry, status in ((held, "hold"), (rejected, "rejected"), (approved, "approved")):
            conn.execute(
                "INSERT INTO ledger_status_events (entry_id, status, actor, reason)"
                " VALUES (%s, %s, 'usr_manager', 'by hand')",
                (entry.entry_id, status),
            )

        write_entries(conn, [approval(e) for e in (held, rejected, approved, pending)])

        assert history(conn, held.entry_id) == [("hold", "usr_manager", "by hand")]
        assert history(conn, rejected.entry_id) == [("rejected", "usr_manager", "by hand")]
        assert history(conn, approved.entry_id) == [("approved", "usr_manager", "by hand")]
        assert [s for s, _, _ in history(conn, pending.entry_id)] == ["approved"]


def test_approval_waits_for_a_concurrent_status_change_of_the_entry(pg_url: str) -> None:
    """A manager's transaction holds the entry's row lock (as the API's status change does) and
    puts it on hold; the sink's approval blocks until it commits, then sees `hold` and skips."""
    with psycopg.connect(pg_url, autocommit=True) as conn:
        tenant = new_tenant(conn)
        entry = accrual(tenant, 1)
        write_entries(conn, [entry])

    manager = psycopg.connect(pg_url)
    manager.execute(
        "SELECT entry_id FROM ledger_entries WHERE entry_id = %s FOR UPDATE", (entry.entry_id,)
    )
    sink_done = threading.Event()

    def sink() -> None:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            write_entries(conn, [approval(entry)])
        sink_done.set()

    thread = threading.Thread(target=sink)
    thread.start()
    assert not sink_done.wait(1.0), "the approval must wait for the manager's row lock"
    manager.execute(
        "INSERT INTO ledger_status_events (entry_id, status, actor) VALUES (%s, 'hold', 'usr_m')",
        (entry.entry_id,),
    )
    manager.commit()
    manager.close()
    thread.join(timeout=30)

    assert sink_done.is_set()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert [s for s, _, _ in history(conn, entry.entry_id)] == ["hold"]
