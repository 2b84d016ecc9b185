"""Comparing a replay's shadow ledger with the live one, and promoting it.

Promotion never changes a live entry (the ledger is append-only): in one transaction (the
caller's; this module only flushes) it books every money difference as a new `adjustment`
entry with an id derived from the replay and the corrected entry, records what each corrects,
writes a `ledger_replay.promote` audit entry, marks the replay promoted and resolves the open
exceptions of the orders it decided (`api.exceptions`). Afterwards the live
totals in the replay's scope equal the shadow's; promoting the same replay again changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.context import RequestMeta
from api.db import ReadSession
from api.errors import Conflict, NotFound
from api.exceptions.repository import resolve_replayed
from api.replays.diff import ChangeKind, LedgerDiff, diff_ledgers, plan_adjustments
from api.replays.repository import ReplayRepository, ReplayRow, ReplayWriteRepository


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    replay: ReplayRow
    diff: LedgerDiff


@dataclass(frozen=True, slots=True)
class Promotion:
    replay_id: str
    adjustments: int
    audit_seq: int
    already_promoted: bool  # True: an earlier promotion did it, nothing was written now
    net_amount: Decimal  # sum of the adjustments booked (all currencies)


async def _complete(repository: ReplayRepository, replay_id: str, *, lock: bool) -> ReplayRow:
    replay = await repository.get(replay_id, lock=lock)
    if replay is None:
        raise NotFound(f"No replay {replay_id!r}.")
    if replay.status != "complete":
        raise Conflict(f"Replay {replay_id!r} is {replay.status}, not complete.")
    return replay


async def _diff(repository: ReplayRepository, replay: ReplayRow) -> LedgerDiff:
    live = await repository.live_entries(replay)
    shadow = await repository.shadow_entries(replay)
    return diff_ledgers(live, shadow)


async def diff_replay(session: ReadSession, replay_id: str) -> ReplayDiff:
    """The live ledger (with earlier promotions' corrections) against the replay's shadow."""
    repository = ReplayRepository(session)
    replay = await _complete(repository, replay_id, lock=False)
    return ReplayDiff(replay=replay, diff=await _diff(repository, replay))


def _totals(diff: LedgerDiff, side: str) -> list[dict[str, object]]:
    return [
        {"agent_id": t.agent_id, "currency": t.currency, "amount": getattr(t, side)}
        for t in diff.totals
    ]


async def promote(
    session: AsyncSession, replay_id: str, *, actor: str, meta: RequestMeta
) -> Promotion:
    """Book the replay's differences into the live ledger (see the module docstring)."""
    repository = ReplayWriteRepository(session)
    replay = await _complete(repository, replay_id, lock=True)
    await repository.lock_tenant(replay.tenant_id)
    done = await repository.promotion(replay_id)
    if done is not None:
        return Promotion(replay_id, done.adjustments, done.audit_seq, True, Decimal(0))
    diff = await _diff(repository, replay)
    adjustments = plan_adjustments(replay.tenant_id, replay_id, diff)
    net = sum((a.amount for a in adjustments), Decimal(0))
    audit = await record(
        session,
        tenant_id=replay.tenant_id,
        actor=actor,
        action="ledger_replay.promote",
        entity_type="ledger_replay",
        entity_id=replay_id,
        before={"totals": _totals(diff, "live")},
        after={
            "totals": _totals(diff, "shadow"),
            "adjustments": len(adjustments),
            "changes": {k.value: diff.count(k) for k in ChangeKind},
            "ledger_digest": replay.ledger_digest,
            "what_if": replay.what_if is not None,
        },
        meta=meta,
    )
    await repository.add_promotion(
        replay, actor=actor, adjustments=len(adjustments), audit_seq=audit.seq, at=meta.now
    )
    await repository.add_adjustments(replay, adjustments, at=meta.now)
    # The documented fix of a dead letter (e.g. add the missing rate, replay, promote) closes it.
    await resolve_replayed(session, replay.tenant_id, replay_id, by=actor, at=meta.now)
    await session.flush()
    return Promotion(replay_id, len(adjustments), audit.seq, False, net)
