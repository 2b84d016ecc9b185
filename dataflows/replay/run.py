"""Running a replay: the flow over the chosen source into a new shadow ledger version, with the
`ledger_replays` row that records it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import bytewax.operators as op
import psycopg
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from bytewax.testing import run_main
from psycopg.types.json import Jsonb

from dataflows.attribution.flow import (
    INPUT_TOPICS,
    Batching,
    kafka_error_dead_letter,
)
from dataflows.config import (
    load_snapshot,
)
from dataflows.kafka_input import kafka_input_config
from dataflows.replay.scope import (
    DAY,
    PAGE_ROWS,
    ReplayCounters,
    ReplayResult,
    ReplayScope,
    ReplaySource,
    replay_config,
)
from dataflows.replay.shadow import _CountingSink, replay_flow, shadow_dump
from dataflows.replay.source import ArchiveSnapshot, ArchiveSource, kafka_filter
from schemas.commission_rules import CommissionRuleSet
from schemas.ids import random_id
from schemas.settings import Settings


def _start(
    settings: Settings,
    replay_id: str,
    scope: ReplayScope,
    source: ReplaySource,
    what_if: CommissionRuleSet | None,
    config_version: str,
    started_at: datetime,
) -> None:
    with psycopg.connect(settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO ledger_replays (replay_id, tenant_id, source, filters, what_if,"
            " config_version, started_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                replay_id, scope.tenant_id, source, Jsonb(scope.to_json()),
                Jsonb(what_if.model_dump(mode="json")) if what_if is not None else None,
                config_version, started_at,
            ),
        )  # fmt: skip


def _finish(
    settings: Settings,
    replay_id: str,
    counters: ReplayCounters | None,
    finished_at: datetime,
) -> str:
    with psycopg.connect(settings.postgres_url) as conn:
        if counters is None:
            conn.execute(
                "UPDATE ledger_replays SET status = 'failed', finished_at = %s"
                " WHERE replay_id = %s",
                (finished_at, replay_id),
            )
            return ""
        digest = hashlib.sha256(shadow_dump(conn, replay_id)).hexdigest()
        entries, orders = conn.execute(
            "SELECT (SELECT count(*) FROM ledger_shadow_entries WHERE replay_id = %s),"
            " (SELECT count(*) FROM ledger_replay_orders WHERE replay_id = %s)",
            (replay_id, replay_id),
        ).fetchone() or (0, 0)
        counters.entries, counters.orders = entries, orders
        conn.execute(
            "UPDATE ledger_replays SET status = 'complete', events = %s, entries = %s,"
            " dead_letters = %s, ledger_digest = %s, finished_at = %s WHERE replay_id = %s",
            (counters.events, entries, counters.dead_letters, digest, finished_at, replay_id),
        )
        return digest


def run_replay(
    settings: Settings,
    scope: ReplayScope,
    *,
    source: ReplaySource = "archive",
    what_if: CommissionRuleSet | None = None,
    replay_id: str | None = None,
    on_total: Callable[[int | None], None] = lambda _: None,
    on_events: Callable[[int], None] = lambda _: None,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    page_rows: int = PAGE_ROWS,
    batching: Batching | None = None,
    input_topics: Sequence[str] = INPUT_TOPICS,
) -> ReplayResult:
    """Replay `scope` into a new shadow ledger version and return its summary.

    `on_total` is told the number of events to read (`None` when unknown: Kafka), `on_events`
    how many were just read (for a progress display). `clock` only stamps `started_at` /
    `finished_at` of the `ledger_replays` row. Raises if the input or a store fails (the replay
    row is then marked `failed`).
    """
    if what_if is not None and not what_if.program_id:
        raise ValueError("a what-if rule set must name its program")
    snapshot = load_snapshot(settings.postgres_url)
    config = replay_config(snapshot, scope.tenant_id, what_if)
    lookback = DAY * snapshot.tenant(scope.tenant_id).max_lookback_days()
    replay_id = replay_id or random_id("rpl")
    counters = ReplayCounters()
    batching = batching or Batching(timedelta(seconds=1), 20_000)  # a backfill: big batches
    _start(settings, replay_id, scope, source, what_if, snapshot.version, clock())

    def read(n: int) -> None:
        counters.events += n
        on_events(n)

    archive: ArchiveSnapshot | None = None
    try:
        flow = Dataflow(f"replay_{replay_id}")
        values: Stream[bytes | None]
        if source == "archive":
            name = hashlib.blake2b(replay_id.encode(), digest_size=8).hexdigest()
            archive = ArchiveSnapshot(settings, scope, lookback, name)
            on_total(archive.rows)
            values = op.input(
                "archive_in", flow, ArchiveSource(archive, page_rows=page_rows, on_events=read)
            )
        else:
            on_total(None)
            kafka = kop.input(
                "kafka_in",
                flow,
                brokers=settings.kafka_bootstrap.split(","),
                topics=list(input_topics),
                tail=False,
                add_config=kafka_input_config(settings),
            )
            errors = op.map("kafka_err", kafka.errs, kafka_error_dead_letter)
            op.output("kafka_errs_out", errors, _CountingSink(counters))
            kept = op.filter_map("scope", kafka.oks, kafka_filter(scope, lookback))
            values = op.map("count", kept, _counting(read))
        replay_flow(
            values, config, postgres_url=settings.postgres_url, replay_id=replay_id,
            programs=scope.programs, counters=counters, batching=batching,
        )  # fmt: skip
        run_main(flow)  # type: ignore[no-untyped-call]
    except BaseException:
        _finish(settings, replay_id, None, clock())
        raise
    finally:
        if archive is not None:
            archive.drop()
    digest = _finish(settings, replay_id, counters, clock())
    return ReplayResult(
        replay_id=replay_id, events=counters.events, entries=counters.entries,
        orders=counters.orders, dead=dict(sorted(counters.dead.items())), ledger_digest=digest,
        config_version=snapshot.version,
    )  # fmt: skip


def _counting(read: Callable[[int], None]) -> Callable[[bytes], bytes | None]:
    def count(value: bytes) -> bytes | None:
        read(1)
        return value

    return count
