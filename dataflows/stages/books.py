"""The order books: one `BookBucket` per `(tenant, bucket)` key (`attribution.messages`).

Bookkeeping only; the money rules are the pure modules' (`commission.logic.accrue`,
`commission.book`: refunds, cancellations, edits, approvals). A bucket keeps, for the orders of
its tenant whose id falls in it:

- **order books**: a decided order (`Decided`, from the tenant stage) becomes a book: its
  commission is accrued with the agent's month volume the tenant counted before it, its
  conversion row and entries are emitted, and its follow-ups (those that waited at the tenant
  and those that waited here) are applied in `(event time, event id)` order. Books are packed
  as plain values at each change (`commission.codec`) when snapshots are taken, and expire
  `order_retention` of event time after their order;
- nothing else: the tenant stage deduplicates every event, judges lateness, and keeps the
  follow-ups (refunds, cancellations, edits) of an order it has not decided yet, to send them
  with the decision. It forwards the follow-ups of a decided order, in its input order, so a
  book sees its order's events in the order the tenant handled them, as when the tenant kept
  the books itself;
- **holds**: every entry starts `pending` and is approved at the earlier of its order's event
  time + the program's `hold_days` and the ERP reporting its invoice paid (`Paid`, which the
  tenant resolves from the invoice's order name), compared with processing time. Orders with
  entries on hold sit in a heap `(due wall ms, order id)`; `notify_at` wakes the bucket at the
  earliest. An entry and its approval come from the same key, so they reach the ledger sink in
  that order.

**Watermarks**: a bucket keeps the marks of its own items (its orders' and follow-ups' event
times) and expires books by them; a bucket that has its tenant's later orders expires its books
later than the tenant forgets their ids, so a follow-up the tenant forwards finds its book
(one that does not, because its order was decided before the retention, is dead-lettered).
"""

from __future__ import annotations

import heapq
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from bytewax.operators import StatefulLogic

from dataflows.attribution.events import Event, from_ms
from dataflows.attribution.logic import attributed_conversion
from dataflows.attribution.messages import BookItem, Decided, Migrated, Paid
from dataflows.attribution.segments import SegmentedMap
from dataflows.commission.book import (
    OrderBook,
    apply_cancel,
    apply_edit,
    apply_refund,
    due_approvals,
    is_same_order,
    mark_paid,
)
from dataflows.commission.codec import pack_book
from dataflows.commission.collections import with_collections
from dataflows.commission.logic import CommissionError, accrue
from dataflows.config import ConfigProvider, TenantConfig
from dataflows.stages.base import (
    DEFAULT_HOLD_DAYS,
    Output,
    Tuning,
    complete,
    facts_letter,
    letter,
    order_letter,
    resumable,
    snapshot_of,
    unpack,
)
from schemas.conversion import Conversion, OrderRefund
from schemas.events.envelope import DeadLetter

# Books per segment of a bucket's map. A snapshot of a touched bucket re-pickles the segments
# that changed, the newest always (a busy epoch touches every bucket of a tenant: 64 open
# segments, ~1 KB a book); with the segment vault each full segment is written once, one file
# and one fsync each (orders/s ÷ 64 files a second). The tenant-keyed flow had one map of 500.
BOOK_SEGMENT = 64
# Expiry runs when the bucket's watermark moved this far (event time) since it last ran.
EXPIRE_EVERY_MS = 1_000


@dataclass(slots=True)
class BucketState:
    tenant_id: str = ""
    watermark_ms: int = 0  # the largest event time of its items (each capped by future skew)
    expired_at_ms: int = 0  # the watermark of the last expiry
    orders: SegmentedMap[str, bytes | OrderBook] = field(
        default_factory=lambda: SegmentedMap(BOOK_SEGMENT)
    )
    holds: list[tuple[int, str]] = field(default_factory=list)  # (due wall ms, order id) heap
    hold_due: dict[str, int] = field(default_factory=dict)  # order id → its live heap entry

    def is_empty(self) -> bool:
        return not self.orders


class BookBucket(StatefulLogic[BookItem, Output, bytes]):
    """One `(tenant, bucket)` key's order books (see the module docstring)."""

    def __init__(
        self,
        state: BucketState,
        config: ConfigProvider,
        tuning: Tuning,
        wall_ms: Callable[[], int],
    ) -> None:
        self.state = state
        self.config = config
        self.tuning = tuning
        self.wall_ms = wall_ms

    # --- bytewax hooks -------------------------------------------------------------------

    def on_item(self, value: BookItem) -> tuple[Iterable[Output], bool]:
        """An item this fails on becomes a dead letter naming it, and the flow goes on (what
        it emitted is dropped; the state keeps what it changed before the error)."""
        out: list[Output] = []
        self.state.tenant_id = value.tenant_id  # bytewax's builder is not told the key
        try:
            cfg = self.config.tenant(value.tenant_id)
            if isinstance(value, Decided):
                self._decided(value, cfg, out)
            elif isinstance(value, Paid):
                self._paid(value, cfg, out)
            elif isinstance(value, Migrated):
                self._migrated(value, cfg, out)
            else:
                self._event(value, cfg, out)
            self._expire()
        except Exception as exc:
            return [self._failed(value, exc)], False
        return out, self.state.is_empty()

    def _failed(self, value: BookItem, exc: Exception) -> DeadLetter:
        """The letter of an item this failed on: a decided order's names its tenant, shop,
        order and event (its Kafka value stayed with the tenant), a follow-up's carries its
        value."""
        error = f"{type(exc).__name__}: {exc}"
        wall = self.wall_ms()
        if isinstance(value, Decided) and isinstance(value.event.payload, Conversion):
            reason = f"state: order {value.order_id} ({value.event.event_id}): {error}"
            return order_letter(value.event.payload, reason[:500], wall)
        if isinstance(value, Event):
            return letter(value, f"state: {value.kind} {value.event_id}: {error}"[:500], wall)
        facts: dict[str, str | None] = {"tenant_id": value.tenant_id, "order_id": value.order_id}
        reason = f"state: {type(value).__name__} of order {value.order_id}: {error}"
        return facts_letter(facts, reason[:500], wall)

    def on_notify(self) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        try:
            cfg = self.config.tenant(self.state.tenant_id)
            self._approve_due(cfg, out, self.wall_ms())
        except Exception as exc:  # one bucket's failure stops no one
            reason = f"state: timer of {self.state.tenant_id}'s books: {type(exc).__name__}: {exc}"
            out.append(facts_letter({"tenant_id": self.state.tenant_id}, reason[:500],
                                    self.wall_ms()))  # fmt: skip
        return out, self.state.is_empty()

    def notify_at(self) -> datetime | None:
        state = self.state
        holds, due = state.holds, state.hold_due
        while holds and due.get(holds[0][1]) != holds[0][0]:
            heapq.heappop(holds)  # superseded or expired: not worth a wake-up
        return from_ms(holds[0][0]) if holds else None

    def snapshot(self) -> bytes:
        return snapshot_of(self.state, self.tuning)

    # --- items ---------------------------------------------------------------------------

    def _decided(self, decided: Decided, cfg: TenantConfig, out: list[Output]) -> None:
        """Open a decided order's book: accrue, emit its row and entries, apply what waited."""
        event = decided.event
        conversion = event.payload
        assert isinstance(conversion, Conversion)
        order_id, state = conversion.order_id, self.state
        self._advance(event)
        if order_id in state.orders:  # sent twice (cannot happen in order; never booked twice)
            return
        book = OrderBook(
            conversion, decided.decision, event.received_ms,
            is_new_customer=decided.is_new_customer,
        )  # fmt: skip
        book.fx_rate = cfg.fx_rate(conversion.currency, conversion.occurred_at)
        if book.fx_rate is None:  # never booked at a guessed rate; a replay with the rate books it
            reason = (
                f"fx: no {conversion.currency} rate at {conversion.occurred_at.isoformat()}: "
                f"order {conversion.order_id} decided without conversion row or commission"
            )
            out.append(order_letter(conversion, reason, self.wall_ms()))
        if decided.period_volume is not None:
            self._accrue(book, decided.period_volume, cfg, out)
        out.extend(self._conversion_row(book, event.received_ms))
        out.extend(book.entries)
        if event.kind == "cancel":
            self._apply(book, event, cfg, out)
        for followup in decided.followups:
            self._apply(book, followup, cfg, out)
        self._approve(order_id, book, cfg, out, self.wall_ms())
        self._keep(order_id, book, new_at_ms=event.occurred_ms)

    def _accrue(
        self, book: OrderBook, period_volume: Decimal, cfg: TenantConfig, out: list[Output]
    ) -> None:
        """Commission for the book at the agent's month volume before it (counted by the
        tenant), when its program has rules."""
        decision, conversion = book.decision, book.conversion
        rules = cfg.rules_for(decision.program_id)
        if rules is None or decision.agent_id is None:
            return
        book.chain = cfg.agent_chain(decision.agent_id, at=conversion.occurred_at)
        book.period_volume = period_volume
        if book.fx_rate is None:  # no commission (see `_decided`)
            return
        book.rule_key = (rules.rule_id, rules.version)
        try:
            book.entries = accrue(
                conversion, decision, rules, book.chain,
                period_volume=book.period_volume, is_new_customer=book.is_new_customer,
                fx_rate=book.fx_rate,
                rules_rate=cfg.rules_rate(rules, conversion),
            )  # fmt: skip
        except CommissionError as exc:
            reason = f"commission: order {conversion.order_id}: {exc}"
            out.append(order_letter(conversion, reason, self.wall_ms()))

    def _event(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        """A refund, cancellation or edit of a decided order (forwarded by the tenant, which
        deduplicated and judged it)."""
        self._advance(event)
        stored = self.state.orders.get(event.order_id)
        if stored is None:
            reason = (
                f"orphan: {event.kind} of order {event.order_id}, which has no book (expired, or "
                "its opening failed: see that order's letter)"
            )
            out.append(letter(event, reason, self.wall_ms()))
            return
        book = unpack(stored)
        self._apply(book, event, cfg, out)
        self._approve(event.order_id, book, cfg, out, self.wall_ms())
        self._keep(event.order_id, book)

    def _paid(self, paid: Paid, cfg: TenantConfig, out: list[Output]) -> None:
        if not self.tuning.holds:
            return
        stored = self.state.orders.get(paid.order_id)
        if stored is None:
            reason = (
                f"invoice {paid.invoice}: paid for order {paid.order_id}, whose book has "
                "expired: nothing was approved by it"
            )
            facts: dict[str, str | None] = {"tenant_id": paid.tenant_id, "invoice": paid.invoice,
                     "order_id": paid.order_id}  # fmt: skip
            out.append(facts_letter(facts, reason, self.wall_ms()))
            return
        book = unpack(stored)
        mark_paid(book, paid.paid_ms, paid.invoice)
        self._approve(paid.order_id, book, cfg, out, self.wall_ms())
        self._keep(paid.order_id, book)

    def _migrated(self, migrated: Migrated, cfg: TenantConfig, out: list[Output]) -> None:
        """A book from a snapshot of the tenant-keyed flow: kept here from now on, its holds
        scheduled again."""
        order_id, state = migrated.order_id, self.state
        if order_id in state.orders:
            return
        book = unpack(migrated.stored)  # (older books completed by the codec)
        self._approve(order_id, book, cfg, out, self.wall_ms())
        self._keep(order_id, book, new_at_ms=migrated.occurred_ms)

    def _apply(self, book: OrderBook, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        """A follow-up (refund, cancellation, update) of a decided order → adjustment entries
        (the rules: `commission.book`)."""
        if event.kind == "refund":
            assert isinstance(event.payload, OrderRefund)
            new = apply_refund(book, event.payload, event.event_id)
        elif event.kind == "cancel":
            new = apply_cancel(book, from_ms(event.occurred_ms), event.event_id)
        else:
            assert isinstance(event.payload, Conversion)
            updated = with_collections(
                event.payload, cfg.product_collections(event.payload.shop), decided=book.conversion
            )
            if is_same_order(book, updated):
                return
            rules = cfg.rule_versions.get(book.rule_key) if book.rule_key else None
            try:
                new = apply_edit(
                    book, updated, rules, cfg.rules_rate, event.event_id,
                    from_ms(event.occurred_ms),
                )  # fmt: skip
            except CommissionError as exc:
                reason = f"commission: edit of order {updated.order_id}: {exc}"
                out.append(letter(event, reason, self.wall_ms()))
                return
            out.extend(self._conversion_row(book, event.received_ms))
        out.extend(new)

    # --- holds ---------------------------------------------------------------------------

    def _hold_days(self, cfg: TenantConfig, book: OrderBook) -> int:
        program = cfg.program_for(book.decision.program_id)
        return program.hold_days if program is not None else DEFAULT_HOLD_DAYS

    def _approve(
        self, order_id: str, book: OrderBook, cfg: TenantConfig, out: list[Output], now_ms: int
    ) -> None:
        """Approve the book's entries whose hold has ended by `now_ms` (wall clock) and schedule
        the order for the earliest one still held."""
        if not self.tuning.holds:
            return
        approvals, next_due = due_approvals(book, self._hold_days(cfg, book), now_ms)
        out.extend(approvals)
        if self.state.hold_due.get(order_id) == next_due:
            return
        if next_due is None:
            del self.state.hold_due[order_id]
        else:  # an older heap entry of the order is skipped when popped (`_approve_due`)
            self.state.hold_due[order_id] = next_due
            heapq.heappush(self.state.holds, (next_due, order_id))

    def _approve_due(self, cfg: TenantConfig, out: list[Output], now_ms: int) -> None:
        state = self.state
        while state.holds and state.holds[0][0] <= now_ms:
            due, order_id = heapq.heappop(state.holds)
            if state.hold_due.get(order_id) != due or order_id not in state.orders:
                continue  # superseded by a later schedule, or the book expired
            book = unpack(state.orders[order_id])
            self._approve(order_id, book, cfg, out, now_ms)
            self._keep(order_id, book)

    def _keep(self, order_id: str, book: OrderBook, new_at_ms: int | None = None) -> None:
        """Store a book: packed now as plain values when snapshots are taken (a snapshot then
        copies bytes), as itself in a run that never snapshots. A new book (`new_at_ms`: its
        order's event time) expires after the order retention. Packed at each change, not at
        the next snapshot: see docs/performance/engine.md (2026-12-07), deferring made the
        snapshot after a busy epoch pack thousands of books at once (freshness p99 0.73-0.93 s
        against 0.35-0.36 s)."""
        stored: bytes | OrderBook = pack_book(book) if self.tuning.snapshots else book
        if new_at_ms is None:
            self.state.orders[order_id] = stored
        else:
            self.state.orders.add(order_id, stored, new_at_ms)

    def _conversion_row(self, book: OrderBook, received_ms: int) -> list[Output]:
        # attributed_at: the receive time of the event that produced this version of the row,
        # so a replay reproduces it exactly (it is also the ClickHouse row version). No row
        # without a rate: analytics would convert its revenue at a made-up one.
        if book.fx_rate is None:
            return []
        row = attributed_conversion(
            book.conversion,
            book.decision,
            attributed_at=from_ms(received_ms),
            is_new_customer=book.is_new_customer,
            fx_rate=book.fx_rate,
        )
        return [row]

    # --- time ----------------------------------------------------------------------------

    def _advance(self, event: Event) -> None:
        candidate = min(event.occurred_ms, event.received_ms + self.tuning.future_skew_ms)
        if candidate > self.state.watermark_ms:
            self.state.watermark_ms = candidate

    def _expire(self) -> None:
        state = self.state
        if state.watermark_ms - state.expired_at_ms < EXPIRE_EVERY_MS:
            return
        state.expired_at_ms = state.watermark_ms
        for _, order_id, _ in state.orders.expire(
            state.watermark_ms - self.tuning.order_retention_ms
        ):
            state.hold_due.pop(order_id, None)  # its heap entry is skipped when popped


def bucket_builder(
    config: ConfigProvider,
    tuning: Tuning | None = None,
    wall_ms: Callable[[], int] | None = None,
) -> Callable[[bytes | None], BookBucket]:
    """What `op.stateful` calls for a new bucket key, with its resume snapshot (or `None`)."""
    clock = wall_ms or (lambda: int(time.time() * 1000))
    tuning = tuning or Tuning()

    def build(resume: bytes | None) -> BookBucket:
        resume = resumable(resume)
        state = pickle.loads(resume) if resume is not None else BucketState()
        complete(state)
        return BookBucket(state, config, tuning, clock)

    return build
