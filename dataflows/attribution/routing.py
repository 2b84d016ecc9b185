"""Where each event's state lives: the keys below the tenant. Pure: no I/O, no clock.

Clicks are most of a tenant's events and state, and an order needs only the clicks it cites and
the clicks of its visitor. So clicks live in **click shards** keyed `(tenant, shard)`, one of
`SHARDS` per tenant, and the tenant's decisions stay keyed by the tenant (`stages.tenant`):

- a click lives in the shard named by its id: `clk_` + 32 hex digits, the first four of which
  pick the shard (`id_shard`). The ingress mints click ids whose first four digits are the
  visitor's tag (`schemas.ids.click_id_for_visitor`), so a click's id shard *is* its visitor's
  shard (`visitor_shard`) and one item carries it;
- a click whose id does not carry its visitor's tag (ids minted before, the pixel's derived ids)
  also sends a `VisitorCopy` to its visitor's shard, so the visitor index stays exact;
- an order (or cancellation) asks every shard that can hold one of its candidates: the shards of
  the click ids it cites and its visitor's shard (`Lookup`, one per shard). Each shard answers
  with what it holds (`Found`), after waiting for cited clicks it has not seen (see
  `stages.clicks`); the tenant gathers the answers (`Found.shards` says how many) and decides.
  An order with neither clicks nor a visitor goes to the tenant directly.

Every other event (refunds, ERP payments and sale orders) concerns an order book and goes to the
tenant. The shard count is part of the recovery state (keys name it): changing it needs a
rebuild from the archive (`refstream replay`), as renaming a step does.
"""

from __future__ import annotations

from dataclasses import dataclass

from dataflows.attribution.events import Click, Event
from schemas.conversion import Conversion
from schemas.ids import visitor_tag

# Click shards per tenant: enough that one tenant's shards spread evenly over a few workers
# (bytewax routes each key to a worker by its hash), few enough that a small tenant's shards
# stay cheap (a shard with no live click or pending order is discarded).
SHARDS = 64
_HEX = frozenset("0123456789abcdef")


def _tag(text: str) -> int:
    return int(visitor_tag(text), 16)


def visitor_shard(visitor: str) -> int:
    return _tag(visitor) % SHARDS


def id_shard(click_id: str) -> int:
    """The shard of a click id: its first four hex digits for `clk_` ids (every click's id has
    that form: the contract checks it), a hash of the text for anything else an order cites."""
    if len(click_id) == 36 and click_id.startswith("clk_") and _HEX.issuperset(click_id[4:8]):
        return int(click_id[4:8], 16) % SHARDS
    return _tag(click_id) % SHARDS


def shard_key(tenant_id: str, shard: int) -> str:
    return f"{tenant_id}\x1f{shard}"


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class VisitorCopy:
    """A click filed under its visitor in the visitor's shard (its id names another shard)."""

    event: Event


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Lookup:
    """An order's question to one shard: which of `click_ids` (the cited ids that live here)
    and, if `visitor` is set, which of the visitor's clicks it holds. `shards` are all the
    shards asked, so the tenant knows when it has every answer."""

    event: Event
    shard: int
    shards: tuple[int, ...]
    click_ids: tuple[str, ...]
    visitor: str | None


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Found:
    """One shard's answer to a `Lookup`: the cited clicks it holds (`cited`) and the visitor's
    clicks in arrival order (`visited`)."""

    event: Event
    shard: int
    shards: tuple[int, ...]
    cited: tuple[tuple[str, Click], ...] = ()
    visited: tuple[tuple[str, Click], ...] = ()
    # The input position this answer takes at the tenant: the click's that released it (the
    # order was decided when that click was read), else 0 (the order's own).
    at_seq: int = 0


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Held:
    """A shard holds `event`'s lookup until a cited click arrives: until its answer comes, the
    tenant keeps the order's other events as follow-ups."""

    event: Event


ShardItem = Event | VisitorCopy | Lookup
TenantItem = Event | Found | Held


def route(event: Event) -> list[tuple[str, ShardItem | TenantItem]]:
    """The keyed items of one event: `(shard key, ShardItem)` for the click shards, `(tenant,
    TenantItem)` for the tenant (see the module docstring)."""
    tenant = event.tenant_id
    if event.kind == "click":
        assert isinstance(event.payload, tuple)
        click_id, click = event.payload
        own = id_shard(click_id)
        out: list[tuple[str, ShardItem | TenantItem]] = [(shard_key(tenant, own), event)]
        if click[4] is not None and (mine := visitor_shard(click[4])) != own:
            out.append((shard_key(tenant, mine), VisitorCopy(event)))
        return out
    if event.kind not in ("order", "cancel"):
        return [(tenant, event)]
    conversion = event.payload
    assert isinstance(conversion, Conversion)
    by_shard: dict[int, list[str]] = {}
    for cited in conversion.click_ids:
        by_shard.setdefault(id_shard(cited), []).append(cited)
    visitor = conversion.visitor_id
    home = visitor_shard(visitor) if visitor is not None else None
    if home is not None:
        by_shard.setdefault(home, [])
    if not by_shard:
        return [(tenant, event)]
    shards = tuple(sorted(by_shard))
    return [
        (
            shard_key(tenant, shard),
            Lookup(event, shard, shards, tuple(ids), visitor if shard == home else None),
        )
        for shard, ids in sorted(by_shard.items())
    ]


def is_shard_item(keyed: tuple[str, ShardItem | TenantItem]) -> bool:
    """Whether `route` keyed the item to a click shard (shard keys carry the unit separator,
    which no tenant id contains)."""
    return "\x1f" in keyed[0]
