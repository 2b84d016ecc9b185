"""Pure hash chain of audit entries, per tenant.

hash(n) = SHA-256 over the canonical JSON (sorted keys, orjson) of entry n's fields including
prev_hash = hash(n-1); the first entry's prev_hash is `GENESIS_HASH`. Changing, removing or
inserting any entry breaks the chain at that entry or the next one. (Truncating the newest entries
is only detectable against an externally anchored head hash.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from itertools import groupby
from typing import Any

import orjson

GENESIS_HASH = "0" * 64


@dataclass(frozen=True, slots=True)
class AuditFields:
    """Everything an entry's hash covers."""

    tenant_id: str
    seq: int
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    request_id: str | None
    source_ip: str | None
    created_at: datetime
    prev_hash: str


@dataclass(frozen=True, slots=True)
class StoredEntry:
    fields: AuditFields
    hash: str


@dataclass(frozen=True, slots=True)
class ChainProblem:
    tenant_id: str
    seq: int
    reason: str

    def __str__(self) -> str:
        return f"tenant {self.tenant_id}: seq {self.seq}: {self.reason}"


def _default(value: object) -> str:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON-serialisable in an audit snapshot: {type(value).__name__}")


def json_snapshot(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A JSON-native copy (datetimes as RFC 3339, Decimals as strings) that survives jsonb."""
    if value is None:
        return None
    loaded: dict[str, Any] = orjson.loads(orjson.dumps(dict(value), default=_default))
    return loaded


def canonical(fields: AuditFields) -> bytes:
    created = fields.created_at.astimezone(UTC).isoformat(timespec="microseconds")
    document = {
        "tenant_id": fields.tenant_id,
        "seq": fields.seq,
        "actor": fields.actor,
        "action": fields.action,
        "entity_type": fields.entity_type,
        "entity_id": fields.entity_id,
        "before": fields.before,
        "after": fields.after,
        "request_id": fields.request_id,
        "source_ip": fields.source_ip,
        "created_at": created,
        "prev_hash": fields.prev_hash,
    }
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS, default=_default)


def entry_hash(fields: AuditFields) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def verify_chain(entries: Iterable[StoredEntry]) -> list[ChainProblem]:
    """Every break in the per-tenant chains, in (tenant, seq) order; empty when intact.

    Checks per tenant: seqs run 1, 2, 3, … without gaps; each prev_hash equals the previous
    entry's hash (GENESIS_HASH for seq 1); each stored hash equals the recomputed one.
    """
    problems: list[ChainProblem] = []
    ordered = sorted(entries, key=lambda e: (e.fields.tenant_id, e.fields.seq))
    for tenant_id, chain in groupby(ordered, key=lambda e: e.fields.tenant_id):
        expected_seq, expected_prev = 1, GENESIS_HASH
        for entry in chain:
            f = entry.fields
            if f.seq != expected_seq:
                problems.append(ChainProblem(tenant_id, f.seq, f"expected seq {expected_seq}"))
            if f.prev_hash != expected_prev:
                problems.append(
                    ChainProblem(tenant_id, f.seq, "prev_hash does not match the previous entry")
                )
            if entry_hash(f) != entry.hash:
                problems.append(ChainProblem(tenant_id, f.seq, "hash does not match the content"))
            expected_seq, expected_prev = f.seq + 1, entry.hash
    return problems
