"""Identifiers that cross boundaries.

Ids carry a type prefix (`evt_`, `clk_`, `le_`, …) so a stray id in a log says what it is.
Anything replay must reproduce is derived from its inputs (`derived_id`), never random.
"""

from __future__ import annotations

import hashlib
import secrets

_SEPARATOR = "\x1f"  # unit separator: cannot occur in the text parts we hash


def derived_id(prefix: str, *parts: str | int) -> str:
    """A stable id from `parts`: same inputs give the same id in every process and every replay.

    128 bits of BLAKE2b over the parts joined with a separator that no part contains, so
    ("a", "bc") and ("ab", "c") differ.
    """
    if not parts:
        raise ValueError("derived_id needs at least one part")
    text = _SEPARATOR.join(map(str, parts))
    if text.count(_SEPARATOR) != len(parts) - 1:
        raise ValueError("id parts must not contain the unit separator")
    digest = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    return f"{prefix}_{digest}"


def random_id(prefix: str) -> str:
    """A fresh random id (128 bits) for things that are created once, e.g. a click."""
    return f"{prefix}_{secrets.token_hex(16)}"


def visitor_tag(visitor_id: str) -> str:
    """A visitor's 16-bit tag, four hex digits of BLAKE2b: the same in every process."""
    return hashlib.blake2b(visitor_id.encode(), digest_size=2).hexdigest()


def click_id_for_visitor(visitor_id: str) -> str:
    """A fresh click id (`clk_` + 32 hex digits, as every click id) whose first four digits
    are its visitor's tag: the dataflow files a click under the shard its id names, so a click
    minted this way lives with its visitor's other clicks (`dataflows.attribution.routing`).
    112 random bits remain."""
    return f"clk_{visitor_tag(visitor_id)}{secrets.token_hex(14)}"


def body_sha256(raw: bytes) -> str:
    """Hex SHA-256 of a raw body: the reference to an archived payload."""
    return hashlib.sha256(raw).hexdigest()
