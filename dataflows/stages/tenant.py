"""The tenant stage of attribution: what the decision reads, and the `StatefulLogic` that
drives it.

In the dataflow, clicks live below the tenant, in click shards keyed `(tenant, shard)`
(`routing`, `stages.clicks`), and order books below it too, in book buckets keyed `(tenant,
bucket)` (`messages`, `stages.books`): an order reaches its tenant with the candidate clicks its
shards found (`Found`, gathered here), lateness judged upstream in input order (`stages.clock`),
and each batch handled in input order. The tenant decides it and sends it to its book
(`Decided`). One `AttributionLogic` per tenant keeps:

- **its own clicks** only when resumed from a snapshot of the tenant-keyed flow (they keep
  serving as candidates until they expire), in a columnar store (`clicks.ClickStore`) expired
  by **event time** once no order that is not late could still use them: older than
  `min(click, order watermark) - allowed_lateness - max lookback`;
- **seen event ids** of every event but clicks, for deduplication, expired at `slowest
  watermark - allowed_lateness` (an older event is rejected as late before it could be a
  duplicate, so the set stays bounded);
- **pending orders** that cite a click id not seen yet (only events the click shards were not
  asked about: resumed tenants' own clicks): held until the click arrives, for
  `order_wait_wall` of **processing time** (`notify_at`), or to the end of a bounded input.
  Processing time, because event time across Kafka partitions is not aligned (measured in the
  recovery test). `order_wait_event_ms` optionally also releases them once the tenant's click
  watermark passes `order time + wait`, for inputs read in event-time order;
- **decided order ids** (`decided`: order id → its customer and name, kept `order_retention` of
  event time): a refund, cancellation or edit of a decided order is forwarded to its book, in
  this stage's input order (so a book sees its order's events in the order the tenant-keyed
  flow applied them); those of an order not decided yet wait here as follow-ups and travel
  with the decision, applied in `(event time, event id)` order. Follow-ups of an order that
  never arrives are dead-lettered as orphans after the allowed lateness;
- **what the decision and commission read across orders**: customer bindings, first-order
  times per customer (the new-customer flag) and the agents' monthly volume (tier selection:
  the volume before an order travels with it to its book, which accrues the commission);
- **order names** (`order_refs`: the shop order name → order id, directly or through the ERP
  sale order created from it, `sale_orders`): a paid ERP invoice names its order, and the
  payment goes to the order's book (`Paid`), which approves what it makes due; an invoice for
  an order not decided yet waits in `paid_waiting` for the order stream's allowed lateness.

**Watermarks** are kept per stream (clicks, orders, refunds) and tenant: the largest event time
seen, each event counting at most `future_skew` past its receive time (a wrong clock cannot make
everything late). Per stream, because topics are consumed at different speeds (a backfill may
read months of orders before the clicks): an event is late only against its own stream, when
older than `its watermark - allowed_lateness`; it is then counted and emitted as a dead letter
with reason `late` (the reconciliation output). Streams that fall more than `max_stream_skew`
behind stop holding expiry back, so state stays bounded when a tenant's stream goes quiet.

Outputs are `Output`s (dead letters) and the messages to the book buckets (`messages.BookItem`),
told apart by type. Driven in one process (tests, benches), `attribution.local` wires the tenant
to its buckets as the flow does.

Snapshots from older versions resume: the state dataclasses pickle their slots by name, so a
field added later is missing from an older snapshot and `complete` gives it its default. A
snapshot of the tenant-keyed flow, which kept the order books here, hands each book to its
bucket (`Migrated`) at the first item or timer after it resumes (`migrate`).

Determinism: decisions use only event times, ids and the configuration, and follow-ups apply in
a canonical order, so any arrival order of one order's events with its clicks gives the same
ledger; refunds and the cancellation of a decided order are settled in event-time order
whatever order they arrive in (`adjustments.settle`). Known arrival-order dependences
(documented, not hidden): edits apply when they arrive at the book (later refunds settle
against the edited basis), the tier volume and the new-customer flag depend on which of an
agent's/customer's orders were decided first, so does the customer binding (found by
`tests/dataflows/test_differential.py`, kept there as a strict xfail), and clicks cited by
nobody but matching the order's visitor count only if they arrived before the order was decided.

Scale-out: a tenant's click shards and book buckets spread over workers by bytewax's key
hashing; this stage (decisions, bindings, first orders, tier volume, names) stays per tenant,
since the decision and the tier read the customer's and the agent's history (splitting it by
customer and agent is the last part of issue #19's item 1, docs/design/engine-keys.md).
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from bytewax.operators import StatefulLogic

from dataflows.attribution.clicks import ClickStore
from dataflows.attribution.events import (
    Click,
    Event,
    InvoicePaid,
    SaleOrderRef,
    from_ms,
    order_ref,
    to_ms,
)
from dataflows.attribution.logic import (
    AttributionDecision,
    ClickCandidate,
    CustomerBinding,
    KnownReferrals,
    attribute,
    binding_from,
)
from dataflows.attribution.messages import (
    BookItem,
    Decided,
    Migrated,
    Paid,
)
from dataflows.attribution.routing import Found, Held
from dataflows.attribution.segments import SegmentedMap
from dataflows.commission.book import OrderBook
from dataflows.commission.collections import with_collections
from dataflows.config import ConfigProvider, TenantConfig
from dataflows.stages.base import (
    CORE_STREAMS,
    DAY_MS,
    Output,
    Tuning,
    complete,
    facts_letter,
    letter,
    resumable,
    snapshot_of,
    unpack,
)
from dataflows.stages.clock import TenantClocks, stream_of
from schemas.conversion import Conversion, StateUnpickler
from schemas.events.envelope import DeadLetter

# Keys per segment of the segmented maps (a snapshot re-pickles the segments that changed:
# measured by `bench.order_path`'s busy epoch, 20k/5k/20k re-pickled ~10x what 2k/500/2k did;
# a lookup that misses asks every segment, so they stay in the thousands).
# BOOK_SEGMENT: the books of a snapshot of the tenant-keyed flow, until they are handed over.
# The decided ids are small (~60 bytes): 500 a segment keeps the open one small.
SEEN_SEGMENT, BOOK_SEGMENT, REF_SEGMENT, DECIDED_SEGMENT = 2_000, 500, 2_000, 500
# Customers' first orders and bindings: written when a customer is new to the tenant (or bound),
# so a snapshot re-pickles the newest segment and the few an epoch's bindings changed.
CUSTOMER_SEGMENT = 2_000
# What the tenant stage emits: dead letters, and messages to the book buckets.
TenantOutput = Output | BookItem


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
    # Where snapshots of the tenant-keyed flow kept the order books (packed, or themselves in
    # a run without snapshots); handed to their buckets after a resume (`migrate`).
    orders: SegmentedMap[str, bytes | OrderBook] = field(
        default_factory=lambda: SegmentedMap(BOOK_SEGMENT)
    )
    order_heap: list[tuple[int, str]] = field(default_factory=list)  # (before segments)
    # (plain dicts in snapshots from before 2026-12-08: made segmented maps on resume)
    bindings: SegmentedMap[str, CustomerBinding] = field(
        default_factory=lambda: SegmentedMap(CUSTOMER_SEGMENT)
    )
    customers: SegmentedMap[str, int] = field(  # customer → first order ms
        default_factory=lambda: SegmentedMap(CUSTOMER_SEGMENT)
    )
    volumes: dict[tuple[str, str], Decimal] = field(default_factory=dict)  # (agent, YYYY-MM)
    late_events: int = 0
    # Added for holds; older snapshots lack them (see the module docstring). The book buckets
    # keep the holds now: these stay empty but for a snapshot of the tenant-keyed flow.
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
    # Added for book buckets: decided order id → (its customer, its order name's ref), with the
    # order's event time for expiry.
    decided: SegmentedMap[str, tuple[str | None, str | None]] = field(
        default_factory=lambda: SegmentedMap(DECIDED_SEGMENT)
    )

    def is_empty(self) -> bool:
        return not (
            self.clicks or self.seen or self.pending or self.followups or self.orders
            or self.paid_waiting or self.sale_orders or self.gathering or self.held
            or self.decided
        )  # fmt: skip


def _month(ms: int) -> str:
    when = from_ms(ms)
    return f"{when.year:04d}-{when.month:02d}"  # cheaper than strftime on the order path


class AttributionLogic(StatefulLogic[Event | Found | Held, TenantOutput, bytes]):
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

    def on_item(self, value: Event | Found | Held) -> tuple[Iterable[TenantOutput], bool]:
        """`_on_item`, except that an event it fails on becomes a dead letter (with the tenant,
        the event and the error) instead of stopping the flow for every tenant. What the failed
        event emitted is dropped; the state keeps what it changed before the error. An order's
        answers from its click shards (`Found`) are gathered first (`_gather`)."""
        try:
            migrated = self.migrate() if self.state.orders else []
            if isinstance(value, Held):
                self._held(value.event)
                return migrated, False
            if isinstance(value, Found):
                event = self._gather(value)
                if event is None:
                    return migrated, False
                value = event
            out, discard = self._on_item(value)
            if migrated:
                return [*migrated, *out], discard
            return out, discard
        except Exception as exc:
            failed = value.event if isinstance(value, Found | Held) else value
            self.state.tenant_id = failed.tenant_id
            reason = f"state: {failed.kind} {failed.event_id}: {type(exc).__name__}: {exc}"[:500]
            return [self._dead_letter(failed, reason)], False

    def _on_item(self, value: Event) -> tuple[Iterable[TenantOutput], bool]:
        out: list[TenantOutput] = []
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
            self._on_refund(value, out)
        elif value.kind == "paid":
            self._on_paid(value, out)
        elif value.kind == "sale_order":
            self._on_sale_order(value, out)
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
        if event.event_id in state.seen or order_id in state.decided:
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

    def on_notify(self) -> tuple[Iterable[TenantOutput], bool]:
        out: list[TenantOutput] = []
        now = self.wall_ms()
        cfg = self.config.tenant(self.tenant_id)
        try:
            if self.state.orders:
                out.extend(self.migrate())
            self._release_due(
                cfg, out, lambda p: p.since_wall_ms + self.tuning.order_wait_wall_ms <= now
            )
        except Exception as exc:  # as in `on_item`: one tenant's failure stops no one
            reason = f"state: timer of tenant {self.tenant_id}: {type(exc).__name__}: {exc}"
            out.append(self._facts_letter({"tenant_id": self.tenant_id}, reason[:500]))
        return out, self.state.is_empty()

    def on_eof(self) -> tuple[Iterable[TenantOutput], bool]:
        out: list[TenantOutput] = []
        if self.state.orders:
            out.extend(self.migrate())
        if self.tuning.release_on_eof:
            self._release_due(self.config.tenant(self.tenant_id), out, lambda _: True)
        return out, self.state.is_empty()

    def notify_at(self) -> datetime | None:
        wake = [
            p.since_wall_ms + self.tuning.order_wait_wall_ms for p in self.state.pending.values()
        ]
        if self.state.orders:  # books of a resumed tenant-keyed snapshot: hand them over now
            wake.append(self.wall_ms())
        return from_ms(min(wake)) if wake else None

    def snapshot(self) -> bytes:
        return snapshot_of(self.state, self.tuning)

    def migrate(self) -> list[TenantOutput]:
        """Hand the books of a resumed tenant-keyed snapshot to their buckets (`Migrated`), and
        remember their orders as decided. Their holds are scheduled again by the buckets."""
        state, out = self.state, list[TenantOutput]()
        for order_id, stored in list(state.orders.items()):
            conversion = unpack(stored).conversion  # (older books completed by the codec)
            occurred_ms = to_ms(conversion.occurred_at)
            if order_id not in state.decided:
                facts = (conversion.customer_id, self._ref(conversion))
                state.decided.add(order_id, facts, occurred_ms)
            out.append(Migrated(state.tenant_id, order_id, stored, occurred_ms))
        state.orders = SegmentedMap(BOOK_SEGMENT)
        state.holds, state.hold_due = [], {}
        return out

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

    def _expire(self, cfg: TenantConfig, out: list[TenantOutput]) -> None:
        state, tuning = self.state, self.tuning
        settled = self._slowest() - tuning.allowed_lateness_ms
        clicks_settled = self._slowest("click", "order") - tuning.allowed_lateness_ms
        click_horizon = clicks_settled - cfg.max_lookback_days() * DAY_MS
        state.clicks.expire(click_horizon)
        state.seen.expire(settled)
        order_horizon = state.watermark_ms - tuning.order_retention_ms
        for occurred, order_id, facts in state.decided.expire(order_horizon):
            customer, ref = facts if facts is not None else (None, None)
            if customer is not None and state.customers.get(customer) == occurred:
                del state.customers[customer]
            if ref and state.order_refs.get(ref) == order_id:
                del state.order_refs[ref]
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

    def _add_click(self, event: Event, cfg: TenantConfig, out: list[TenantOutput]) -> None:
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

    def _on_order_event(self, event: Event, cfg: TenantConfig, out: list[TenantOutput]) -> None:
        assert isinstance(event.payload, Conversion)
        conversion, state = event.payload, self.state
        order_id = conversion.order_id
        if order_id in state.decided:  # an edit or cancellation: its book's
            out.append(event.forwarded())
            return
        if order_id in state.pending or order_id in state.held:
            # With its Kafka value (rare, and kept briefly): a follow-up that fails, or whose
            # order never comes, is dead-lettered with its envelope, ready to be sent again.
            state.followups.setdefault(order_id, []).append(event.forwarded())
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

    def _on_refund(self, event: Event, out: list[TenantOutput]) -> None:
        if event.order_id in self.state.decided:
            out.append(event.forwarded())
        else:
            self.state.followups.setdefault(event.order_id, []).append(event.forwarded())

    def _release_due(
        self, cfg: TenantConfig, out: list[TenantOutput], due: Callable[[Pending], bool]
    ) -> None:
        ready = [oid for oid, p in self.state.pending.items() if due(p)]
        for order_id in sorted(ready):
            self._release(order_id, cfg, out)

    def _release(self, order_id: str, cfg: TenantConfig, out: list[TenantOutput]) -> None:
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

    def _open(self, event: Event, cfg: TenantConfig, out: list[TenantOutput]) -> None:
        """Decide a new order and send it, with what waited for it here, to its book."""
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
            first = state.customers.get(customer)
            if first is None or event.occurred_ms < first:  # written only when it changes
                state.customers[customer] = event.occurred_ms
            program_policy = cfg.policy_for(decision.program_id)
            created = binding_from(conversion, decision, program_policy, binding)
            if created is not None:
                state.bindings[customer] = created
        volume = self._volume(decision, conversion, cfg)
        order_id = conversion.order_id
        waiting = state.followups.pop(order_id, None)
        followups = tuple(sorted(waiting, key=_event_order)) if waiting else ()
        ref = self._ref(conversion)
        state.decided.add(order_id, (customer, ref), event.occurred_ms)
        decided_event = Event(
            event.kind, event.event_id, event.tenant_id, event.occurred_ms, event.received_ms,
            conversion, b"", None, False, getattr(event, "seq", 0),
        )  # fmt: skip
        out.append(Decided(decided_event, decision, is_new, volume, followups))
        if ref is not None:
            self._index_name(ref, order_id, out)

    def _volume(
        self, decision: AttributionDecision, conversion: Conversion, cfg: TenantConfig
    ) -> Decimal | None:
        """The attributed agent's volume this month before the order (None when no commission
        rules apply), and the order counted in it. A sale counts for its agent's tier whether
        or not its commission can be booked (no exchange rate, rules that do not fit it): the
        tier follows what the agent sold."""
        if not decision.attributed or decision.agent_id is None:
            return None
        if cfg.rules_for(decision.program_id) is None:
            return None
        key = (decision.agent_id, _month(to_ms(conversion.occurred_at)))
        before = self.state.volumes.get(key, Decimal(0))
        self.state.volumes[key] = before + conversion.net_revenue
        return before

    # --- holds ---------------------------------------------------------------------------

    def _ref(self, conversion: Conversion) -> str | None:
        """The decided order's name as invoices name it (None: not looked up by name)."""
        name = conversion.order_name
        if not self.tuning.holds or not name:
            return None
        return order_ref(name) or None

    def _index_name(self, ref: str, order_id: str, out: list[TenantOutput]) -> None:
        """Make a decided order findable by its name, and send it an invoice that waited."""
        refs = self.state.order_refs
        # Two orders of one tenant with one name (two shops): an invoice cannot say which.
        refs[ref] = order_id if refs.get(ref, order_id) == order_id else ""
        waiting = self.state.paid_waiting.pop(ref, None)
        if waiting is not None and refs[ref]:
            out.append(Paid(self.state.tenant_id, order_id, *waiting))

    def _on_paid(self, event: Event, out: list[TenantOutput]) -> None:
        assert isinstance(event.payload, InvoicePaid)
        if not self.tuning.holds:
            return
        sale_orders = self.state.sale_orders
        for ref in event.payload.refs:
            name = sale_orders[ref][0] if ref in sale_orders else ref
            self._paid(name, event.occurred_ms, event.payload.invoice, out)

    def _paid(self, name: str, paid_ms: int, invoice: str, out: list[TenantOutput]) -> None:
        """The order named `name` had `invoice` paid at `paid_ms`: approve what that makes due,
        or keep the payment until the order is decided."""
        state = self.state
        order_id = state.order_refs.get(name)
        if order_id is None:
            state.paid_waiting[name] = min(
                state.paid_waiting.get(name, (paid_ms, invoice)), (paid_ms, invoice)
            )
        elif order_id:
            out.append(Paid(state.tenant_id, order_id, paid_ms, invoice))
        else:  # two orders bear the name: the payment cannot say which, so it approves neither
            out.append(self._invoice_letter(name, paid_ms, invoice, ambiguous=True))

    def _on_sale_order(self, event: Event, out: list[TenantOutput]) -> None:
        assert isinstance(event.payload, SaleOrderRef)
        link, state = event.payload, self.state
        if not self.tuning.holds:
            return
        state.sale_orders[link.sale_order] = (link.order_ref, event.occurred_ms)
        waiting = state.paid_waiting.pop(link.sale_order, None)
        if waiting is not None:  # the invoice came first: it now names a shop order
            self._paid(link.order_ref, *waiting, out)

    def _dead_letter(self, event: Event | None, reason: str) -> DeadLetter:
        return letter(event, reason, self.wall_ms())

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
        return facts_letter(facts, reason, self.wall_ms())


def _event_order(event: Event) -> tuple[int, str]:
    return event.occurred_ms, event.event_id


# Where this module lived until 2026-12-08: snapshots written before name its classes there.
_FORMER_MODULE = "dataflows.attribution.state"


class _StateUnpickler(StateUnpickler):
    """Reads a tenant snapshot, finding the classes of this module under the name it had when
    the snapshot was written (`_FORMER_MODULE`), and an order's facts pickled in any former
    format (`schemas.conversion.StateUnpickler`)."""

    def find_class(self, module: str, name: str) -> Any:
        if module == _FORMER_MODULE:
            module = __name__
        return super().find_class(module, name)


def load_snapshot(data: bytes) -> Any:
    """`pickle.loads` of a snapshot that may hold this module's classes under their former name."""
    return _StateUnpickler(io.BytesIO(data)).load()


def tenant_builder(
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
        resume = resumable(resume)
        state = load_snapshot(resume) if resume is not None else TenantState()
        complete(state)
        if isinstance(state.clicks, dict):  # a snapshot from before the click store
            state.clicks = ClickStore.from_legacy(state.clicks)
            state.visitors, state.click_heap = {}, []
        if isinstance(state.customers, dict):  # a snapshot from before 2026-12-08
            state.customers = SegmentedMap.from_dict(state.customers, (), CUSTOMER_SEGMENT)
            state.bindings = SegmentedMap.from_dict(state.bindings, (), CUSTOMER_SEGMENT)
        if isinstance(state.seen, dict):  # a snapshot from before the segmented maps
            state.seen = SegmentedMap.from_dict(state.seen, state.seen_heap, SEEN_SEGMENT)
            state.orders = SegmentedMap.from_dict(state.orders, state.order_heap, BOOK_SEGMENT)
            state.order_refs = SegmentedMap.from_dict(state.order_refs, (), REF_SEGMENT)
            state.seen_heap, state.order_heap = [], []
        if clocks is not None and state.tenant_id:
            clocks.merge(state.tenant_id, state.marks)
        return AttributionLogic(state, config, tuning or Tuning(), clock, clocks)

    return build
