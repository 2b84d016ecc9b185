"""The tenant's attribution state and the `StatefulLogic` that drives it.

In the dataflow, clicks live below the tenant, in click shards keyed `(tenant, shard)`
(`routing`, `stages.clicks`): an order reaches its tenant with the candidate clicks its shards
found (`Found`, gathered here), lateness judged upstream in input order (`stages.clock`), and
each batch handled in input order. One `AttributionLogic` per tenant keeps:

- **its own clicks** only when driven alone (tests, benches) or resumed from a snapshot of the
  tenant-keyed flow (they keep serving as candidates until they expire), in a columnar store
  (`clicks.ClickStore`) expired by **event time** inside `on_item` once no order that is not
  late could still use them: older than `min(click, order watermark) - allowed_lateness - max
  lookback`;
- **seen event ids** for deduplication, expired at `slowest watermark - allowed_lateness` (an
  older event is rejected as late before it could be a duplicate, so the set stays bounded);
  clicks are deduplicated by their click id against the click index instead (it outlives the
  seen ids), which keeps a live click to one index entry;
- **pending orders** that cite a click id not seen yet: held until the click arrives, or for
  `order_wait_wall` of **processing time** (`notify_at`; only tenants with pending orders have a
  timer, so timers stay few), or to the end of a bounded input. Processing time, because event
  time across Kafka partitions is not aligned: in a backfill one partition's clicks may be hours
  of event time behind another's, and an event-time wait would release orders before their
  clicks are read (measured in the recovery test). `order_wait_event_ms` optionally also
  releases them once the tenant's click watermark passes `order time + wait`, for inputs read
  in event-time order (e.g. a sorted replay from the archive);
- **order books**: each decided order's facts, decision, rule version, chain and ledger entries,
  so refunds, cancellations and edits become adjustment entries; kept `order_retention` of event
  time. Refunds/cancellations/updates that arrive before their order is decided wait as
  follow-ups and are applied in `(event time, event id)` order once it is; follow-ups for an
  order that never arrives are dead-lettered as orphans after `allowed_lateness`;
- customer bindings, first-order times per customer (new-customer rate) and the agent's monthly
  volume (tier selection);
- **holds**: every ledger entry starts `pending` and is approved at the earlier of its order's
  event time + the program's `hold_days` and the ERP reporting the order's invoice paid
  (`dataflows.commission.holds.approves_at`), compared with **processing time**: a hold period
  is a real-world wait (the refund window), not a distance in the input. Orders with entries
  still on hold sit in a heap `(due wall ms, order id)`; `notify_at` wakes the tenant at the
  earliest, and each decided order, follow-up and paid invoice approves what is due at once.
  Paid invoices find their order by name (`order_refs`: the shop order name, directly or
  through the ERP sale order created from it, `sale_orders`); an invoice for an order not
  decided yet waits in `paid_waiting` for the order stream's allowed lateness. Approvals are
  `EntryApproval`s; the ledger sink applies them only to entries still `pending`.

**Watermarks** are kept per stream (clicks, orders, refunds) and tenant: the largest event time
seen, each event counting at most `future_skew` past its receive time (a wrong clock cannot make
everything late). Per stream, because topics are consumed at different speeds (a backfill may
read months of orders before the clicks): an event is late only against its own stream, when
older than `its watermark - allowed_lateness`; it is then counted and emitted as a dead letter
with reason `late` (the reconciliation output). Streams that fall more than `max_stream_skew`
behind stop holding expiry back, so state stays bounded when a tenant's stream goes quiet.

Outputs (`Output`) are the objects themselves, told apart by type: `AttributedConversion` (a
decided order's row), `CommissionAccrual` (a ledger entry), `EntryApproval` and `DeadLetter`.

Snapshots from older versions resume: the state dataclasses pickle their slots by name, so a
field added later is missing from an older snapshot and `_complete` gives it its default.

Determinism: decisions use only event times, ids and the configuration, and follow-ups apply in
a canonical order, so any arrival order of one order's events with its clicks gives the same
ledger; refunds and the cancellation of a decided order are settled in event-time order
whatever order they arrive in (`adjustments.settle`: late earlier events book corrections
dated like what they correct). Known arrival-order dependences (documented, not hidden): edits
apply when they arrive (later refunds settle against the edited basis), the tier volume and the
new-customer flag depend on which of an agent's/customer's orders were decided first, so does
the customer binding (found by `tests/dataflows/test_differential.py`, kept there as a strict
xfail: a customer's later order decided first, by another agent's coupon, binds the customer to
that agent, and the earlier order, decided after, re-binds it), and clicks cited by nobody but
matching the order's visitor count only if they arrived before the order was decided.

Scale-out: a tenant's click shards spread over workers by bytewax's key hashing; this state
(order books, bindings, first orders, tier volume, holds) stays per tenant, since the decision
and the commission read the customer's and the agent's history (splitting it is the remaining
part of issue #19's item 1).
"""

from __future__ import annotations

import base64
import heapq
import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from decimal import Decimal

import orjson
from bytewax.operators import StatefulLogic

from dataflows.attribution.clicks import ClickStore
from dataflows.attribution.events import (
    Click,
    Event,
    InvoicePaid,
    SaleOrderRef,
    dead_letter,
    from_ms,
    order_ref,
)
from dataflows.attribution.logic import (
    ClickCandidate,
    CustomerBinding,
    KnownReferrals,
    attribute,
    attributed_conversion,
    binding_from,
)
from dataflows.attribution.routing import Found, Held
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
from dataflows.commission.codec import pack_book, unpack_book
from dataflows.commission.collections import with_collections
from dataflows.commission.logic import CommissionError, accrue
from dataflows.config import ConfigProvider, TenantConfig
from dataflows.stages.clock import TenantClocks, stream_of
from schemas.conversion import Conversion, OrderRefund
from schemas.events.envelope import DeadLetter
from schemas.ledger import AttributedConversion, CommissionAccrual, EntryApproval

DAY_MS = 86_400_000
# Keys per segment of the segmented maps (a snapshot re-pickles the segments that changed:
# measured by `bench.order_path`'s busy epoch, 20k/5k/20k re-pickled ~10x what 2k/500/2k did;
# a lookup that misses asks every segment, so they stay in the thousands).
SEEN_SEGMENT, BOOK_SEGMENT, REF_SEGMENT = 2_000, 500, 2_000
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
    # whole tenant (see bench.replay for the replay's rate with and without).
    snapshots: bool = True


@dataclass(slots=True)
class Pending:
    event: Event
    missing: set[str]
    since_wall_ms: int


@dataclass(slots=True)
class TenantState:
    tenant_id: str = ""
    watermark_ms: int = 0  # the fastest stream's
    marks: dict[str, int] = field(default_factory=dict)  # stream → watermark
    swept_ms: int = 0
    # Live clicks with their visitor index and expiry heaps, in segments that each keep their
    # pickled bytes until they change (`clicks.ClickStore`): a snapshot re-pickles only those.
    clicks: ClickStore = field(default_factory=ClickStore)
    # Where snapshots written before the store kept the index and heap; emptied on resume.
    click_heap: list[tuple[int, str]] = field(default_factory=list)
    visitors: dict[str, list[str]] = field(default_factory=dict)
    # Seen ids, order books and order names in segments that keep their pickled bytes until
    # they change (`segments.SegmentedMap`), so a snapshot re-pickles only what changed.
    seen: SegmentedMap[str, int] = field(default_factory=lambda: SegmentedMap(SEEN_SEGMENT))
    # Where snapshots written before the segmented maps kept the heaps; emptied on resume.
    seen_heap: list[tuple[int, str]] = field(default_factory=list)
    pending: dict[str, Pending] = field(default_factory=dict)
    awaiting: dict[str, list[str]] = field(default_factory=dict)  # click id → pending orders
    followups: dict[str, list[Event]] = field(default_factory=dict)
    # Each book packed as plain values when it changes (`commission.codec`,
    # `AttributionLogic._keep`): a snapshot then copies bytes instead of pickling every order's
    # pydantic objects each epoch. A run that never snapshots (`Tuning.snapshots` False:
    # replays) keeps the books themselves.
    orders: SegmentedMap[str, bytes | OrderBook] = field(
        default_factory=lambda: SegmentedMap(BOOK_SEGMENT)
    )
    order_heap: list[tuple[int, str]] = field(default_factory=list)  # (before segments)
    bindings: dict[str, CustomerBinding] = field(default_factory=dict)
    customers: dict[str, int] = field(default_factory=dict)  # customer → first order ms
    volumes: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (agent, YYYY-MM)
    late_events: int = 0
    # Added for holds; older snapshots lack them (see the module docstring).
    holds: list[tuple[int, str]] = field(default_factory=list)  # (due wall ms, order id) heap
    hold_due: dict[str, int] = field(default_factory=dict)  # order id → its live heap entry
    # order name → id ("" = ambiguous)
    order_refs: SegmentedMap[str, str] = field(default_factory=lambda: SegmentedMap(REF_SEGMENT))
    sale_orders: dict[str, tuple[str, int]] = field(default_factory=dict)  # → (name, seen ms)
    paid_waiting: dict[str, tuple[int, str]] = field(default_factory=dict)  # name → (ms, inv.)
    unmatched_invoices: int = 0
    # Added for click shards: an order's answers from its shards, until all are in
    # (order event id → shard → answer).
    gathering: dict[str, dict[int, Found]] = field(default_factory=dict)
    # Orders whose first event a click shard holds (`Held`): order id → that event's id; their
    # other events wait as follow-ups meanwhile.
    held: dict[str, str] = field(default_factory=dict)

    def is_empty(self) -> bool:
        return not (
            self.clicks or self.seen or self.pending or self.followups or self.orders
            or self.paid_waiting or self.sale_orders or self.gathering or self.held
        )  # fmt: skip


_NO_SNAPSHOT = pickle.dumps(None)


def _complete(obj: TenantState | OrderBook) -> None:
    """Give fields a snapshot from an older version did not have their defaults."""
    for f in fields(obj):
        if not hasattr(obj, f.name):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(obj, f.name, default)


def _unpack(data: bytes | OrderBook) -> OrderBook:
    if isinstance(data, OrderBook):  # kept unpacked (a run without snapshots)
        return data
    return unpack_book(data)


def _month(ms: int) -> str:
    when = from_ms(ms)
    return f"{when.year:04d}-{when.month:02d}"  # cheaper than strftime on the order path


class AttributionLogic(StatefulLogic[Event | Found | Held, Output, bytes]):
    """The tenant's attribution state machine (see the module docstring)."""

    def __init__(
        self,
        state: TenantState,
        config: ConfigProvider,
        tuning: Tuning,
        wall_ms: Callable[[], int],
        clocks: TenantClocks | None = None,
    ) -> None:
        self.state = state
        self.config = config
        self.tuning = tuning
        self.wall_ms = wall_ms
        # In the dataflow, lateness is judged upstream in input order (`stages.clock`); alone
        # (tests, benches), against this tenant's own marks.
        self.clocks = clocks

    # --- bytewax hooks -------------------------------------------------------------------

    @property
    def tenant_id(self) -> str:
        return self.state.tenant_id

    def on_item(self, value: Event | Found | Held) -> tuple[Iterable[Output], bool]:
        """`_on_item`, except that an event it fails on becomes a dead letter (with the tenant,
        the event and the error) instead of stopping the flow for every tenant. What the failed
        event emitted is dropped; the state keeps what it changed before the error. An order's
        answers from its click shards (`Found`) are gathered first (`_gather`)."""
        try:
            if isinstance(value, Held):
                self._held(value.event)
                return [], False
            if isinstance(value, Found):
                event = self._gather(value)
                if event is None:
                    return [], False
                value = event
            return self._on_item(value)
        except Exception as exc:
            failed = value.event if isinstance(value, Found | Held) else value
            self.state.tenant_id = failed.tenant_id
            reason = f"state: {failed.kind} {failed.event_id}: {type(exc).__name__}: {exc}"[:500]
            return [self._dead_letter(failed, reason)], False

    def _on_item(self, value: Event) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        state = self.state
        state.tenant_id = value.tenant_id  # bytewax's builder is not told the key
        if value.event_id in state.seen or (value.kind == "click" and self._known_click(value)):
            return out, False
        if value.kind in ("order", "cancel") and state.held.get(value.order_id) == value.event_id:
            del state.held[value.order_id]  # the held event is answered: it opens the order
        if self.clocks is not None:  # judged in input order (`stages.clock`)
            late = getattr(value, "late", False)
        else:
            late = value.occurred_ms < state.marks.get(stream_of(value), 0) - (
                self.tuning.allowed_lateness_ms
            )
        if late:
            state.late_events += 1
            out.append(self._dead_letter(value, "late: older than the allowed lateness"))
            return out, False
        if value.kind != "click":  # clicks are deduplicated by their click id (`_known_click`)
            state.seen.add(value.event_id, value.occurred_ms, value.occurred_ms)
        cfg = self.config.tenant(self.tenant_id)
        advanced = self._advance(value)
        if value.kind == "click":
            self._add_click(value, cfg, out)
        elif value.kind == "refund":
            self._on_refund(value, cfg, out)
        elif value.kind == "paid":
            self._on_paid(value, cfg, out)
        elif value.kind == "sale_order":
            self._on_sale_order(value, cfg, out)
        else:
            self._on_order_event(value, cfg, out)
        if advanced:
            self._expire(cfg, out)
            if self.tuning.order_wait_event_ms is not None:
                self._release_due(cfg, out, self._event_time_due)
        return out, state.is_empty()

    def _held(self, event: Event) -> None:
        """A shard holds `event`'s lookup: unless the order is decided (or waits already), its
        other events are follow-ups until this one is answered."""
        state = self.state
        state.tenant_id = event.tenant_id
        order_id = event.order_id
        if event.event_id in state.seen or order_id in state.orders:
            return
        state.held.setdefault(order_id, event.event_id)

    def _gather(self, found: Found) -> Event | None:
        """The order event with its candidate clicks once every shard it asked has answered,
        else None (the answer is kept). Answers for an event already seen are dropped."""
        event, state = found.event, self.state
        state.tenant_id = event.tenant_id
        if event.event_id in state.seen:
            return None
        if len(found.shards) == 1:
            answers = [found]
        else:
            parts = state.gathering.setdefault(event.event_id, {})
            parts[found.shard] = found  # a duplicate answer replaces its twin
            if len(parts) < len(found.shards):
                return None
            del state.gathering[event.event_id]
            answers = [parts[shard] for shard in found.shards]
        cited = {c: click for answer in answers for c, click in answer.cited}
        assert isinstance(event.payload, Conversion)
        clicks = [(c, cited[c]) for c in event.payload.click_ids if c in cited]
        clicks.extend(pair for answer in answers for pair in answer.visited)
        return event.with_found(tuple(clicks))

    def on_notify(self) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        now = self.wall_ms()
        cfg = self.config.tenant(self.tenant_id)
        try:
            self._release_due(
                cfg, out, lambda p: p.since_wall_ms + self.tuning.order_wait_wall_ms <= now
            )
            self._approve_due(cfg, out, now)
        except Exception as exc:  # as in `on_item`: one tenant's failure stops no one
            reason = f"state: timer of tenant {self.tenant_id}: {type(exc).__name__}: {exc}"
            out.append(self._facts_letter({"tenant_id": self.tenant_id}, reason[:500]))
        return out, self.state.is_empty()

    def on_eof(self) -> tuple[Iterable[Output], bool]:
        out: list[Output] = []
        if self.tuning.release_on_eof:
            self._release_due(self.config.tenant(self.tenant_id), out, lambda _: True)
        return out, self.state.is_empty()

    def notify_at(self) -> datetime | None:
        wake = [
            p.since_wall_ms + self.tuning.order_wait_wall_ms for p in self.state.pending.values()
        ]
        holds, due = self.state.holds, self.state.hold_due
        while holds and due.get(holds[0][1]) != holds[0][0]:
            heapq.heappop(holds)  # superseded or expired: not worth a wake-up
        if holds:
            wake.append(holds[0][0])
        return from_ms(min(wake)) if wake else None

    def snapshot(self) -> bytes:
        if not self.tuning.snapshots:
            return _NO_SNAPSHOT
        # Pickled now, so later mutation cannot leak into the snapshot (must be immutable).
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)

    def _keep(self, order_id: str, book: OrderBook, new_at_ms: int | None = None) -> None:
        """Store a decided order's book: packed now as plain values when snapshots are taken
        (`commission.codec`: a snapshot then copies bytes), as itself in a run that never
        snapshots (no packing on its order path). A new book (`new_at_ms`: its order's event
        time) expires after the order retention.

        Packed at each change, not at the next snapshot: measured both ways with the codec
        (`bench.dataflow`, 200k clicks / 20k orders, two pairs, load 0.3-1.5, 2026-12-07):
        deferred, the snapshot after an epoch that decided thousands of books packed them all
        at once and kept them as object graphs until then, and the freshness p99 at 200 orders/s
        was 0.73-0.93 s against 0.35-0.36 s packed at each change (at half the maximum rate
        0.99-1.06 s against 0.82-0.83 s); a book rarely changes twice in an epoch, so deferring
        saved almost no packing."""
        stored: bytes | OrderBook = pack_book(book) if self.tuning.snapshots else book
        if new_at_ms is None:
            self.state.orders[order_id] = stored
        else:
            self.state.orders.add(order_id, stored, new_at_ms)

    # --- time ----------------------------------------------------------------------------

    def _advance(self, event: Event) -> bool:
        candidate = min(event.occurred_ms, event.received_ms + self.tuning.future_skew_ms)
        stream = stream_of(event)
        if candidate <= self.state.marks.get(stream, 0):
            return False
        self.state.marks[stream] = candidate
        if stream in CORE_STREAMS:  # ERP times are receive times: a backfill's orders lag them
            self.state.watermark_ms = max(self.state.watermark_ms, candidate)
        return True

    def _slowest(self, *streams: str) -> int:
        """The slowest of `streams`' watermarks (the core streams if none given), but never more
        than `max_stream_skew` behind the fastest: a quiet stream must not stop expiry."""
        marks = self.state.marks
        seen = [marks[s] for s in (streams or CORE_STREAMS) if s in marks]
        if not seen:
            return 0
        return max(min(seen), self.state.watermark_ms - self.tuning.max_stream_skew_ms)

    def _event_time_due(self, pending: Pending) -> bool:
        wait = self.tuning.order_wait_event_ms
        clicks = self.state.marks.get("click", 0)
        return wait is not None and pending.event.occurred_ms + wait <= clicks

    def _expire(self, cfg: TenantConfig, out: list[Output]) -> None:
        state, tuning = self.state, self.tuning
        settled = self._slowest() - tuning.allowed_lateness_ms
        clicks_settled = self._slowest("click", "order") - tuning.allowed_lateness_ms
        click_horizon = clicks_settled - cfg.max_lookback_days() * DAY_MS
        state.clicks.expire(click_horizon)
        state.seen.expire(settled)
        order_horizon = state.watermark_ms - tuning.order_retention_ms
        for occurred, order_id, stored in state.orders.expire(order_horizon):
            book = _unpack(stored) if stored is not None else None
            customer = book.conversion.customer_id if book is not None else None
            if customer is not None and state.customers.get(customer) == occurred:
                del state.customers[customer]
            state.hold_due.pop(order_id, None)  # its heap entry is skipped when popped
            name = book.conversion.order_name if book is not None else None
            if name and state.order_refs.get(order_ref(name)) == order_id:
                del state.order_refs[order_ref(name)]
        if state.watermark_ms - state.swept_ms < tuning.sweep_every_ms:
            return
        # Full scans of the smaller maps, at most once per `sweep_every` of event time.
        state.swept_ms = state.watermark_ms
        for customer, binding in list(state.bindings.items()):
            if binding.expires_at.timestamp() * 1000 < settled:
                del state.bindings[customer]
        oldest_month = _month(state.watermark_ms - 62 * DAY_MS)
        for key in [k for k in state.volumes if k[1] < oldest_month]:
            del state.volumes[key]
        orders_settled = self._slowest("order") - tuning.allowed_lateness_ms
        linked: set[str] | None = None  # shop orders the ERP made sale orders of
        for ref, (paid_ms, invoice) in list(state.paid_waiting.items()):
            if paid_ms < orders_settled:  # an invoice of an order this tenant never sent us
                del state.paid_waiting[ref]
                state.unmatched_invoices += 1
                if linked is None:
                    linked = {shop_ref for shop_ref, _ in state.sale_orders.values()}
                # An invoice naming anything else may be an ERP-only sale (counted, not
                # reported); one whose sale order was made from a shop order names an order
                # that should have reached us.
                if ref in linked:
                    out.append(self._invoice_letter(ref, paid_ms, invoice, ambiguous=False))
        for sale_order, (_, seen_ms) in list(state.sale_orders.items()):
            if seen_ms < order_horizon:
                del state.sale_orders[sale_order]
        for order_id in list(state.followups):
            if order_id in state.pending:
                continue
            events = state.followups[order_id]
            if max(e.occurred_ms for e in events) < orders_settled:
                del state.followups[order_id]
                for event in events:
                    reason = f"orphan: {event.kind} of order {order_id}, which never arrived"
                    out.append(self._dead_letter(event, reason))

    # --- clicks and orders ---------------------------------------------------------------

    def _known_click(self, event: Event) -> bool:
        assert isinstance(event.payload, tuple)
        return event.payload[0] in self.state.clicks

    def _add_click(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        assert isinstance(event.payload, tuple)
        click_id, click = event.payload
        state = self.state
        state.clicks.add(click_id, click)
        for order_id in state.awaiting.pop(click_id, []):
            pending = state.pending.get(order_id)
            if pending is None:
                continue
            pending.missing.discard(click_id)
            if not pending.missing:
                self._release(order_id, cfg, out)

    def _on_order_event(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        assert isinstance(event.payload, Conversion)
        conversion, state = event.payload, self.state
        order_id = conversion.order_id
        if order_id in state.orders:
            self._apply_stored(order_id, event, cfg, out)
            return
        if order_id in state.pending or order_id in state.held:
            state.followups.setdefault(order_id, []).append(event.kept())
            return
        # Click shards waited for the cited clicks already (`stages.clicks`); only an event
        # they were not asked about waits here, for this tenant's own store.
        if getattr(event, "found", None) is None:
            missing = {c for c in conversion.click_ids if c not in state.clicks}
        else:
            missing = set()
        kept = event.kept()
        if missing and not self._event_time_due(Pending(event, missing, 0)):
            state.pending[order_id] = Pending(kept, missing, self.wall_ms())
            for click_id in missing:
                state.awaiting.setdefault(click_id, []).append(order_id)
            return
        self._open(kept, cfg, out)

    def _on_refund(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        if event.order_id not in self.state.orders:
            self.state.followups.setdefault(event.order_id, []).append(event.kept())
            return
        self._apply_stored(event.order_id, event, cfg, out)

    def _apply_stored(
        self, order_id: str, event: Event, cfg: TenantConfig, out: list[Output]
    ) -> None:
        book = _unpack(self.state.orders[order_id])
        self._apply(book, event, cfg, out)
        self._approve(order_id, book, cfg, out, self.wall_ms())
        self._keep(order_id, book)

    def _release_due(
        self, cfg: TenantConfig, out: list[Output], due: Callable[[Pending], bool]
    ) -> None:
        ready = [oid for oid, p in self.state.pending.items() if due(p)]
        for order_id in sorted(ready):
            self._release(order_id, cfg, out)

    def _release(self, order_id: str, cfg: TenantConfig, out: list[Output]) -> None:
        pending = self.state.pending.pop(order_id)
        for click_id in pending.missing:
            waiting = [o for o in self.state.awaiting.get(click_id, []) if o != order_id]
            if waiting:
                self.state.awaiting[click_id] = waiting
            else:
                self.state.awaiting.pop(click_id, None)
        self._open(pending.event, cfg, out)

    def _candidates(
        self, conversion: Conversion, found: tuple[tuple[str, Click], ...] | None
    ) -> list[ClickCandidate]:
        """The order's candidate clicks: what its shards found (`found`) and what this tenant's
        own store holds (clicks filed before the shards, until they expire), cited ones first."""
        store = self.state.clicks
        pairs: list[tuple[str, Click]] = []
        if store:
            pairs = [(c, click) for c in conversion.click_ids if (click := store.get(c))]
            if conversion.visitor_id is not None:
                visited = store.visitor_clicks(conversion.visitor_id)
                pairs.extend((c, click) for c in visited if (click := store.get(c)))
        if found:
            pairs = [*pairs, *found] if pairs else list(found)
        if pairs and store:  # cited ones first in the order's order, whichever store held them
            rank = {c: i for i, c in enumerate(conversion.click_ids)}
            last = len(rank)
            pairs.sort(key=lambda pair: rank.get(pair[0], last))
        unique: dict[str, Click] = {}
        for click_id, click in pairs:
            unique.setdefault(click_id, click)
        out = []
        for click_id, click in unique.items():
            occurred, agent, program, link, visitor, bot, dup = click
            out.append(
                ClickCandidate(
                    click_id=click_id, agent_id=agent, program_id=program, link_code=link,
                    occurred_at=from_ms(occurred), is_bot=bot, is_duplicate=dup,
                    visitor_id=visitor,
                )
            )  # fmt: skip
        return out

    def _open(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        """Decide a new order, accrue its commission, then apply what waited for it."""
        assert isinstance(event.payload, Conversion)
        conversion, state = event.payload, self.state
        conversion = with_collections(conversion, cfg.product_collections(conversion.shop))
        policy = cfg.policy()
        customer = conversion.customer_id
        binding = state.bindings.get(customer) if customer is not None else None
        clicks = self._candidates(conversion, getattr(event, "found", None))
        agents = {c.agent_id for c in clicks if c.agent_id is not None}
        agents |= {cfg.coupons[c].agent_id for c in conversion.coupon_codes if c in cfg.coupons}
        if binding is not None:
            agents.add(binding.agent_id)
        known = KnownReferrals(
            clicks=clicks,
            coupons=cfg.coupons,
            bindings={binding.customer_id: binding} if binding is not None else {},
            identities=cfg.identities(agents),
            statuses=cfg.statuses(agents),
        )
        decision = attribute(conversion, known, policy, programs=cfg.policies)
        is_new = customer is not None and state.customers.get(customer, 1 << 62) >= (
            event.occurred_ms
        )
        if customer is not None:
            state.customers[customer] = min(
                state.customers.get(customer, event.occurred_ms), event.occurred_ms
            )
            program_policy = cfg.policy_for(decision.program_id)
            created = binding_from(conversion, decision, program_policy, binding)
            if created is not None:
                state.bindings[customer] = created
        book = OrderBook(conversion, decision, event.received_ms, is_new_customer=is_new)
        book.fx_rate = cfg.fx_rate(conversion.currency, conversion.occurred_at)
        if book.fx_rate is None:  # never booked at a guessed rate; a replay with the rate books it
            reason = (
                f"fx: no {conversion.currency} rate at {conversion.occurred_at.isoformat()}: "
                f"order {conversion.order_id} decided without conversion row or commission"
            )
            out.append(self._order_letter(conversion, reason))
        self._accrue(book, cfg, out)
        out.extend(self._conversion_row(book, event.received_ms))
        out.extend(book.entries)
        if event.kind == "cancel":
            self._apply(book, event, cfg, out)
        waiting = state.followups.pop(conversion.order_id, [])
        for followup in sorted(waiting, key=lambda e: (e.occurred_ms, e.event_id)):
            self._apply(book, followup, cfg, out)
        self._index_name(book)
        self._approve(conversion.order_id, book, cfg, out, self.wall_ms())
        self._keep(conversion.order_id, book, new_at_ms=event.occurred_ms)

    def _accrue(self, book: OrderBook, cfg: TenantConfig, out: list[Output]) -> None:
        decision, conversion = book.decision, book.conversion
        if not decision.attributed or decision.agent_id is None:
            return
        rules = cfg.rules_for(decision.program_id)
        if rules is None:
            return
        volume_key = (decision.agent_id, _month(int(conversion.occurred_at.timestamp() * 1000)))
        book.chain = cfg.agent_chain(decision.agent_id, at=conversion.occurred_at)
        book.period_volume = self.state.volumes.get(volume_key, Decimal(0))
        if book.fx_rate is None:  # no commission (see `_open`), but the sale counts for tiers
            self.state.volumes[volume_key] = book.period_volume + conversion.net_revenue
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
            out.append(self._order_letter(conversion, reason))
            return
        self.state.volumes[volume_key] = book.period_volume + conversion.net_revenue

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
                out.append(self._dead_letter(event, reason))
                return
            out.extend(self._conversion_row(book, event.received_ms))
        out.extend(new)

    # --- holds ---------------------------------------------------------------------------

    def _index_name(self, book: OrderBook) -> None:
        """Make a decided order findable by its name, and apply an invoice that waited for it."""
        name = book.conversion.order_name
        if not self.tuning.holds or not name or not order_ref(name):
            return
        ref, refs = order_ref(name), self.state.order_refs
        order_id = book.conversion.order_id
        # Two orders of one tenant with one name (two shops): an invoice cannot say which.
        refs[ref] = order_id if refs.get(ref, order_id) == order_id else ""
        waiting = self.state.paid_waiting.pop(ref, None)
        if waiting is not None and refs[ref]:
            mark_paid(book, *waiting)

    def _on_paid(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        assert isinstance(event.payload, InvoicePaid)
        if not self.tuning.holds:
            return
        sale_orders = self.state.sale_orders
        for ref in event.payload.refs:
            name = sale_orders[ref][0] if ref in sale_orders else ref
            self._paid(name, event.occurred_ms, event.payload.invoice, cfg, out)

    def _paid(
        self, name: str, paid_ms: int, invoice: str, cfg: TenantConfig, out: list[Output]
    ) -> None:
        """The order named `name` had `invoice` paid at `paid_ms`: approve what that makes due,
        or keep the payment until the order is decided."""
        state = self.state
        order_id = state.order_refs.get(name)
        if order_id is None:
            state.paid_waiting[name] = min(
                state.paid_waiting.get(name, (paid_ms, invoice)), (paid_ms, invoice)
            )
        elif order_id:
            book = _unpack(state.orders[order_id])
            mark_paid(book, paid_ms, invoice)
            self._approve(order_id, book, cfg, out, self.wall_ms())
            self._keep(order_id, book)
        else:  # two orders bear the name: the payment cannot say which, so it approves neither
            out.append(self._invoice_letter(name, paid_ms, invoice, ambiguous=True))

    def _on_sale_order(self, event: Event, cfg: TenantConfig, out: list[Output]) -> None:
        assert isinstance(event.payload, SaleOrderRef)
        link, state = event.payload, self.state
        if not self.tuning.holds:
            return
        state.sale_orders[link.sale_order] = (link.order_ref, event.occurred_ms)
        waiting = state.paid_waiting.pop(link.sale_order, None)
        if waiting is not None:  # the invoice came first: it now names a shop order
            self._paid(link.order_ref, *waiting, cfg, out)

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
            book = _unpack(state.orders[order_id])
            self._approve(order_id, book, cfg, out, now_ms)
            self._keep(order_id, book)

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

    def _dead_letter(self, event: Event | None, reason: str) -> DeadLetter:
        return dead_letter(reason, event.raw if event is not None else b"", from_ms(self.wall_ms()))

    def _order_letter(self, conversion: Conversion, reason: str) -> DeadLetter:
        """A letter about a decided order whose event is no longer at hand: its facts name the
        tenant, shop, order and source event, so the exceptions inbox can file it."""
        facts = {
            "tenant_id": conversion.tenant_id, "shop": conversion.shop,
            "order_id": conversion.order_id, "source_event_id": conversion.source_event_id,
        }  # fmt: skip
        return self._facts_letter(facts, reason)

    def _invoice_letter(
        self, ref: str, paid_ms: int, invoice: str, *, ambiguous: bool
    ) -> DeadLetter:
        """A letter about a paid ERP invoice that approves nothing: its order's name is borne by
        two orders of the tenant (`ambiguous`), or names a shop order (through the ERP sale
        order made from it) that never reached the flow. The entries wait for their hold
        period; the exceptions inbox shows why."""
        if ambiguous:
            reason = (
                f"invoice {invoice}: paid, but order name {ref} is borne by two orders of this "
                "company (two shops), so it approves neither; their entries wait for the hold "
                "period"
            )
        else:
            reason = (
                f"invoice {invoice}: paid for shop order {ref} (through its ERP sale order), "
                "which never reached the dataflow: nothing was approved by it; check the shop's "
                "order webhooks (refstream shopify reconcile)"
            )
        facts: dict[str, str | None] = {
            "tenant_id": self.tenant_id, "invoice": invoice, "order_ref": ref,
            "paid_at": from_ms(paid_ms).isoformat(),
        }  # fmt: skip
        return self._facts_letter(facts, reason)

    def _facts_letter(self, facts: dict[str, str | None], reason: str) -> DeadLetter:
        raw = base64.b64encode(orjson.dumps(facts)).decode("ascii")
        return DeadLetter(reason=reason, stage="dataflow", failed_at=from_ms(self.wall_ms()),
                          raw=raw)  # fmt: skip


def builder(
    config: ConfigProvider,
    tuning: Tuning | None = None,
    wall_ms: Callable[[], int] | None = None,
    clocks: TenantClocks | None = None,
) -> Callable[[bytes | None], AttributionLogic]:
    """What `op.stateful` calls for a new tenant key, with its resume snapshot (or `None`).
    With `clocks` (the dataflow's), lateness is judged upstream and a resumed tenant's marks
    are merged into them."""
    clock = wall_ms or (lambda: int(time.time() * 1000))

    def build(resume: bytes | None) -> AttributionLogic:
        if resume == _NO_SNAPSHOT:
            raise RuntimeError("resuming from a run made with Tuning(snapshots=False)")
        state = pickle.loads(resume) if resume is not None else TenantState()
        _complete(state)
        if isinstance(state.clicks, dict):  # a snapshot from before the click store
            state.clicks = ClickStore.from_legacy(state.clicks)
            state.visitors, state.click_heap = {}, []
        if isinstance(state.seen, dict):  # a snapshot from before the segmented maps
            state.seen = SegmentedMap.from_dict(state.seen, state.seen_heap, SEEN_SEGMENT)
            state.orders = SegmentedMap.from_dict(state.orders, state.order_heap, BOOK_SEGMENT)
            state.order_refs = SegmentedMap.from_dict(state.order_refs, (), REF_SEGMENT)
            state.seen_heap, state.order_heap = [], []
        if clocks is not None and state.tenant_id:
            clocks.merge(state.tenant_id, state.marks)
        return AttributionLogic(state, config, tuning or Tuning(), clock, clocks)

    return build
