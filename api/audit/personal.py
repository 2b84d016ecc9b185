"""Personal data kept out of the hashed audit entries (issue #17): an entry's snapshot holds a
reference (`pd:<random>`) where it would hold a person's email, phone or name, and the source IP
is a reference too; the values live in `audit_personal`, outside the hash chain. Erasing a
person deletes those rows: the entries, and so the chain, stay exactly as hashed, and readers
see `null` where the erased value was.

A reference is random, not derived from the value, so the chain reveals nothing about it (not
even that two entries name the same person) once the value is erased.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeGuard

REF_PREFIX = "pd:"
# Keys that name a person in any snapshot.
PERSONAL_KEYS = frozenset({"email", "phone", "display_name", "first_name", "last_name"})
# Entity types whose `name` is a person's name (a program's or a unit's is not).
PEOPLE = frozenset({"agent", "user"})


def new_ref() -> str:
    return REF_PREFIX + secrets.token_hex(16)


def is_ref(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and value.startswith(REF_PREFIX) and len(value) == 35


def _personal(entity_type: str, key: str) -> bool:
    return key in PERSONAL_KEYS or (key == "name" and entity_type in PEOPLE)


def split(
    entity_type: str,
    snapshot: Mapping[str, Any] | None,
    values: dict[str, str],
    make_ref: Callable[[], str] = new_ref,
) -> dict[str, Any] | None:
    """`snapshot` with each personal string replaced by a new reference; the reference and its
    value are added to `values` (to be stored in `audit_personal`)."""
    if snapshot is None:
        return None
    out = {}
    for key, value in snapshot.items():
        if isinstance(value, str) and value and _personal(entity_type, key):
            ref = make_ref()
            values[ref] = value
            out[key] = ref
        else:
            out[key] = value
    return out


def ip_ref(
    source_ip: str | None, values: dict[str, str], make_ref: Callable[[], str] = new_ref
) -> str | None:
    """The reference stored for a request's source IP."""
    if not source_ip:
        return source_ip
    ref = make_ref()
    values[ref] = source_ip
    return ref


def refs_in(snapshots: Iterable[Mapping[str, Any] | str | None]) -> set[str]:
    """Every reference in the given snapshots and scalars."""
    found: set[str] = set()
    for item in snapshots:
        if isinstance(item, Mapping):
            found.update(v for v in item.values() if is_ref(v))
        elif is_ref(item):
            found.add(item)
    return found


def resolve(value: Any, values: Mapping[str, str]) -> Any:
    """A snapshot or scalar with its references replaced by their values (`None` once erased)."""
    if isinstance(value, Mapping):
        return {k: resolve(v, values) for k, v in value.items()}
    if is_ref(value):
        return values.get(value)
    return value
