"""Writing audit entries inside the caller's transaction, and reading chains back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import personal
from api.audit.chain import GENESIS_HASH, AuditFields, StoredEntry, entry_hash, json_snapshot
from api.context import RequestMeta
from api.models import AuditLogEntry, AuditPersonal

# First key of the two-key advisory lock that serialises appends to one tenant's chain.
_AUDIT_LOCK_NAMESPACE = 0x5A0D17


async def record(
    session: AsyncSession,
    *,
    tenant_id: str,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
    meta: RequestMeta,
) -> AuditLogEntry:
    """Append one entry (`action` is "noun.verb") to the tenant's chain, in the open transaction.

    A transaction-scoped advisory lock per tenant serialises appends, so seq = previous + 1 and
    prev_hash = previous hash hold under concurrency; the lock is released at commit/rollback.
    Personal values (emails, phones, people's names, the source IP) are stored apart, in
    `audit_personal`, and the hashed entry holds references to them (`api.audit.personal`).
    """
    await session.execute(
        select(func.pg_advisory_xact_lock(_AUDIT_LOCK_NAMESPACE, func.hashtext(tenant_id)))
    )
    head = (
        await session.execute(
            select(AuditLogEntry.seq, AuditLogEntry.hash)
            .where(AuditLogEntry.tenant_id == tenant_id)
            .order_by(AuditLogEntry.seq.desc())
            .limit(1)
        )
    ).first()
    seq, prev_hash = (head[0] + 1, head[1]) if head else (1, GENESIS_HASH)
    values: dict[str, str] = {}
    fields = AuditFields(
        tenant_id=tenant_id,
        seq=seq,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        before=personal.split(entity_type, json_snapshot(before), values),
        after=personal.split(entity_type, json_snapshot(after), values),
        request_id=meta.request_id,
        source_ip=personal.ip_ref(meta.source_ip, values),
        created_at=meta.now,
        prev_hash=prev_hash,
    )
    entry = AuditLogEntry(
        tenant_id=tenant_id,
        seq=seq,
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        before=fields.before,
        after=fields.after,
        request_id=fields.request_id,
        source_ip=fields.source_ip,
        created_at=fields.created_at,
        prev_hash=prev_hash,
        hash=entry_hash(fields),
    )
    session.add_all([AuditPersonal(tenant_id=tenant_id, ref=r, value=v) for r, v in values.items()])
    session.add(entry)
    await session.flush()
    return entry


def stored_entry(row: AuditLogEntry) -> StoredEntry:
    return StoredEntry(
        fields=AuditFields(
            tenant_id=row.tenant_id,
            seq=row.seq,
            actor=row.actor,
            action=row.action,
            entity_type=row.entity_type,
            entity_id=row.entity_id,
            before=row.before,
            after=row.after,
            request_id=row.request_id,
            source_ip=row.source_ip,
            created_at=row.created_at,
            prev_hash=row.prev_hash,
        ),
        hash=row.hash,
    )


def stored_entries(rows: Sequence[AuditLogEntry]) -> list[StoredEntry]:
    return [stored_entry(r) for r in rows]
