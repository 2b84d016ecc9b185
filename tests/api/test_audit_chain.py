"""The pure hash chain."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from api.audit import anchor
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


AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def test_removed_newest_entries_leave_the_anchored_head_missing() -> None:
    entries = chain(5) + chain(2, tenant="co_2")
    anchored = anchor.Anchor(anchor.chain_heads(entries, AT))
    document = anchor.dump(anchored, b"key")
    assert anchor.load(document, b"key") == anchored
    remaining = entries[:3] + entries[5:]  # co_1's newest two are gone; the chain itself is intact
    assert verify_chain(remaining) == []
    problems = anchor.anchor_problems(anchor.load(document, b"key"), remaining)
    assert [(p.tenant_id, p.seq) for p in problems] == [("co_1", 5)]
    assert "gone" in problems[0].reason


def test_an_anchor_signed_with_another_key_is_refused() -> None:
    document = anchor.dump(anchor.Anchor(anchor.chain_heads(chain(2), AT)), b"key")
    with pytest.raises(anchor.AnchorError, match="signature does not match"):
        anchor.load(document, b"other key")


def test_advancing_keeps_the_heads_of_companies_not_verified() -> None:
    old = anchor.Anchor(anchor.chain_heads(chain(3) + chain(2, tenant="co_2"), AT))
    new = anchor.advance(old, anchor.chain_heads(chain(4), AT))
    assert {t: h.seq for t, h in new.heads.items()} == {"co_1": 4, "co_2": 2}


def test_personal_values_become_references_and_resolve_back() -> None:
    from api.audit import personal

    values: dict[str, str] = {}
    refs = iter(f"pd:{n:032x}" for n in range(10))
    agent = personal.split(
        "agent", {"name": "Ann", "email": "a@b", "status": "active", "phone": None}, values,
        lambda: next(refs),
    )  # fmt: skip
    program = personal.split("program", {"name": "Spring"}, values, lambda: next(refs))
    ip = personal.ip_ref("203.0.113.9", values, lambda: next(refs))
    assert agent == {"name": f"pd:{0:032x}", "email": f"pd:{1:032x}", "status": "active",
                     "phone": None}  # fmt: skip
    assert program == {"name": "Spring"}  # a program's name names no person
    assert ip == f"pd:{2:032x}"
    assert values == {f"pd:{0:032x}": "Ann", f"pd:{1:032x}": "a@b", ip: "203.0.113.9"}
    assert personal.refs_in([agent, program, ip, None]) == set(values)
    erased = {k: v for k, v in values.items() if v != "a@b"}
    assert personal.resolve(agent, erased) == {"name": "Ann", "email": None, "status": "active",
                                                "phone": None}  # fmt: skip
    assert personal.is_ref(personal.new_ref())
