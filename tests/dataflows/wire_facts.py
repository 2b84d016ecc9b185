"""What the hot path's msgspec decoders read of a JSON body, and the rule that holds each of them
to the contract's pydantic model (shared by the order and the refund tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Facts = dict[str, Any]


def keep(value: Any, struct: type, nested: dict[str, type]) -> Any:
    """`value` with only the keys `struct` decodes, recursively (lists item by item; `nested`
    names the struct of each nested key)."""
    if isinstance(value, list):
        return [keep(item, struct, nested) for item in value]
    if not isinstance(value, dict):
        return value
    fields = struct.__struct_fields__  # type: ignore[attr-defined]
    return {
        k: keep(v, nested[k], nested) if k in nested else v for k, v in value.items() if k in fields
    }


def judged(
    facts: Callable[[Any], Facts], decode: Callable[[bytes], Any], body: bytes
) -> Facts | None:
    """What `facts` reads of `body` decoded by `decode`; None if either refuses it."""
    try:
        return facts(decode(body))
    except ValueError:
        return None


def agree(
    body: bytes,
    fast: Callable[[bytes], Facts | None],
    slow: Callable[[bytes], Facts | None],
    flow: Callable[[bytes], Facts | None],
    used_only: Callable[[bytes], bytes],
) -> None:
    """The msgspec decoder (`fast`) accepts what the contract (`slow`) accepts, with the same
    facts, unless the contract refused only a key the flow does not read (`used_only` keeps the
    rest); the flow's decoder (msgspec, then the contract) answers as the contract would."""
    fast_facts, slow_facts = fast(body), slow(body)
    if fast_facts is not None and slow_facts is None:
        assert slow(used_only(body)) == fast_facts
    elif fast_facts is not None:
        assert fast_facts == slow_facts
    assert flow(body) == (fast_facts if fast_facts is not None else slow_facts)
