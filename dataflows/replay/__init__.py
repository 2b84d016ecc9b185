"""Stream replay for backfills: a tenant's history → the attribution dataflow's own steps
(`attribution_steps`, the same code as the live flow) → a shadow ledger version in PostgreSQL.

The live ledger (`ledger_entries`) is never written here: entries go to
`ledger_shadow_entries(replay_id, …)`, and the orders the replay decided to
`ledger_replay_orders` (the replay's scope, for the diff). Comparing and promoting a shadow
version is the business core's job (`api.replays`); `refstream replay` orchestrates both.

Input, in a deterministic order:
- **archive** (default): the tenant's rows of ClickHouse `raw_events`, filtered (event-time range,
  shops) and copied once into a private table sorted by `(received_at, source, event_id)` (so the
  replay reads a consistent snapshot, in arrival order, with primary-key range scans), then read
  in pages and rebuilt into the exact envelope bytes the ingress produced (`envelope_bytes`);
  duplicates of one event are read once;
- **kafka**: the input topics from the beginning to their end (while retention still has them),
  keeping the tenant's messages (the key starts with `tenant:`) that match the filters.

Determinism: the configuration is one snapshot read at the start (plus the `--what-if` rule
set), pending orders wait for their clicks until the click arrives or the input ends, never for a
wall-clock time (`REPLAY_TUNING`), and shadow rows carry no wall-clock column: the same input and
configuration give a byte-identical `shadow_dump`, whose SHA-256 is stored as `ledger_digest`.

Filters: `since`/`until` bound event time (`occurred_at`); clicks are read from `since` minus
the tenant's longest lookback, so orders early in the range still find their clicks (customer
bindings older than the range are not rebuilt). `shops` keeps events of those shops and events
without a shop (clicks are tenant-wide). `programs` does not filter the input (an order's
attribution needs every candidate referral); it restricts the shadow ledger and the diff.

Modules, one job each: `scope` (what a replay covers, its counters and result, the what-if
configuration), `source` (the archive and Kafka inputs), `shadow` (the shadow ledger sinks and
dump), `run` (`run_replay`).
"""

from dataflows.replay.run import run_replay
from dataflows.replay.scope import (
    REPLAY_TUNING,
    ReplayCounters,
    ReplayResult,
    ReplayScope,
    ReplaySource,
    WhatIfConfig,
    replay_config,
)
from dataflows.replay.shadow import (
    replay_flow,
    shadow_dump,
    write_replay_orders,
    write_shadow_entries,
)
from dataflows.replay.source import (
    ArchiveSnapshot,
    ArchiveSource,
    archive_filter,
    envelope_bytes,
    kafka_filter,
)

__all__ = [
    "REPLAY_TUNING",
    "ArchiveSnapshot",
    "ArchiveSource",
    "ReplayCounters",
    "ReplayResult",
    "ReplayScope",
    "ReplaySource",
    "WhatIfConfig",
    "archive_filter",
    "envelope_bytes",
    "kafka_filter",
    "replay_config",
    "replay_flow",
    "run_replay",
    "shadow_dump",
    "write_replay_orders",
    "write_shadow_entries",
]
