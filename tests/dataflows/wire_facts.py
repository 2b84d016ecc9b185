"""What the hot path's msgspec decoders read of a JSON body (shared by the order and refund
tests that hold them to the contract's pydantic models)."""

from __future__ import annotations

from typing import Any


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
