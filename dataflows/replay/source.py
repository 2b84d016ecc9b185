"""A replay's input: the tenant's archive in ClickHouse (a private sorted copy read in pages,
rebuilt into the ingress's envelope bytes) or the Kafka input topics filtered to its scope."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from clickhouse_connect.driver.client import Client
from typing_extensions import override

from dataflows.replay.scope import PAGE_ROWS, ReplayScope
from dataflows.sinks.clickhouse import client_for
from schemas.settings import Settings

Cursor = tuple[int, str, str]  # (received_at µs, source, event_id) of the last row read

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
