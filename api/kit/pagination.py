"""Keyset (cursor) pagination: an opaque cursor encodes the last sort key of the previous page."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import BaseModel

from api.errors import BadRequest

T = TypeVar("T")

Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page.")]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(key: str | int) -> str:
    return base64.urlsafe_b64encode(str(key).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest("Malformed cursor.") from exc


def decode_int_cursor(cursor: str) -> int:
    value = decode_cursor(cursor)
    if not value.isdigit():
        raise BadRequest("Malformed cursor.")
    return int(value)


def encode_keyset(value: Any, object_id: str) -> str:
    """A cursor for keyset pagination over (sort value, id)."""
    text = value.isoformat() if isinstance(value, datetime) else value
    raw = json.dumps([text, object_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_keyset(cursor: str, value_type: type[Any]) -> tuple[Any, str]:
    """(sort value, id) from `encode_keyset`'s cursor; `BadRequest` if it is not one."""
    try:
        value, object_id = json.loads(decode_cursor(cursor))
        if value_type is datetime:
            value = datetime.fromisoformat(value)
            if value.tzinfo is None:
                raise ValueError("naive datetime")
        elif not isinstance(value, value_type):
            raise ValueError("cursor does not match the sort")
        if not isinstance(object_id, str):
            raise ValueError("cursor id is not a string")
    except (ValueError, TypeError) as exc:
        raise BadRequest("Malformed cursor.") from exc
    return value, object_id
