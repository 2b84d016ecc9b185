"""Live updates: what the dataflow's ClickHouse sink publishes on Redis pub/sub after a write,
and what the API's `/v1/live` relays to browsers.

One channel per tenant (`live_channel`). A message is a `LiveBatch`: the conversions and
commission entries of one sink write for one tenant. Delivery is best-effort and at-least-once
(a replayed batch is published again; ids are the ClickHouse row ids, so readers deduplicate):
ClickHouse and the ledger stay the truth, the live feed only says "look again, now".
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict

LIVE_CHANNEL_PREFIX = "refstream:live:"
LIVE_BATCH_VERSION = 1


def live_channel(tenant_id: str) -> str:
    """The Redis pub/sub channel of one tenant's live updates."""
    return f"{LIVE_CHANNEL_PREFIX}{tenant_id}"


def tenant_of_channel(channel: str) -> str | None:
    """The tenant a live channel belongs to, or None for any other channel."""
    if not channel.startswith(LIVE_CHANNEL_PREFIX):
        return None
    return channel[len(LIVE_CHANNEL_PREFIX) :] or None


class LiveConversion(BaseModel):
    """A conversion row as written to ClickHouse (`conversions`), in a few fields."""

    model_config = ConfigDict(frozen=True)

    id: str
    order: str
    agent_id: str | None
    program_id: str | None
    revenue: Decimal
    currency: str
    occurred_at: AwareDatetime
    rule: str
    # The order's id (`order` is its name when it has one): what `/v1/conversions/{order_id}`
    # explains. Defaulted: batches published before it existed still parse.
    order_id: str | None = None


class LiveEntry(BaseModel):
    """A commission entry as written to ClickHouse (`commission_events`)."""

    model_config = ConfigDict(frozen=True)

    id: str
    agent_id: str
    conversion_id: str
    order: str
    amount: Decimal
    currency: str
    kind: str


class LiveBatch(BaseModel):
    """One tenant's part of one sink write. `written_at` is when the sink's insert returned."""

    model_config = ConfigDict(frozen=True)

    v: int = LIVE_BATCH_VERSION
    tenant_id: str
    written_at: AwareDatetime
    conversions: tuple[LiveConversion, ...] = ()
    entries: tuple[LiveEntry, ...] = ()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes | str) -> LiveBatch:
        return cls.model_validate_json(raw)
