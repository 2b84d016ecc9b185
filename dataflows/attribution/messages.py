"""What the tenant stage sends to the order books, and where each book lives. Pure: no I/O.

Order books live in **book buckets** keyed `(tenant, bucket)`, one of `BOOK_BUCKETS` per tenant,
the bucket named by a CRC-32 of the order id (stable across processes, unlike `hash`). The
tenant stage keeps what the decision reads (bindings, first orders, the agents' month volume,
the decided order ids, order names) and sends each decided order to its bucket (`Decided`),
which makes the book, its commission, rows and entries, applies refunds, cancellations and
edits, and approves held entries. Every later event of a decided order (a refund, a
cancellation, an edit, a paid invoice) reaches its book through the tenant, in its input order.

Every message carries integer-millisecond times and plain values besides the event (workers
exchange them pickled; BYTEWAX.md: tz-aware datetimes are the expensive part of a pickle).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from decimal import Decimal

from dataflows.attribution.events import Event
from dataflows.attribution.logic import AttributionDecision
from dataflows.commission.book import OrderBook

# Book buckets per tenant: enough that one tenant's books spread evenly over a few workers
# (bytewax routes each key to a worker by its hash) and that a snapshot re-pickles one bucket's
# changed segments, not the tenant's; each bucket with entries on hold has one timer, so not
# more. Part of the recovery state (keys name it), like the click shards' count.
BOOK_BUCKETS = 64
BOOK_SEP = "\x1e"  # in book keys; click shard keys use "\x1f"; tenant ids contain neither


def book_bucket(order_id: str) -> int:
    return zlib.crc32(order_id.encode()) % BOOK_BUCKETS


def book_key(tenant_id: str, order_id: str) -> str:
    return f"{tenant_id}{BOOK_SEP}{book_bucket(order_id)}"


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Decided:
    """A decided order, to its book: the event (kept, its conversion with product collections
    applied), the decision, the new-customer flag, the agent's month volume before it (None: no
    commission rules apply) and the order's follow-ups that waited at the tenant, in (event
    time, event id) order."""

    event: Event
    decision: AttributionDecision
    is_new_customer: bool
    period_volume: Decimal | None
    followups: tuple[Event, ...] = ()

    @property
    def tenant_id(self) -> str:
        return self.event.tenant_id

    @property
    def order_id(self) -> str:
        return self.event.order_id

    def __reduce__(self) -> tuple[object, ...]:
        # Its fields in order (workers exchange it pickled; the dataclass's own state functions
        # are Python loops), as `events.Event` does.
        return (Decided, (self.event, self.decision, self.is_new_customer, self.period_volume,
                          self.followups))  # fmt: skip


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Paid:
    """The ERP reported the invoice of a decided order paid (the tenant found the order by its
    name)."""

    tenant_id: str
    order_id: str
    paid_ms: int
    invoice: str

    def __reduce__(self) -> tuple[object, ...]:
        return (Paid, (self.tenant_id, self.order_id, self.paid_ms, self.invoice))


@dataclass(slots=True)  # treated as immutable; not frozen: see `events.Event`
class Migrated:
    """A book a snapshot of the tenant-keyed flow held (resumed by the tenant, sent to its
    bucket once): stored as the tenant stored it, with its order's event time."""

    tenant_id: str
    order_id: str
    stored: bytes | OrderBook
    occurred_ms: int

    def __reduce__(self) -> tuple[object, ...]:
        return (Migrated, (self.tenant_id, self.order_id, self.stored, self.occurred_ms))


# What reaches a book bucket: these, refunds (from routing) and the order events of decided
# orders (edits, cancellations: forwarded by the tenant).
BookItem = Event | Decided | Paid | Migrated


def is_book_item(item: object) -> bool:
    """Whether a tenant output goes to a book bucket (rather than to the sinks)."""
    kind = type(item)
    return kind is Decided or kind is Paid or kind is Event or kind is Migrated


def item_book_key(item: BookItem) -> str:
    return book_key(item.tenant_id, item.order_id)
