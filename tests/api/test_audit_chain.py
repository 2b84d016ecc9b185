"""The pure hash chain."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from api.audit.chain import GENESIS_HASH, AuditFields, StoredEntry, entry_hash, verify_chain


def chain(n: int, tenant: str = "co_1") -> list[StoredEntry]:
    entries, prev = [], GENESIS_HASH
    for seq in range(1, n + 1):
        fields = AuditFields(
            tenant_id=tenant, seq=seq, actor="user:u", action="agent.update",
            entity_type="agent", entity_id=f"a{seq}", before={"b": 1, "a": [1, 2]},
            after={"name": "x"}, request_id="r", source_ip="127.0.0.1",
            created_at=datetime(2026, 11, 25, 12, 0, seq, 123456, tzinfo=UTC), prev_hash=prev,
        )  # fmt: skip
        prev = entry_hash(fields)
        entries.append(StoredEntry(fields=fields, hash=prev))
    return entries


def test_an_intact_chain_has_no_problems_whatever_the_key_order() -> None:
    entries = chain(5) + chain(3, tenant="co_2")
    assert verify_chain(reversed(entries)) == []


def test_a_changed_entry_is_named() -> None:
    entries = chain(5)
    forged = dataclasses.replace(entries[2].fields, after={"name": "forged"})
    entries[2] = StoredEntry(fields=forged, hash=entries[2].hash)
    assert [(p.seq, p.reason) for p in verify_chain(entries)] == [
        (3, "hash does not match the content")
    ]


def test_a_recomputed_forgery_breaks_the_next_link() -> None:
    entries = chain(5)
    forged = dataclasses.replace(entries[2].fields, after={"name": "forged"})
    entries[2] = StoredEntry(fields=forged, hash=entry_hash(forged))
    assert [p.seq for p in verify_chain(entries)] == [4]


def test_a_deleted_entry_is_a_gap() -> None:
    entries = chain(5)
    del entries[1]
    assert next(p.seq for p in verify_chain(entries)) == 3


def test_hash_is_independent_of_timezone_representation() -> None:
    fields = chain(1)[0].fields
    shifted = dataclasses.replace(fields, created_at=fields.created_at.astimezone())
    assert entry_hash(shifted) == entry_hash(fields)
