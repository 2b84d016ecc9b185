"""Keyset (cursor) pagination: an opaque cursor encodes the last sort key of the previous page."""

from __future__ import annotations

import base64
from typing import Annotated, Generic, TypeVar

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
