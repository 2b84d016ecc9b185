"""The tenants' watermarks, kept where events are still in input order.

Below the tenant, one tenant's events are handled by many keys (its click shards, the tenant's
order books), and bytewax hands a stateful step its items grouped by key: an order that went
through a click shard reaches the tenant after orders that did not, although it came first. A
verdict "late" taken by each key against its own watermark would then depend on how items were
batched. So lateness is judged once, by `TenantClocks.stamp` in a plain map right after
parsing, in the order this worker read the events, against the tenant's watermark per stream
(clicks, orders, refunds, ERP) as this worker has seen it; the event carries the verdict
(`Event.late`) and the stages act on it after their own deduplication, as before the keys were
split. The same marks tell the click shards when clicks expire.

Input order: each event also gets its position in this worker's input (`Event.seq`), and the
tenant handles the items of one batch in that order (`InputOrder`), so an order that went
through a click shard is decided before a later order that did not, as it was read.

Watermarks: the largest event time seen per tenant and stream, each event counting at most
`future_skew` past its receive time (a wrong clock cannot make everything late). With one
worker this is exactly the tenant's watermark of a tenant-keyed flow. With several, each worker
judges by the events it reads (Kafka partitions are spread over workers; a tenant's events over
partitions), the usual per-source watermark of stream processors. The marks are kept in the
stages' snapshots and merged back when they resume (`merge`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from typing import TypeVar

import bytewax.operators as op
from bytewax.dataflow import operator
from bytewax.operators import KeyedStream, StatefulBatchLogic, StatefulLogic

from dataflows.attribution.events import Event

V = TypeVar("V")
W = TypeVar("W")
S = TypeVar("S")


def stream_of(event: Event) -> str:
    """The stream an event's watermark belongs to."""
    if event.kind in ("paid", "sale_order"):
        return "erp"
    return "order" if event.kind == "cancel" else event.kind


class TenantClocks:
    """Each tenant's stream watermarks (`stream → ms`) in this process. One per dataflow built
    (`attribution_steps`): flows run in one process (tests) never share one."""

    def __init__(self, allowed_lateness_ms: int, future_skew_ms: int) -> None:
        self.allowed_lateness_ms = allowed_lateness_ms
        self.future_skew_ms = future_skew_ms
        self._marks: dict[str, dict[str, int]] = {}
        self._seq = 0

    def marks(self, tenant_id: str) -> dict[str, int]:
        marks = self._marks.get(tenant_id)
        if marks is None:
            marks = self._marks[tenant_id] = {}
        return marks

    def merge(self, tenant_id: str, marks: dict[str, int]) -> None:
        """Take a resumed stage's marks (the largest of each stream wins)."""
        mine = self.marks(tenant_id)
        for stream, ms in marks.items():
            if ms > mine.get(stream, 0):
                mine[stream] = ms

    def stamp(self, event: Event) -> Event:
        """`event` with its input position (`seq`), marked late when older than its stream's
        watermark - allowed lateness, otherwise counted in the watermark. In input order: a
        plain map step calls it, on the event the parser just made (so setting a field of the
        event in place is safe, and saves a copy per event)."""
        self._seq += 1
        event.seq = self._seq
        marks = self.marks(event.tenant_id)
        stream = stream_of(event)
        mark = marks.get(stream, 0)
        if event.occurred_ms < mark - self.allowed_lateness_ms:
            return replace(event, late=True)
        candidate = min(event.occurred_ms, event.received_ms + self.future_skew_ms)
        if candidate > mark:
            marks[stream] = candidate
        return event


class InputOrder(StatefulBatchLogic[V, W, S]):
    """A `StatefulLogic` fed each batch in input order (`Event.seq` of the item, or of the event
    it carries), not in the order bytewax grouped the items by key upstream."""

    def __init__(
        self,
        logic: StatefulLogic[V, W, S] | None,
        builder: Callable[[S | None], StatefulLogic[V, W, S]],
    ) -> None:
        self.logic = logic
        self.builder = builder

    def on_batch(self, values: list[V]) -> tuple[Iterable[W], bool]:
        out: list[W] = []
        if len(values) > 1:
            values = sorted(values, key=_seq)
        for value in values:
            if self.logic is None:
                self.logic = self.builder(None)
            emitted, discard = self.logic.on_item(value)
            out.extend(emitted)
            if discard:
                self.logic = None
        return out, self.logic is None

    def on_notify(self) -> tuple[Iterable[W], bool]:
        assert self.logic is not None
        return self.logic.on_notify()

    def on_eof(self) -> tuple[Iterable[W], bool]:
        assert self.logic is not None
        return self.logic.on_eof()

    def notify_at(self) -> datetime | None:
        assert self.logic is not None
        return self.logic.notify_at()

    def snapshot(self) -> S:
        assert self.logic is not None
        return self.logic.snapshot()


def _seq(item: object) -> int:
    """An item's input position: a shard's answer released by a click takes the click's
    (`Found.at_seq`), anything else its event's."""
    at = getattr(item, "at_seq", 0)
    if at:
        return int(at)
    event = getattr(item, "event", item)
    return int(getattr(event, "seq", 0))


@operator
def stateful_in_input_order(
    step_id: str,  # noqa: ARG001  # names the scope (`@operator`)
    up: KeyedStream[V],
    builder: Callable[[S | None], StatefulLogic[V, W, S]],
) -> KeyedStream[W]:
    """`op.stateful`, with each batch in input order (`InputOrder`). Same inner step id as
    `op.stateful`, so a flow switching to it resumes the same recovery state."""

    def shim(resume: S | None) -> InputOrder[V, W, S]:
        return InputOrder(builder(resume), builder)

    return op.stateful_batch("stateful_batch", up, shim)
