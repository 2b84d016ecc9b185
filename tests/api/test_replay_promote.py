"""Promoting a replay's shadow ledger against the real PostgreSQL: differences booked as new
adjustment entries in one transaction with an audit entry, nothing updated, idempotent."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.audit import verify_chain
from api.cli import load_entries
from api.context import RequestMeta
from api.db import create_engine, create_sessionmaker
from api.errors import Conflict, NotFound
from api.replays import diff_replay, promote
from dataflows.replay import write_replay_orders, write_shadow_entries
from dataflows.sinks.postgres import write_entries
from ingest.cli import ensure_tenant
from schemas.ledger import CommissionAccrual, EntryKind
from schemas.settings import Settings

AT = datetime(2026, 11, 1, tzinfo=UTC)
META = RequestMeta(request_id="req-promote", source_ip=None, now=datetime(2026, 11, 25, tzinfo=UTC))


def accrual(tenant: str, entry_id: str, agent: str, order: str, amount: str) -> CommissionAccrual:
    return CommissionAccrual(
        entry_id=entry_id, tenant_id=tenant, agent_id=agent, program_id="prg",
        conversion_id=f"cv_{order}", order_id=order, line_item_id="1", kind=EntryKind.ACCRUAL,
        amount=Decimal(amount), currency="USD", rule_id="r", rule_version=1, occurred_at=AT,
        source_event_id=f"ev_{order}",
    )  # fmt: skip


@pytest.fixture
async def sessions(pg_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(Settings(postgres_url=pg_url))
    yield create_sessionmaker(engine)
    await engine.dispose()


def seed(pg_url: str, *, status: str = "complete") -> tuple[str, str]:
    """Live: o1 → ana 10.00, o2 → bob 5.00, o3 → ana 7.00 (not replayed), a manual adjustment
    on o1. Shadow: o1 → bob 10.00 (agent changed), o2 nothing, o4 → ana 3.00 (new)."""
    tenant, replay_id = f"t_{uuid.uuid4().hex[:8]}", f"rpl_{uuid.uuid4().hex}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_tenant(conn, tenant)
        write_entries(conn, [
            accrual(tenant, f"le_1_{tenant}", "ana", "o1", "10.00"),
            accrual(tenant, f"le_2_{tenant}", "bob", "o2", "5.00"),
            accrual(tenant, f"le_3_{tenant}", "ana", "o3", "7.00"),
            accrual(tenant, f"le_m_{tenant}", "ana", "o1", "1.00").model_copy(
                update={"kind": EntryKind.ADJUSTMENT, "reason": "goodwill"}
            ),
        ])  # fmt: skip
        conn.execute(
            "INSERT INTO ledger_replays (replay_id, tenant_id, source, filters, config_version,"
            " status, started_at) VALUES (%s, %s, 'archive', %s, 'cfg', %s, %s)",
            (replay_id, tenant, Jsonb({"programs": []}), status, AT),
        )
        write_shadow_entries(conn, replay_id, [
            accrual(tenant, f"le_1_{tenant}", "bob", "o1", "10.00"),
            accrual(tenant, f"le_4_{tenant}", "ana", "o4", "3.00"),
        ])  # fmt: skip
        write_replay_orders(conn, replay_id, ["o1", "o2", "o4"])
    return tenant, replay_id


def totals(pg_url: str, tenant: str) -> dict[str, tuple[Decimal, int]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT agent_id, sum(amount), count(*) FROM ledger_entries WHERE tenant_id = %s"
            " GROUP BY agent_id ORDER BY agent_id",
            (tenant,),
        ).fetchall()
    return {agent: (amount, n) for agent, amount, n in rows}


async def test_promotion_books_the_differences_with_an_audit_entry_once(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant, replay_id = seed(pg_url)
    async with sessions() as session:
        diff = (await diff_replay(session, replay_id)).diff
    # In scope: o1 and o2 (o3 was not replayed; the manual adjustment is not the dataflow's).
    assert [(t.agent_id, t.live, t.shadow) for t in diff.totals] == [
        ("ana", Decimal("10.00"), Decimal("3.00")),
        ("bob", Decimal("5.00"), Decimal("10.00")),
    ]
    assert sorted(c.kind.value for c in diff.changes) == ["added", "changed", "missing"]
    before = totals(pg_url, tenant)

    async with sessions() as session:
        promotion = await promote(session, replay_id, actor="cli:test", meta=META)
        await session.commit()
    # o1: ana -10, bob +10; o2: bob -5; o4: ana +3
    assert (promotion.adjustments, promotion.net_amount) == (4, Decimal("-2.00"))
    after = totals(pg_url, tenant)
    assert after == {
        "ana": (before["ana"][0] - Decimal("7.00"), before["ana"][1] + 2),
        "bob": (before["bob"][0] + Decimal("5.00"), before["bob"][1] + 2),
    }
    with psycopg.connect(pg_url) as conn:
        booked = conn.execute(
            "SELECT e.order_id, e.agent_id, e.amount, a.target_entry_id FROM ledger_entries e"
            " JOIN ledger_replay_adjustments a USING (entry_id) WHERE e.tenant_id = %s"
            " ORDER BY 1, 2",
            (tenant,),
        ).fetchall()
        audit = conn.execute(
            "SELECT actor, action, entity_id, request_id FROM audit_log WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()
    assert booked == [
        ("o1", "ana", Decimal("-10.0000"), f"le_1_{tenant}"),
        ("o1", "bob", Decimal("10.0000"), f"le_1_{tenant}"),
        ("o2", "bob", Decimal("-5.0000"), f"le_2_{tenant}"),
        ("o4", "ana", Decimal("3.0000"), f"le_4_{tenant}"),
    ]
    assert audit == [("cli:test", "ledger_replay.promote", replay_id, "req-promote")]
    assert verify_chain(load_entries(pg_url, tenant)) == []
    async with sessions() as session:
        assert (await diff_replay(session, replay_id)).diff.is_empty

    async with sessions() as session:
        again = await promote(session, replay_id, actor="cli:test", meta=META)
        await session.commit()
    assert again.already_promoted
    assert totals(pg_url, tenant) == after
    assert len(load_entries(pg_url, tenant)) == 1


async def test_a_promotion_rolled_back_leaves_no_trace(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    tenant, replay_id = seed(pg_url)
    before = totals(pg_url, tenant)
    async with sessions() as session:
        await promote(session, replay_id, actor="cli:test", meta=META)
        await session.rollback()  # e.g. the caller failed after promote returned
    assert totals(pg_url, tenant) == before
    assert load_entries(pg_url, tenant) == []
    async with sessions() as session:
        assert (await promote(session, replay_id, actor="cli:test", meta=META)).adjustments == 4
        await session.commit()


async def test_only_a_complete_replay_can_be_promoted(
    pg_url: str, sessions: async_sessionmaker[AsyncSession]
) -> None:
    _, replay_id = seed(pg_url, status="running")
    async with sessions() as session:
        with pytest.raises(Conflict):
            await promote(session, replay_id, actor="cli:test", meta=META)
        await session.rollback()
        with pytest.raises(NotFound):
            await promote(session, "rpl_missing", actor="cli:test", meta=META)
