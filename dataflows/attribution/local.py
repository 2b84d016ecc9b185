"""One tenant's stages wired in one process, as the flow wires them (`attribution.flow`): the
tenant stage (`stages.tenant`) and its book buckets (`stages.books`). For tests and benches that
drive one tenant's state machine without bytewax."""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from dataflows.attribution.events import Event
from dataflows.attribution.messages import is_book_item, item_book_key
from dataflows.attribution.routing import Found, Held
from dataflows.commission.book import OrderBook
from dataflows.config import ConfigProvider
from dataflows.stages.base import NO_SNAPSHOT, Output, Tuning, unpack
from dataflows.stages.books import BookBucket, bucket_builder
from dataflows.stages.tenant import (
    AttributionLogic,
    TenantOutput,
    TenantState,
    load_snapshot,
    tenant_builder,
)

_LOCAL = "refstream.local.1"  # the first element of a `LocalAttribution` snapshot


class LocalAttribution:
    """One tenant's stage and its book buckets wired in one process as the flow wires them:
    the tenant's messages to their book buckets, everything else emitted. For tests
    and benches that drive one tenant's state machine without bytewax; same hooks as a
    `StatefulLogic` (`notify_at` the earliest of all, `on_notify` wakes all)."""

    def __init__(
        self,
        tenant: AttributionLogic,
        buckets: Callable[[bytes | None], BookBucket],
        resumed: dict[str, bytes] | None = None,
    ) -> None:
        self.tenant = tenant
        self._bucket = buckets
        self.books: dict[str, BookBucket] = {k: buckets(v) for k, v in (resumed or {}).items()}

    @property
    def state(self) -> TenantState:
        return self.tenant.state

    def book(self, order_id: str) -> OrderBook | None:
        """The order's book, from its bucket (None: no book)."""
        for bucket in self.books.values():
            stored = bucket.state.orders.get(order_id)
            if stored is not None:
                return unpack(stored)
        return None

    def stored_books(self) -> dict[str, bytes | OrderBook]:
        """Every bucket's books as stored (packed, or themselves without snapshots)."""
        return {k: v for bucket in self.books.values() for k, v in bucket.state.orders.items()}

    def on_item(self, value: Event | Found | Held) -> tuple[list[Output], bool]:
        return self._route(self.tenant.on_item(value)[0]), False

    def on_notify(self) -> tuple[list[Output], bool]:
        out = self._route(self.tenant.on_notify()[0])
        for bucket in list(self.books.values()):
            out.extend(bucket.on_notify()[0])
        return out, False

    def on_eof(self) -> tuple[list[Output], bool]:
        return self._route(self.tenant.on_eof()[0]), False

    def notify_at(self) -> datetime | None:
        wakes = [self.tenant.notify_at(), *(bucket.notify_at() for bucket in self.books.values())]
        due = [wake for wake in wakes if wake is not None]
        return min(due) if due else None

    def snapshot(self) -> bytes:
        tenant = self.tenant.snapshot()
        if tenant == NO_SNAPSHOT:
            return tenant
        books = {key: bucket.snapshot() for key, bucket in self.books.items()}
        return pickle.dumps((_LOCAL, tenant, books), protocol=pickle.HIGHEST_PROTOCOL)

    def _route(self, items: Iterable[TenantOutput]) -> list[Output]:
        return route_to_books(items, self.books, self._bucket)


def route_to_books(
    items: Iterable[TenantOutput],
    books: dict[str, BookBucket],
    build: Callable[[bytes | None], BookBucket],
    touched: set[str] | None = None,
) -> list[Output]:
    """What the flow's `key_book` and `books` steps do with a tenant's outputs, in process: each
    message to its bucket in `books` (made by `build` when new, dropped when it discards
    itself), the bucket's outputs and every other item emitted. `touched` collects the bucket
    keys (bytewax snapshots the keys an epoch touched)."""
    out: list[Output] = []
    for item in items:
        if not is_book_item(item):
            out.append(item)  # type: ignore[arg-type]
            continue
        key = item_book_key(item)  # type: ignore[arg-type]
        if touched is not None:
            touched.add(key)
        bucket = books.get(key)
        if bucket is None:
            bucket = books[key] = build(None)
        emitted, discard = bucket.on_item(item)  # type: ignore[arg-type]
        out.extend(emitted)
        if discard:
            del books[key]
    return out


def builder(
    config: ConfigProvider,
    tuning: Tuning | None = None,
    wall_ms: Callable[[], int] | None = None,
) -> Callable[[bytes | None], LocalAttribution]:
    """A tenant with its book buckets in one process (`LocalAttribution`), from its snapshot
    (or `None`); a snapshot of the tenant stage alone (the tenant-keyed flow's, with its
    books) resumes too, its books handed to the buckets at the first item or timer."""
    tuning = tuning or Tuning()
    tenants = tenant_builder(config, tuning, wall_ms)

    def build(resume: bytes | None) -> LocalAttribution:
        local: Any = None
        if resume is not None and resume != NO_SNAPSHOT:
            local = load_snapshot(resume)  # the tenant stage's, or this class's
        if isinstance(local, tuple) and local and local[0] == _LOCAL:
            _, tenant_bytes, books = local
        else:
            tenant_bytes, books = resume, {}
        tenant = tenants(tenant_bytes)
        buckets = bucket_builder(config, tuning, wall_ms)
        return LocalAttribution(tenant, buckets, books)

    return build
