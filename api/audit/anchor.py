"""The audit anchor: chain heads signed with a key the database never sees.

The hash chain (`api.audit.chain`) shows any change that was not followed by recomputing every
later hash; someone who can write the database can recompute them. `refstream audit verify`
therefore keeps, outside the database, the head (seq, hash) of every company's chain as of its
last successful run, under an HMAC-SHA256 with `Settings.audit_anchor_key`. A later run finds
the anchored seq again and compares hashes: a row changed at or before the anchored head, with
the chain recomputed after it, no longer has the anchored hash; removed newest entries leave the
anchored seq missing. Changing the anchor file itself needs the key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from api.audit.chain import ChainProblem, StoredEntry


class AnchorError(ValueError):
    """The anchor document is unreadable or its signature does not match the key."""


@dataclass(frozen=True, slots=True)
class Head:
    """The newest entry of one company's chain when it was anchored."""

    seq: int
    hash: str
    anchored_at: datetime


@dataclass(frozen=True, slots=True)
class Anchor:
    heads: Mapping[str, Head]  # by tenant id


def chain_heads(entries: Iterable[StoredEntry], anchored_at: datetime) -> dict[str, Head]:
    """The newest entry of each company's chain in `entries`."""
    heads: dict[str, Head] = {}
    for entry in entries:
        f = entry.fields
        if f.tenant_id not in heads or f.seq > heads[f.tenant_id].seq:
            heads[f.tenant_id] = Head(f.seq, entry.hash, anchored_at)
    return heads


def _body(heads: Mapping[str, Head]) -> dict[str, Any]:
    return {
        tenant: {"seq": h.seq, "hash": h.hash, "anchored_at": h.anchored_at.isoformat()}
        for tenant, h in sorted(heads.items())
    }


def _mac(key: bytes, body: Mapping[str, Any]) -> str:
    message = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def dump(anchor: Anchor, key: bytes) -> bytes:
    """The signed JSON document of `anchor`."""
    body = _body(anchor.heads)
    return orjson.dumps({"heads": body, "mac": _mac(key, body)}, option=orjson.OPT_INDENT_2)


def load(document: bytes, key: bytes) -> Anchor:
    """Parse and authenticate an anchor document; `AnchorError` when it is not signed by `key`."""
    try:
        parsed = orjson.loads(document)
        body, mac = parsed["heads"], parsed["mac"]
        heads = {
            tenant: Head(int(h["seq"]), str(h["hash"]), datetime.fromisoformat(h["anchored_at"]))
            for tenant, h in body.items()
        }
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise AnchorError(f"unreadable anchor document: {exc}") from exc
    if not isinstance(mac, str) or not hmac.compare_digest(mac, _mac(key, body)):
        raise AnchorError(
            "the anchor's signature does not match: wrong key, or the file was edited"
        )
    return Anchor(heads)


def anchor_problems(
    anchor: Anchor, entries: Iterable[StoredEntry], tenant: str | None = None
) -> list[ChainProblem]:
    """Anchored heads (of `tenant` only, if given) that the stored chains no longer contain."""
    stored = {(e.fields.tenant_id, e.fields.seq): e.hash for e in entries}
    problems = []
    for tenant_id, head in sorted(anchor.heads.items()):
        if tenant is not None and tenant_id != tenant:
            continue
        found = stored.get((tenant_id, head.seq))
        at = head.anchored_at.isoformat(timespec="seconds")
        if found is None:
            reason = f"the head anchored at {at} is gone (entries were removed)"
        elif found != head.hash:
            reason = f"hash differs from the one anchored at {at} (the chain was rewritten)"
        else:
            continue
        problems.append(ChainProblem(tenant_id, head.seq, reason))
    return problems


def advance(anchor: Anchor | None, heads: Mapping[str, Head]) -> Anchor:
    """The anchor after a successful verification that saw `heads`; other companies keep theirs."""
    merged = dict(anchor.heads) if anchor else {}
    merged.update(heads)
    return Anchor(merged)
