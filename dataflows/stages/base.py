"""What every stateful stage of the attribution flow shares: the outputs, the time limits, the
letters to the exceptions inbox, and the stored form of an order book. No stage imports another
stage; each imports this module and the pure ones (`attribution.logic`, `commission.*`)."""

from __future__ import annotations

import base64
import pickle
from dataclasses import MISSING, dataclass, fields
from typing import Any

import orjson

from dataflows.attribution.events import Event, dead_letter, from_ms
from dataflows.commission.book import OrderBook
from dataflows.commission.codec import unpack_book
from schemas.conversion import Conversion
from schemas.events.envelope import DeadLetter
from schemas.ledger import AttributedConversion, CommissionAccrual, EntryApproval

DAY_MS = 86_400_000
DEFAULT_HOLD_DAYS = 30  # a program that is gone from the configuration holds like a new one
Output = AttributedConversion | CommissionAccrual | EntryApproval | DeadLetter
# Streams whose watermarks hold back expiry; ERP notifications are rare and must not.
CORE_STREAMS = ("click", "order", "refund")


@dataclass(frozen=True, slots=True)
class Tuning:
    """Time limits of the state (all in milliseconds; event time unless named wall)."""

    allowed_lateness_ms: int = 7 * DAY_MS
    order_wait_event_ms: int | None = None
    order_wait_wall_ms: int = 15 * 60_000
    order_retention_ms: int = 400 * DAY_MS
    future_skew_ms: int = 3_600_000
    max_stream_skew_ms: int = 30 * DAY_MS
    sweep_every_ms: int = 60_000
    release_on_eof: bool = True
    holds: bool = True  # decide approvals (replays write a shadow ledger without statuses)
    # False only for runs that never resume (replays: bounded, no recovery, rerun on failure):
    # bytewax asks for a snapshot every epoch even without recovery, and each one pickles the
    # key's state (see bench.replay for the replay's rate with and without).
    snapshots: bool = True


# What every stage snapshots in a run that never resumes (`Tuning.snapshots` False).
NO_SNAPSHOT = pickle.dumps(None)


def snapshot_of(state: object, tuning: Tuning) -> bytes:
    """A stage's snapshot: its state pickled now (later mutation cannot leak into it), or
    `NO_SNAPSHOT` in a run without snapshots."""
    if not tuning.snapshots:
        return NO_SNAPSHOT
    return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def resumable(resume: bytes | None) -> bytes | None:
    """`resume` as a stage's builder gets it; a run without snapshots cannot be resumed."""
    if resume == NO_SNAPSHOT:
        raise RuntimeError("resuming from a run made with Tuning(snapshots=False)")
    return resume


def complete(obj: Any) -> None:
    """Give the fields of a dataclass that a snapshot from an older version did not have their
    defaults (the state dataclasses pickle their slots by name)."""
    for f in fields(obj):
        if not hasattr(obj, f.name):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(obj, f.name, default)


def unpack(data: bytes | OrderBook) -> OrderBook:
    """A stored order book: packed (`commission.codec`), or kept as itself by a run that never
    snapshots."""
    if isinstance(data, OrderBook):
        return data
    return unpack_book(data)


def letter(event: Event | None, reason: str, wall_ms: int) -> DeadLetter:
    """A dead letter for `event` (its Kafka value, when the event still has it)."""
    return dead_letter(reason, event.raw if event is not None else b"", from_ms(wall_ms))


def facts_letter(facts: dict[str, str | None], reason: str, wall_ms: int) -> DeadLetter:
    """A letter about something whose event is no longer at hand: `facts` name the tenant and
    what the exceptions inbox files it under."""
    raw = base64.b64encode(orjson.dumps(facts)).decode("ascii")
    return DeadLetter(reason=reason, stage="dataflow", failed_at=from_ms(wall_ms), raw=raw)


def order_letter(conversion: Conversion, reason: str, wall_ms: int) -> DeadLetter:
    """A letter about a decided order: its facts name the tenant, shop, order and source
    event."""
    facts = {
        "tenant_id": conversion.tenant_id, "shop": conversion.shop,
        "order_id": conversion.order_id, "source_event_id": conversion.source_event_id,
    }  # fmt: skip
    return facts_letter(facts, reason, wall_ms)
