"""HMAC-SHA256 from a key's two padded SHA-256 states, prepared once per key (RFC 2104).

`hmac.digest` sets up OpenSSL's HMAC anew on every call (the key schedule and the algorithm
lookup), which is most of its cost on short data: the webhook's signature and the click's
salted IP hash keep their key's states (`pad_states`, cached by the caller) and copy them per
message (`digest_of`). The same bytes as `hmac.digest` (tests/ingest/test_shopify_verify.py,
tests/ingest/test_clicks.py).
"""

from __future__ import annotations

import hashlib

_SHA256_BLOCK = 64


def pad_states(key: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 after the key's inner and outer pad: a key longer than the block is hashed
    first, a shorter one padded with zeros."""
    raw = key.encode()
    if len(raw) > _SHA256_BLOCK:
        raw = hashlib.sha256(raw).digest()
    raw = raw.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in raw))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in raw))
    return inner, outer


def digest_of(states: tuple[hashlib._Hash, hashlib._Hash], data: bytes) -> hashlib._Hash:
    """The HMAC of `data` under the key whose `pad_states` these are, as a finished hash object
    (`.digest()` or `.hexdigest()` of it)."""
    inner = states[0].copy()
    inner.update(data)
    outer = states[1].copy()
    outer.update(inner.digest())
    return outer
