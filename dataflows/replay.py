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
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

import bytewax.operators as op
import orjson
import psycopg
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import run_main
from clickhouse_connect.driver.client import Client
from psycopg.types.json import Jsonb
from typing_extensions import override

from dataflows.attribution.flow import (
    INPUT_TOPICS,
    Batching,
    LedgerItem,
    attribution_steps,
    kafka_error_dead_letter,
)
from dataflows.attribution.state import Tuning
from dataflows.config import (
    ConfigProvider,
    ConfigSnapshot,
    StaticConfig,
    TenantConfig,
    load_snapshot,
)
from dataflows.sinks.clickhouse import COLUMNS, Row, client_for
from dataflows.sinks.postgres import ledger_row
from schemas.commission_rules import CommissionRuleSet
from schemas.events.envelope import DeadLetter
from schemas.ids import random_id
from schemas.ledger import CommissionAccrual
from schemas.settings import Settings

DAY = timedelta(days=1)
# Orders wait for a cited click until it arrives or the input ends, never for wall-clock time
# (the live flow's 15-minute processing-time wait would make a slow replay decide differently).
REPLAY_TUNING = Tuning(order_wait_wall_ms=10 * 365 * 86_400_000, holds=False, snapshots=False)
PAGE_ROWS = 20_000

ReplaySource = Literal["archive", "kafka"]
Cursor = tuple[int, str, str]  # (received_at µs, source, event_id) of the last row read


@dataclass(frozen=True)
class ReplayScope:
    """Which part of a tenant's history a replay covers (see the module docstring)."""

    tenant_id: str
    since: datetime | None = None  # event time, inclusive
    until: datetime | None = None  # event time, exclusive
    shops: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError("replay time bounds must be timezone-aware")

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.astimezone(UTC).isoformat() if self.since else None,
            "until": self.until.astimezone(UTC).isoformat() if self.until else None,
            "shops": sorted(self.shops),
            "programs": sorted(self.programs),
        }


@dataclass
class ReplayCounters:
    """Filled while the replay runs (same process): events read, entries and orders written,
    dead letters by reason prefix."""

    events: int = 0
    entries: int = 0
    orders: int = 0
    dead: dict[str, int] = field(default_factory=dict)

    @property
    def dead_letters(self) -> int:
        return sum(self.dead.values())


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    events: int
    entries: int
    orders: int
    dead: dict[str, int]
    ledger_digest: str
    config_version: str


# --- configuration ------------------------------------------------------------------------


class WhatIfConfig:
    """`base`'s configuration with `rules` as the newest rule set of its program for `tenant_id`
    (what a proposed rule set would have produced)."""

    def __init__(self, base: ConfigProvider, tenant_id: str, rules: CommissionRuleSet) -> None:
        self._base = base
        self._tenant_id = tenant_id
        self._rules = rules
        self._cache: tuple[TenantConfig, TenantConfig] | None = None

    def tenant(self, tenant_id: str) -> TenantConfig:
        cfg = self._base.tenant(tenant_id)
        if tenant_id != self._tenant_id:
            return cfg
        if self._cache is not None and self._cache[0] is cfg:
            return self._cache[1]
        rules = self._rules
        changed = replace(
            cfg,
            rules={**cfg.rules, rules.program_id: rules},
            rule_versions={**cfg.rule_versions, (rules.rule_id, rules.version): rules},
        )
        self._cache = (cfg, changed)
        return changed


def replay_config(
    snapshot: ConfigSnapshot, tenant_id: str, what_if: CommissionRuleSet | None
) -> ConfigProvider:
    static = StaticConfig(snapshot)
    return static if what_if is None else WhatIfConfig(static, tenant_id, what_if)


# --- the archive ---------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ZONES: dict[int, timezone] = {}

# What `envelope_bytes` reads, in its order (computed columns as SQL).
ARCHIVE_SELECT = (
    "event_id, source, kind, tenant_id, shop, entity_id, "
    "toUnixTimestamp64Micro(occurred_at_us), occurred_offset_s, "
    "toUnixTimestamp64Micro(received_at_us), received_offset_s, schema_version, "
    "CAST(body_sha256 AS String), "
    "if(body_encoding = 'base64', length(tryBase64Decode(body)), length(body)), "
    "content_type, headers, body, body_encoding"
)


def _at(micros: int, offset_s: int) -> datetime:
    zone = _ZONES.get(offset_s)
    if zone is None:
        zone = _ZONES[offset_s] = timezone(timedelta(seconds=offset_s))
    return (_EPOCH + timedelta(microseconds=micros)).astimezone(zone)


def envelope_bytes(row: Sequence[Any]) -> bytes:
    """The Kafka value of an archived event, byte for byte as `EventEnvelope.to_bytes()` made it
    (field order, times with microseconds and their UTC offset, `Z` for UTC), from a row of
    `ARCHIVE_SELECT`."""
    (event_id, source, kind, tenant_id, shop, entity_id, occurred, occurred_offset, received,
     received_offset, schema_version, sha256, size, content_type, headers, body,
     encoding) = row  # fmt: skip
    document = {
        "event_id": event_id,
        "source": source,
        "kind": kind,
        "tenant_id": tenant_id,
        "shop": shop,
        "entity_id": entity_id,
        "occurred_at": _at(occurred, occurred_offset),
        "received_at": _at(received, received_offset),
        "schema_version": schema_version,
        "payload_ref": {"sha256": sha256, "size": size, "content_type": content_type},
        "headers": headers,
        "body": body,
        "body_encoding": encoding,
    }
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)


def _micros(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def archive_filter(scope: ReplayScope, click_lookback: timedelta) -> tuple[str, dict[str, Any]]:
    """The WHERE clause (and its parameters) selecting `scope` from `raw_events`."""
    where = ["tenant_id = {tenant:String}"]
    params: dict[str, Any] = {"tenant": scope.tenant_id}
    occurred = "toUnixTimestamp64Micro(occurred_at_us)"
    if scope.since is not None:
        where.append(
            f"({occurred} >= {{since:Int64}}"
            f" OR (kind = 'click' AND {occurred} >= {{click_since:Int64}}))"
        )
        params["since"] = _micros(scope.since)
        params["click_since"] = _micros(scope.since - click_lookback)
    if scope.until is not None:
        where.append(f"{occurred} < {{until:Int64}}")
        params["until"] = _micros(scope.until)
    if scope.shops:
        where.append("(shop IS NULL OR shop IN {shops:Array(String)})")
        params["shops"] = list(scope.shops)
    return " AND ".join(where), params


class ArchiveSnapshot:
    """The scope's archived events copied into a private ClickHouse table sorted by arrival
    (`received_at, source, event_id`), read back in pages; `drop()` removes it."""

    def __init__(
        self, settings: Settings, scope: ReplayScope, click_lookback: timedelta, name: str
    ) -> None:
        self.settings = settings
        self.table = f"replay_input_{name}"
        where, params = archive_filter(scope, click_lookback)
        client = client_for(settings)
        try:
            client.command(
                f"CREATE TABLE {self.table} ENGINE = MergeTree"
                " ORDER BY (received_at_us, source, event_id)"
                f" AS SELECT * FROM raw_events WHERE {where}",
                parameters=params,
            )
            self.rows = int(client.command(f"SELECT count() FROM {self.table}"))  # type: ignore[arg-type]
        finally:
            client.close()

    def page(self, client: Client, after: Cursor | None, limit: int) -> list[Sequence[Any]]:
        query = f"SELECT {ARCHIVE_SELECT} FROM {self.table}"
        params: dict[str, Any] = {"n": limit}
        if after is not None:
            query += (
                " WHERE received_at_us >= fromUnixTimestamp64Micro({r:Int64}, 'UTC')"
                " AND (toUnixTimestamp64Micro(received_at_us), source, event_id)"
                " > ({r:Int64}, {s:String}, {e:String})"
            )
            params.update(r=after[0], s=after[1], e=after[2])
        query += " ORDER BY received_at_us, source, event_id LIMIT {n:UInt32}"
        return list(client.query(query, parameters=params).result_rows)

    def drop(self) -> None:
        client = client_for(self.settings)
        try:
            client.command(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            client.close()


class _ArchivePartition(StatefulSourcePartition[bytes | None, Cursor | None]):
    def __init__(
        self,
        archive: ArchiveSnapshot,
        cursor: Cursor | None,
        page_rows: int,
        on_events: Callable[[int], None],
    ) -> None:
        self._archive = archive
        self._client = client_for(archive.settings)
        self._cursor = cursor
        self._page_rows = page_rows
        self._on_events = on_events
        # The next page is fetched while the dataflow works on the current one.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-archive")
        self._next: Future[list[Sequence[Any]]] | None = self._fetch(cursor)

    def _fetch(self, after: Cursor | None) -> Future[list[Sequence[Any]]]:
        return self._pool.submit(self._archive.page, self._client, after, self._page_rows)

    @override
    def next_batch(self) -> list[bytes | None]:
        if self._next is None:
            raise StopIteration
        rows = self._next.result()
        if not rows:
            self._next = None
            raise StopIteration
        last = rows[-1]
        self._next = self._fetch((last[8], last[1], last[0]))
        out: list[bytes | None] = []
        previous = self._cursor
        for row in rows:
            key = (row[8], row[1], row[0])
            if key == previous:  # the same event archived twice (before the merge)
                continue
            previous = key
            out.append(envelope_bytes(row))
        self._cursor = previous
        self._on_events(len(out))
        return out

    @override
    def snapshot(self) -> Cursor | None:
        return self._cursor

    @override
    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()


class ArchiveSource(FixedPartitionedSource[bytes | None, Cursor | None]):
    """One partition reading an `ArchiveSnapshot` in arrival order."""

    def __init__(
        self,
        archive: ArchiveSnapshot,
        *,
        page_rows: int = PAGE_ROWS,
        on_events: Callable[[int], None] = lambda _: None,
    ) -> None:
        self._archive = archive
        self._page_rows = page_rows
        self._on_events = on_events

    @override
    def list_parts(self) -> list[str]:
        return ["archive"]

    @override
    def build_part(
        self, step_id: str, for_part: str, resume_state: Cursor | None
    ) -> _ArchivePartition:
        return _ArchivePartition(self._archive, resume_state, self._page_rows, self._on_events)


# --- Kafka ---------------------------------------------------------------------------------


def kafka_filter(
    scope: ReplayScope, click_lookback: timedelta
) -> Callable[[KafkaSourceMessage[bytes | None, bytes | None]], bytes | None]:
    """Keeps the values of `scope`'s messages (by key prefix, then the envelope's fields)."""
    prefix = f"{scope.tenant_id}:".encode()
    since = scope.since
    click_since = since - click_lookback if since is not None else None
    shops = frozenset(scope.shops)

    def keep(message: KafkaSourceMessage[bytes | None, bytes | None]) -> bytes | None:
        key, value = message.key, message.value
        if not key or not key.startswith(prefix) or not value:
            return None
        if since is None and scope.until is None and not shops:
            return value
        try:
            fields = orjson.loads(value)
            occurred = datetime.fromisoformat(fields["occurred_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return value  # let the flow dead-letter it, as the live flow did
        lower = click_since if fields.get("kind") == "click" else since
        if lower is not None and occurred < lower:
            return None
        if scope.until is not None and occurred >= scope.until:
            return None
        if shops and fields.get("shop") is not None and fields["shop"] not in shops:
            return None
        return value

    return keep


# --- the shadow ledger -----------------------------------------------------------------------

_SHADOW_COLUMNS = (
    "entry_id, tenant_id, agent_id, program_id, conversion_id, order_id, line_item_id, kind, "
    "status, level, amount, currency, fx_rate, rule_id, rule_version, occurred_at, reason, "
    "source_event_id"
)


def _copy_insert(
    conn: psycopg.Connection[Any], table: str, columns: str, rows: Iterable[Sequence[Any]]
) -> None:
    """COPY rows into a temporary table, then INSERT … ON CONFLICT DO NOTHING: idempotent like
    the live ledger sink, at COPY speed. One transaction."""
    temp = f"{table}_in"
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {table}) ON COMMIT DELETE ROWS")
        with cur.copy(f"COPY {temp} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cur.execute(
            f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {temp} ON CONFLICT DO NOTHING"
        )


def write_shadow_entries(
    conn: psycopg.Connection[Any], replay_id: str, entries: Sequence[CommissionAccrual]
) -> None:
    """Append `entries` to replay `replay_id`'s shadow ledger (entries already there stay)."""
    if entries:
        rows = ((replay_id, *ledger_row(e)) for e in entries)
        _copy_insert(conn, "ledger_shadow_entries", f"replay_id, {_SHADOW_COLUMNS}", rows)


def write_replay_orders(
    conn: psycopg.Connection[Any], replay_id: str, order_ids: Iterable[str]
) -> None:
    rows = [(replay_id, order_id) for order_id in sorted(set(order_ids))]
    if rows:
        _copy_insert(conn, "ledger_replay_orders", "replay_id, order_id", rows)


class _ShadowPartition(StatelessSinkPartition[Any]):
    def __init__(self, postgres_url: str, replay_id: str, write: Callable[..., None]) -> None:
        self._conn = psycopg.connect(postgres_url, autocommit=True)
        self._replay_id = replay_id
        self._write = write

    def write_batch(self, items: list[Any]) -> None:
        self._write(self._conn, self._replay_id, items)

    def close(self) -> None:
        self._conn.close()


class _ShadowSink(DynamicSink[Any]):
    def __init__(self, postgres_url: str, replay_id: str, write: Callable[..., None]) -> None:
        self._args = (postgres_url, replay_id, write)

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ShadowPartition:
        return _ShadowPartition(*self._args)


class _CountingPartition(StatelessSinkPartition[DeadLetter]):
    def __init__(self, counters: ReplayCounters) -> None:
        self._counters = counters

    def write_batch(self, items: list[DeadLetter]) -> None:
        for dead in items:
            reason = dead.reason.split(":", 1)[0]
            self._counters.dead[reason] = self._counters.dead.get(reason, 0) + 1

    def close(self) -> None:
        pass


class _CountingSink(DynamicSink[DeadLetter]):
    def __init__(self, counters: ReplayCounters) -> None:
        self._counters = counters

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self._counters)


_CONVERSION_ORDER = COLUMNS["conversions"].index("order_id")


def _order_ids(batch: tuple[str, list[Row]]) -> list[str]:
    table, rows = batch
    return [row[_CONVERSION_ORDER] for row in rows] if table == "conversions" else []


def replay_flow(
    values: Stream[bytes | None],
    config: ConfigProvider,
    *,
    postgres_url: str,
    replay_id: str,
    programs: Sequence[str],
    counters: ReplayCounters,
    batching: Batching,
) -> None:
    """Wires `values` through `attribution_steps` into the shadow ledger of `replay_id`; the
    analytics rows are not written (the live ClickHouse tables are not the replay's)."""
    outputs = attribution_steps(
        values, config, tuning=REPLAY_TUNING, batching=batching, analytics=False
    )
    wanted = frozenset(programs)

    def entries(batch: tuple[str, list[LedgerItem]]) -> list[CommissionAccrual]:
        # REPLAY_TUNING decides no approvals: a shadow ledger has entries, not statuses.
        kept = [
            e for e in batch[1]
            if isinstance(e, CommissionAccrual) and (not wanted or e.program_id in wanted)
        ]  # fmt: skip
        counters.entries += len(kept)
        return kept

    def orders(batch: tuple[str, list[Row]]) -> list[str]:
        found = _order_ids(batch)
        counters.orders += len(found)
        return found

    op.output(
        "shadow_out",
        op.map("shadow_entries", outputs.ledger, entries),
        _ShadowSink(postgres_url, replay_id, _write_entry_batches),
    )
    op.output(
        "orders_out",
        op.map("scope_orders", outputs.rows, orders),
        _ShadowSink(postgres_url, replay_id, _write_order_batches),
    )
    op.output("dead_out", outputs.dead, _CountingSink(counters))


def _write_entry_batches(
    conn: psycopg.Connection[Any], replay_id: str, batches: list[list[CommissionAccrual]]
) -> None:
    write_shadow_entries(conn, replay_id, [e for batch in batches for e in batch])


def _write_order_batches(
    conn: psycopg.Connection[Any], replay_id: str, batches: list[list[str]]
) -> None:
    write_replay_orders(conn, replay_id, [o for batch in batches for o in batch])


# --- running a replay ----------------------------------------------------------------------


def shadow_dump(conn: psycopg.Connection[Any], replay_id: str) -> bytes:
    """The canonical text of a shadow ledger version (every column, in UTC, ordered by entry
    id): two replays of the same input give the same bytes."""
    out = bytearray()
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
        query = (
            f"COPY (SELECT {_SHADOW_COLUMNS} FROM ledger_shadow_entries"
            f" WHERE replay_id = {_literal(conn, replay_id)} ORDER BY entry_id) TO STDOUT"
        )
        with cur.copy(query) as copy:
            for chunk in copy:
                out += chunk
    return bytes(out)


def _literal(conn: psycopg.Connection[Any], value: str) -> str:
    return psycopg.sql.Literal(value).as_string(conn)


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
                add_config={"log_level": "0"},
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
