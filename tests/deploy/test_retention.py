"""Retention as a setting (issue #17): ClickHouse TTLs on `raw_events` and `clicks`, set by
`0008_retention.sql` and kept equal to the settings by every `migrate`, against the chDB front."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from clickhouse_connect.driver.client import Client

from dataflows.sinks.clickhouse import COLUMNS, raw_event_row
from deploy import migrations
from schemas.events.envelope import EventEnvelope, Source
from schemas.settings import Settings
from tests.fixtures.clickhouse import ClickHouseServer

NOW = datetime.now(UTC)


@pytest.fixture
def database(clickhouse_server: ClickHouseServer) -> Iterator[tuple[str, Client]]:
    """The URL of a fresh database (created by the first migrate) and a client of it."""
    name = f"test_retention_{uuid.uuid4().hex[:12]}"
    admin = clickhouse_server.client()
    admin.command(f"CREATE DATABASE {name}")
    client = clickhouse_server.client(database=name)
    try:
        yield f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{name}", client
    finally:
        client.close()
        admin.command(f"DROP DATABASE IF EXISTS {name}")
        admin.close()


def _event(event_id: str, at: datetime) -> tuple[object, ...]:
    envelope = EventEnvelope.wrap(
        orjson.dumps({"id": 1}), event_id=event_id, source=Source.SHOPIFY,
        kind="orders/create", tenant_id="t_ret", shop="s.myshopify.com", occurred_at=at,
        received_at=at,
    )  # fmt: skip
    return raw_event_row(envelope)


def _click(click_id: str, at: datetime) -> tuple[object, ...]:
    return ("t_ret", click_id, "l", None, None, None, "v", at, None, None, "ua", "ip", False,
            False, 1)  # fmt: skip


def _kept(client: Client) -> dict[str, list[str]]:
    """What each table holds once merged (a merge drops the expired rows)."""
    for table in ("raw_events", "clicks"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")
    events = client.query("SELECT event_id FROM raw_events ORDER BY event_id")
    clicks = client.query("SELECT click_id FROM clicks ORDER BY click_id")
    return {
        "raw_events": [r[0] for r in events.result_rows],
        "clicks": [r[0] for r in clicks.result_rows],
    }


def test_retention_is_a_setting_applied_as_ttl(database: tuple[str, Client]) -> None:
    url, client = database
    settings = Settings(clickhouse_url=url)
    migrations.migrate_clickhouse(settings)
    assert migrations.current_retention(client) == {"raw_events": 730, "clicks": 400}
    assert migrations.apply_retention(client, settings) == {}  # already as set

    old_event, old_click = NOW - timedelta(days=800), NOW - timedelta(days=500)
    _insert(client, "raw_events", [_event("ev-old", old_event), _event("ev-new", NOW)])
    _insert(client, "clicks", [_click("clk-old", old_click), _click("clk-new", NOW)])
    assert _kept(client) == {"raw_events": ["ev-new"], "clicks": ["clk-new"]}

    # Changed settings: the next migrate applies no DDL file but moves the TTLs (0 = none).
    longer = Settings(clickhouse_url=url, raw_events_retention_days=1000, clicks_retention_days=0)
    assert migrations.migrate_clickhouse(longer) == 0
    assert migrations.current_retention(client) == {"raw_events": 1000, "clicks": 0}
    _insert(client, "raw_events", [_event("ev-900", NOW - timedelta(days=900))])
    _insert(client, "clicks", [_click("clk-ancient", NOW - timedelta(days=5000))])
    assert _kept(client) == {
        "raw_events": ["ev-900", "ev-new"],
        "clicks": ["clk-ancient", "clk-new"],
    }


def _insert(client: Client, table: str, rows: list[tuple[object, ...]]) -> None:
    client.insert(table, rows, column_names=list(COLUMNS[table]))
