"""Audit snapshots of model rows: their columns, minus secrets."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect

_SECRET_COLUMNS = frozenset(
    {
        "password_hash",
        "key_hash",
        "token_hash",
        "secret",
        "previous_secret",
        "relay_token_hash",
        "access_token",
    }
)


def snapshot(row: object) -> dict[str, Any]:
    """Column values of a loaded row (secrets left out), for an audit entry's before/after."""
    mapper = inspect(row).mapper
    return {
        attr.key: getattr(row, attr.key)
        for attr in mapper.column_attrs
        if attr.key not in _SECRET_COLUMNS
    }
