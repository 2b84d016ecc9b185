"""Every query of the replay service: replays, the live ledger in a replay's scope, the shadow
version, promotions. Built on the caller's session (the caller owns the transaction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from api.db import ReadSession
from api.models import LedgerEntry
from api.replays.diff import Adjustment, EntryFacts
from schemas.ledger import EntryKind, EntryStatus

# Second key space of the advisory lock that serialises promotions of one tenant.
_PROMOTION_LOCK_NAMESPACE = 0x5E9A7
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class ReplayRow:
    replay_id: str
    tenant_id: str
    status: str
    filters: dict[str, Any]
    what_if: dict[str, Any] | None
    events: int
    entries: int
    dead_letters: int
    ledger_digest: str | None


@dataclass(frozen=True, slots=True)
class PromotionRow:
    replay_id: str
    actor: str
    adjustments: int
    audit_seq: int
    promoted_at: datetime


_FACTS = (
    "agent_id", "currency", "amount", "program_id", "conversion_id", "order_id", "line_item_id",
    "level", "fx_rate", "rule_id", "rule_version", "occurred_at",
)  # fmt: skip


def _columns(alias: str) -> str:
    return ", ".join(f"{alias}.{c}" for c in _FACTS)


def _scope(alias: str, filters: dict[str, Any], params: dict[str, Any]) -> str:
    """The replay's program and event-time filters on entries (same on both sides)."""
    where = ""
    if filters.get("programs"):
        where += f" AND {alias}.program_id = ANY(:programs)"
        params["programs"] = list(filters["programs"])
    if filters.get("since"):
        where += f" AND {alias}.occurred_at >= :since"
        params["since"] = datetime.fromisoformat(filters["since"])
    if filters.get("until"):
        where += f" AND {alias}.occurred_at < :until"
        params["until"] = datetime.fromisoformat(filters["until"])
    return where


def _facts(row: Sequence[Any]) -> EntryFacts:
    (entry_id, target_id, agent_id, currency, amount, program_id, conversion_id, order_id,
     line_item_id, level, fx_rate, rule_id, rule_version, occurred_at) = row  # fmt: skip
    return EntryFacts(
        entry_id=entry_id, target_id=target_id, agent_id=agent_id, currency=currency.strip(),
        amount=amount, program_id=program_id, conversion_id=conversion_id, order_id=order_id,
        line_item_id=line_item_id, level=level, fx_rate=fx_rate, rule_id=rule_id,
        rule_version=rule_version, occurred_at=occurred_at,
    )  # fmt: skip


class ReplayRepository:
    def __init__(self, session: ReadSession) -> None:
        self.session = session

    async def get(self, replay_id: str, *, lock: bool = False) -> ReplayRow | None:
        query = (
            "SELECT replay_id, tenant_id, status, filters, what_if, events, entries,"
            " dead_letters, ledger_digest FROM ledger_replays WHERE replay_id = :replay_id"
        )
        result = await self.session.execute(
            text(query + (" FOR UPDATE" if lock else "")), {"replay_id": replay_id}
        )
        row = result.first()
        return ReplayRow(*row) if row is not None else None

    async def live_entries(self, replay: ReplayRow) -> list[EntryFacts]:
        """The live ledger in the replay's scope: entries of the orders it decided (manual
        adjustments left out), each promotion adjustment with the entry it corrects."""
        params: dict[str, Any] = {"tenant": replay.tenant_id, "replay_id": replay.replay_id}
        query = (
            "SELECT e.entry_id, coalesce(a.target_entry_id, e.entry_id),"
            f" {_columns('e')}"
            " FROM ledger_entries e"
            " LEFT JOIN ledger_replay_adjustments a ON a.entry_id = e.entry_id"
            " WHERE e.tenant_id = :tenant"
            " AND e.order_id IN"
            " (SELECT order_id FROM ledger_replay_orders WHERE replay_id = :replay_id)"
            " AND (e.kind <> 'adjustment' OR a.entry_id IS NOT NULL)"
        ) + _scope("e", replay.filters, params)
        result = await self.session.execute(text(query), params)
        return [_facts(row) for row in result.all()]

    async def shadow_entries(self, replay: ReplayRow) -> list[EntryFacts]:
        params: dict[str, Any] = {"replay_id": replay.replay_id}
        query = (
            f"SELECT s.entry_id, s.entry_id, {_columns('s')}"
            " FROM ledger_shadow_entries s WHERE s.replay_id = :replay_id"
        ) + _scope("s", replay.filters, params)
        result = await self.session.execute(text(query), params)
        return [_facts(row) for row in result.all()]

    async def promotion(self, replay_id: str) -> PromotionRow | None:
        result = await self.session.execute(
            text(
                "SELECT replay_id, actor, adjustments, audit_seq, promoted_at"
                " FROM ledger_replay_promotions WHERE replay_id = :replay_id"
            ),
            {"replay_id": replay_id},
        )
        row = result.first()
        return PromotionRow(*row) if row is not None else None


class ReplayWriteRepository(ReplayRepository):
    session: AsyncSession

    def __init__(self, session: AsyncSession) -> None:
        super().__init__(session)
        self.session = session

    async def lock_tenant(self, tenant_id: str) -> None:
        await self.session.execute(
            select(func.pg_advisory_xact_lock(_PROMOTION_LOCK_NAMESPACE, func.hashtext(tenant_id)))
        )

    async def add_promotion(
        self, replay: ReplayRow, *, actor: str, adjustments: int, audit_seq: int, at: datetime
    ) -> None:
        await self.session.execute(
            text(
                "INSERT INTO ledger_replay_promotions"
                " (replay_id, tenant_id, actor, adjustments, audit_seq, promoted_at)"
                " VALUES (:replay_id, :tenant, :actor, :adjustments, :audit_seq, :at)"
            ),
            {"replay_id": replay.replay_id, "tenant": replay.tenant_id, "actor": actor,
             "adjustments": adjustments, "audit_seq": audit_seq, "at": at},
        )  # fmt: skip

    async def add_adjustments(
        self, replay: ReplayRow, adjustments: Sequence[Adjustment], *, at: datetime
    ) -> None:
        """Append the adjustment entries to the live ledger (an id already there is left as it
        is) and record which entry each corrects."""
        if not adjustments:
            return
        rows = [
            {
                "entry_id": a.entry_id, "tenant_id": replay.tenant_id, "agent_id": a.agent_id,
                "program_id": a.template.program_id, "conversion_id": a.template.conversion_id,
                "order_id": a.template.order_id, "line_item_id": a.template.line_item_id,
                "kind": EntryKind.ADJUSTMENT.value, "status": EntryStatus.PENDING.value,
                "level": a.template.level, "amount": a.amount, "currency": a.currency,
                "fx_rate": a.template.fx_rate, "rule_id": a.template.rule_id,
                "rule_version": a.template.rule_version, "occurred_at": a.template.occurred_at,
                "recorded_at": at, "reason": a.reason,
                "source_event_id": f"replay:{replay.replay_id}",
            }
            for a in adjustments
        ]  # fmt: skip
        for start in range(0, len(rows), _CHUNK):  # asyncpg allows 32,767 parameters
            chunk = rows[start : start + _CHUNK]
            await self.session.execute(
                insert(LedgerEntry)
                .values(chunk)
                .on_conflict_do_nothing(index_elements=["entry_id"])
            )
        await self.session.execute(
            text(
                "INSERT INTO ledger_replay_adjustments"
                " (entry_id, replay_id, tenant_id, target_entry_id)"
                " VALUES (:entry_id, :replay_id, :tenant, :target) ON CONFLICT DO NOTHING"
            ),
            [
                {"entry_id": a.entry_id, "replay_id": replay.replay_id,
                 "tenant": replay.tenant_id, "target": a.target_id}
                for a in adjustments
            ],
        )  # fmt: skip
