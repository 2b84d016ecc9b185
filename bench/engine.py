"""The attribution flow's keyed stages driven in process, without bytewax (for benches).

Does per item what the dataflow's steps do (`dataflows.attribution.flow`): the clock stamps
the event, `route` keys it, a click shard (`ClickShard`, one per shard key), the tenant's
`AttributionLogic` or a book bucket (`BookBucket`, one per book key) takes it, shards' answers
go on to the tenant and the tenant's messages to the book buckets. Bytewax's scheduling,
exchanges and I/O are left out: this is the Python work per event. It records which keys each
"epoch" touched, since bytewax snapshots only those (see `snapshot_touched`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from dataflows.attribution.events import Event
from dataflows.attribution.flow import _rows, parse_value
from dataflows.attribution.local import route_to_books
from dataflows.attribution.routing import Found, Held, is_shard_item, route
from dataflows.config import ConfigProvider
from dataflows.stages.base import Output, Tuning
from dataflows.stages.books import BookBucket, bucket_builder
from dataflows.stages.clicks import ClickShard, shard_builder
from dataflows.stages.clock import TenantClocks
from dataflows.stages.tenant import AttributionLogic
from dataflows.stages.tenant import tenant_builder as tenant_logic


class Engine:
    def __init__(self, config: ConfigProvider, tuning: Tuning | None = None) -> None:
        self.tuning = tuning or Tuning()
        self.clocks = TenantClocks(self.tuning.allowed_lateness_ms, self.tuning.future_skew_ms)
        self._shard = shard_builder(config, self.tuning, self.clocks)
        self._tenant = tenant_logic(config, self.tuning, None, self.clocks)
        self._bucket = bucket_builder(config, self.tuning)
        self.shards: dict[str, ClickShard] = {}
        self.tenants: dict[str, AttributionLogic] = {}
        self.books: dict[str, BookBucket] = {}
        self.touched: set[str] = set()

    def event(self, event: Event) -> list[Output]:
        out: list[Output] = []
        for key, item in route(self.clocks.stamp(event)):
            self.touched.add(key)
            if is_shard_item((key, item)):
                shard = self.shards.get(key)
                if shard is None:
                    shard = self.shards[key] = self._shard(None)
                for answer in shard.on_item(item)[0]:  # type: ignore[arg-type]
                    if isinstance(answer, Found | Held):
                        out.extend(self._to_tenant(answer.event.tenant_id, answer))
                    else:
                        out.append(answer)
            else:
                out.extend(self._to_tenant(key, item))  # type: ignore[arg-type]
        return out

    def _to_tenant(self, tenant_id: str, item: Event | Found | Held) -> Iterable[Output]:
        self.touched.add(tenant_id)
        logic = self.tenants.get(tenant_id)
        if logic is None:
            logic = self.tenants[tenant_id] = self._tenant(None)
        return route_to_books(logic.on_item(item)[0], self.books, self._bucket, self.touched)

    def snapshot_touched(self) -> int:
        """Snapshot every key touched since the last call, as bytewax does at an epoch's end;
        the bytes written."""
        size = 0
        for key in self.touched:
            logic = self.shards.get(key) or self.tenants.get(key) or self.books.get(key)
            if logic is not None:
                size += len(logic.snapshot())
        self.touched.clear()
        return size

    def feeder(self) -> Callable[[list[bytes]], None]:
        """Parse each Kafka value as the flow does, run its events and build its rows."""

        def feed(values: list[bytes]) -> None:
            for value in values:
                for item in parse_value(value):
                    if type(item) is Event:
                        for output in self.event(item):
                            _rows(output)

        return feed
