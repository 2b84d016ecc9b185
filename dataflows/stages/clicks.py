"""The click shards: one `ClickShard` per `(tenant, shard)` key (`attribution.routing`).

Bookkeeping only, no rules: a shard files clicks (deduplicated by click id, late ones
dead-lettered), answers orders' `Lookup`s with the clicks it holds (`Found`), holds a lookup
whose cited clicks it has not seen yet, and expires clicks by event time. The rules of who wins
stay in `attribution.logic`, applied by the tenant once every shard it asked has answered.

- **Waiting for a cited click**: held until the click arrives, for `order_wait_wall` of
  processing time (`notify_at`: only shards with a held lookup have a timer), to the end of a
  bounded input, or (`order_wait_event_ms`) until the click watermark passes the order's time
  + wait, exactly as the tenant held orders before the shards (see `stages.tenant`). A
  shard that holds a lookup tells the tenant at once (`Held`): the tenant then keeps the order's
  other events as follow-ups, applied in event time once the order is decided, as it did for an
  order it held itself. A later lookup of an order already held here is answered at once (it
  will be a follow-up: its candidates do not matter).
- **Watermarks** are the tenant's as this worker reads its events (`stages.clock`): a click
  judged late there is dead-lettered here (after deduplication, as before the shards); clicks
  expire once no order that is not late could still use them (older than
  `min(click, order watermark) - allowed_lateness - max lookback`). A snapshot keeps the
  tenant's marks, so a resumed process starts from them.
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from bytewax.operators import StatefulLogic

from dataflows.attribution.clicks import ClickStore
from dataflows.attribution.events import Click, Event, dead_letter, from_ms
from dataflows.attribution.routing import Found, Held, Lookup, ShardItem, VisitorCopy
from dataflows.config import ConfigProvider
from dataflows.stages.base import Tuning, resumable, snapshot_of
from dataflows.stages.clock import TenantClocks
from schemas.events.envelope import DeadLetter

DAY_MS = 86_400_000
# Clicks per segment of a shard's store: a busy epoch touches most of a tenant's shards, and
# each re-pickles its open segment (measured by `bench.order_path`'s busy snapshot); rows below
# 257 are Python's cached small ints, so a row number costs nothing.
SHARD_SEGMENT = 256
# Expiry runs when the click watermark moved this far (event time) since it last ran: a click
# then stays findable at most this long past its horizon, where no order that is not late can
# use it anyway (it is outside every such order's lookback; it can only be listed among an
# order's rejected candidates as outside the lookback). An hour, not a second (until
# 2026-12-08): a shard of a tenant with clicks sparser than one a second per shard ran its expiry
# at every click (3.7 % of a click's instructions in `bench.order_instructions`, whose clicks are
# 52 s apart), and an hour's clicks beyond a lookback of days is little memory.
EXPIRE_EVERY_MS = 3_600_000
ShardOutput = Found | Held | DeadLetter


@dataclass(slots=True)
class HeldLookup:
    lookup: Lookup
    missing: set[str]
    since_wall_ms: int


@dataclass(slots=True)
class ShardState:
    tenant_id: str = ""
    clicks: ClickStore = field(default_factory=lambda: ClickStore(SHARD_SEGMENT))
    held: dict[str, HeldLookup] = field(default_factory=dict)  # order event id → lookup
    awaiting: dict[str, list[str]] = field(default_factory=dict)  # click id → event ids
    marks: dict[str, int] = field(default_factory=dict)  # the tenant's, when snapshotted
    expired_at_ms: int = 0  # the click watermark of the last expiry
    late_events: int = 0

    def is_empty(self) -> bool:
        return not (self.clicks or self.held)


class ClickShard(StatefulLogic[ShardItem, ShardOutput, bytes]):
    """One `(tenant, shard)` key's clicks and held lookups (see the module docstring)."""

    def __init__(
        self,
        state: ShardState,
        config: ConfigProvider,
        tuning: Tuning,
        wall_ms: Callable[[], int],
        clocks: TenantClocks,
    ) -> None:
        self.state = state
        self.config = config
        self.tuning = tuning
        self.wall_ms = wall_ms
        self.clocks = clocks
        self._cfg: object = None  # the configuration `_lookback_ms` was read from
        self._lookback_ms = 0

    # --- bytewax hooks -------------------------------------------------------------------

    def on_item(self, value: ShardItem) -> tuple[Iterable[ShardOutput], bool]:
        """As the tenant's `on_item`: an item this fails on becomes a dead letter naming it,
        and the flow goes on."""
        event = value.event if isinstance(value, Lookup | VisitorCopy) else value
        self.state.tenant_id = event.tenant_id  # bytewax's builder is not told the key
        out: list[ShardOutput] = []
        try:
            if isinstance(value, Lookup):
                self._lookup(value, out)
            else:
                self._file(event, out, copy=isinstance(value, VisitorCopy))
        except Exception as exc:
            reason = f"state: {event.kind} {event.event_id}: {type(exc).__name__}: {exc}"[:500]
            return [self._dead_letter(event, reason)], False
        return out, self.state.is_empty()

    def on_notify(self) -> tuple[Iterable[ShardOutput], bool]:
        out: list[ShardOutput] = []
        now, wait = self.wall_ms(), self.tuning.order_wait_wall_ms
        self._release_due(out, lambda held: held.since_wall_ms + wait <= now)
        return out, self.state.is_empty()

    def on_eof(self) -> tuple[Iterable[ShardOutput], bool]:
        out: list[ShardOutput] = []
        if self.tuning.release_on_eof:
            self._release_due(out, lambda _: True)
        return out, self.state.is_empty()

    def notify_at(self) -> datetime | None:
        held = self.state.held
        if not held:
            return None
        first = min(h.since_wall_ms for h in held.values())
        return from_ms(first + self.tuning.order_wait_wall_ms)

    def snapshot(self) -> bytes:
        if self.tuning.snapshots:
            self.state.marks = dict(self.clocks.marks(self.state.tenant_id))
        return snapshot_of(self.state, self.tuning)

    # --- clicks --------------------------------------------------------------------------

    def _file(self, event: Event, out: list[ShardOutput], *, copy: bool) -> None:
        """File a click (or its copy under its visitor); release lookups that waited for it."""
        assert isinstance(event.payload, tuple)
        click_id, click = event.payload
        state, tenant = self.state, event.tenant_id
        key = state.clicks.key(click_id)
        if state.clicks.has_key(key):  # a duplicate: clicks are deduplicated by their id
            return
        if event.late:  # judged in input order (`stages.clock`)
            if not copy:  # the click's own shard reports it; its copy goes quietly
                state.late_events += 1
                out.append(self._dead_letter(event, "late: older than the allowed lateness"))
            return
        state.clicks.add_key(key, click)
        if not copy:
            for event_id in state.awaiting.pop(click_id, []):
                held = state.held.get(event_id)
                if held is None:
                    continue
                held.missing.discard(click_id)
                if not held.missing:
                    self._release(event_id, out, at_seq=event.seq)
        mark = self.clocks.marks(tenant).get("click", 0)
        if mark >= state.expired_at_ms + EXPIRE_EVERY_MS:
            state.expired_at_ms = mark
            self._expire()
        if state.held and self.tuning.order_wait_event_ms is not None:
            self._release_due(out, self._event_time_due)

    def _expire(self) -> None:
        tuning, tenant = self.tuning, self.state.tenant_id
        marks = self.clocks.marks(tenant)
        seen = [marks[s] for s in ("click", "order") if s in marks]
        if not seen:
            return
        fastest = max(marks.values())
        slowest = max(min(seen), fastest - tuning.max_stream_skew_ms)
        cfg = self.config.tenant(tenant)
        if cfg is not self._cfg:  # the configuration changes every 30 s at most
            self._cfg, self._lookback_ms = cfg, cfg.max_lookback_days() * DAY_MS
        self.state.clicks.expire(slowest - tuning.allowed_lateness_ms - self._lookback_ms)

    # --- lookups -------------------------------------------------------------------------

    def _lookup(self, lookup: Lookup, out: list[ShardOutput]) -> None:
        state, event = self.state, lookup.event
        if event.event_id in state.held:  # a duplicate of a held lookup
            return
        missing = {c for c in lookup.click_ids if c not in state.clicks}
        order_id = event.order_id
        if missing and any(h.lookup.event.order_id == order_id for h in state.held.values()):
            missing = set()  # the order waits already: this event will be one of its follow-ups
        if missing and not self._event_time_due(HeldLookup(lookup, missing, 0)):
            state.held[event.event_id] = HeldLookup(lookup, missing, self.wall_ms())
            for click_id in missing:
                state.awaiting.setdefault(click_id, []).append(event.event_id)
            out.append(Held(event))
            return
        out.append(self._found(lookup))

    def _found(self, lookup: Lookup, at_seq: int = 0) -> Found:
        clicks = self.state.clicks
        cited = tuple((c, click) for c in lookup.click_ids if (click := clicks.get(c)) is not None)
        visited: tuple[tuple[str, Click], ...] = ()
        if lookup.visitor is not None:
            visited = tuple(
                (c, click) for c in clicks.visitor_clicks(lookup.visitor)
                if (click := clicks.get(c)) is not None
            )  # fmt: skip
        return Found(lookup.event, lookup.shard, lookup.shards, cited, visited, at_seq)

    def _event_time_due(self, held: HeldLookup) -> bool:
        wait = self.tuning.order_wait_event_ms
        if wait is None:
            return False
        clicks = self.clocks.marks(held.lookup.event.tenant_id).get("click", 0)
        return held.lookup.event.occurred_ms + wait <= clicks

    def _release_due(self, out: list[ShardOutput], due: Callable[[HeldLookup], bool]) -> None:
        """Release what is due, in arrival order."""
        for event_id in [e for e, held in self.state.held.items() if due(held)]:
            self._release(event_id, out)

    def _release(self, event_id: str, out: list[ShardOutput], at_seq: int = 0) -> None:
        state = self.state
        held = state.held.pop(event_id)
        for click_id in held.missing:
            waiting = [e for e in state.awaiting.get(click_id, []) if e != event_id]
            if waiting:
                state.awaiting[click_id] = waiting
            else:
                state.awaiting.pop(click_id, None)
        out.append(self._found(held.lookup, at_seq))

    def _dead_letter(self, event: Event, reason: str) -> DeadLetter:
        return dead_letter(reason, event.raw, from_ms(self.wall_ms()))


def shard_builder(
    config: ConfigProvider,
    tuning: Tuning,
    clocks: TenantClocks,
    wall_ms: Callable[[], int] | None = None,
) -> Callable[[bytes | None], ClickShard]:
    """What `op.stateful` calls for a new shard key, with its resume snapshot (or `None`)."""
    clock = wall_ms or (lambda: int(time.time() * 1000))

    def build(resume: bytes | None) -> ClickShard:
        resume = resumable(resume)
        state: ShardState = pickle.loads(resume) if resume is not None else ShardState()
        if state.tenant_id:
            clocks.merge(state.tenant_id, state.marks)
        return ClickShard(state, config, tuning, clock, clocks)

    return build
