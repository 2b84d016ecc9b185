"""Replay through the real servers: the live flow archives a scenario (Kafka → raw_events and
the ledger), then `run_replay` rebuilds it from the ClickHouse archive (or Kafka) into a shadow
ledger; diffs and promotion go through `api.replays` on the same PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import orjson
import psycopg
import pytest
from bytewax.inputs import StatefulSourcePartition
from bytewax.testing import run_main
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from api.audit.chain import verify_chain
from api.cli import load_entries
from api.context import RequestMeta
from api.db import create_engine, create_sessionmaker
from api.replays import diff_replay, promote
from dataflows.attribution.flow import INPUT_TOPICS, build, parse_value
from dataflows.replay import (
    ArchiveSnapshot,
    ArchiveSource,
    ReplayScope,
    run_replay,
    shadow_dump,
)
from dataflows.sinks.clickhouse import COLUMNS, client_for, raw_event_row
from deploy.cli import app as refstream_cli
from schemas.commission_rules import CommissionRuleSet
from schemas.events.envelope import EventEnvelope, Source
from schemas.events.shopify import SHOPIFY_TOPICS
from schemas.settings import Settings
from schemas.topics import Topic, topic_for_shopify
from tests.dataflows.builders import T0, Tenant, days, new_tenant, rules_body, seed_tenant
from tests.dataflows.conftest import Topics, ledger_totals, produce
from tests.dataflows.test_pipeline import scenario
from tests.fixtures.kafka import KafkaBroker
from tests.fixtures.postgres import drop_database, migrated_database

_T = TypeVar("_T")
ENTRY_COLUMNS = (
    "entry_id, tenant_id, agent_id, program_id, conversion_id, order_id, line_item_id, kind, "
    "status, level, amount, currency, fx_rate, rule_id, rule_version, occurred_at, reason, "
    "source_event_id"
)


def live_rows(settings: Settings, tenant_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.postgres_url) as conn:
        return conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM ledger_entries WHERE tenant_id = %s ORDER BY entry_id",
            (tenant_id,),
        ).fetchall()


def shadow_rows(settings: Settings, replay_id: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(settings.postgres_url) as conn:
        return conn.execute(
            f"SELECT {ENTRY_COLUMNS} FROM ledger_shadow_entries WHERE replay_id = %s"
            " ORDER BY entry_id",
            (replay_id,),
        ).fetchall()


def dump(settings: Settings, replay_id: str) -> bytes:
    with psycopg.connect(settings.postgres_url) as conn:
        return shadow_dump(conn, replay_id)


def with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    async def run() -> _T:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()

    return asyncio.run(run())


def live_run(settings: Settings, broker: KafkaBroker) -> Tenant:
    """A fresh tenant, its scenario produced to fresh topics and run through the live flow."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap, "log_level": 0})
    names = [f"replay-{kind}-{uuid.uuid4().hex[:10]}" for kind in ("c", "o", "r", "d")]
    futures = admin.create_topics([NewTopic(n, num_partitions=2) for n in names])
    for future in futures.values():
        future.result(timeout=15)
    topics = Topics(*names)
    tenant = new_tenant()
    seed_tenant(settings, tenant)
    produce(settings, scenario(tenant, topics))
    flow = build(
        settings, tail=False, input_topics=topics.inputs, deadletter_topic=topics.deadletter
    )
    run_main(flow)
    return tenant


@pytest.fixture(scope="module")
def promoting_settings(stack_settings: Settings, postgres_server: str) -> Iterator[Settings]:
    """The session's servers with a PostgreSQL database of their own: promotion writes audit
    entries, and other suites count every audit_log row of the shared database."""
    target = migrated_database(postgres_server)
    base = stack_settings
    yield target.settings(
        kafka_bootstrap=base.kafka_bootstrap, clickhouse_url=base.clickhouse_url,
        redis_url=base.redis_url, state_dir=base.state_dir,
    )  # fmt: skip
    drop_database(target)


@pytest.fixture(scope="module")
def archived(stack_settings: Settings, kafka_broker: KafkaBroker) -> Tenant:
    """One live run shared by the read-only replay tests of this module."""
    return live_run(stack_settings, kafka_broker)


def _next_batch(part: StatefulSourcePartition[bytes | None, Any]) -> list[bytes | None] | None:
    try:
        return list(part.next_batch())
    except StopIteration:
        return None


def test_archive_rebuilds_the_exact_envelope_bytes(stack_settings: Settings) -> None:
    tenant = f"t_{uuid.uuid4().hex[:8]}"
    eastern = timezone(timedelta(hours=-5))
    envelopes = [
        EventEnvelope.wrap(
            b'{"id": 1, "note": "caf\xc3\xa9"}', event_id="ev-1", source=Source.SHOPIFY,
            kind="orders/create", tenant_id=tenant, shop="s.myshopify.com", entity_id="1",
            occurred_at=datetime(2026, 11, 1, 7, 30, 5, 123456, tzinfo=eastern),
            received_at=datetime(2026, 11, 25, 9, 0, 0, 654321, tzinfo=UTC),
            headers={"x-shopify-topic": "orders/create", "api-version": "2025-01"},
        ),
        EventEnvelope.wrap(  # not UTF-8: kept as base64
            b"\xff\xfe not json", event_id="ev-2", source=Source.ODOO, kind="account.move",
            tenant_id=tenant, occurred_at=datetime(2026, 11, 2, tzinfo=UTC),
            received_at=datetime(2026, 11, 2, tzinfo=UTC), content_type="text/plain",
        ),
        EventEnvelope.wrap(
            orjson.dumps({"click_id": "clk_1"}), event_id="clk_1", source=Source.CLICK,
            kind="click", tenant_id=tenant, entity_id="clk_1",
            occurred_at=datetime(2026, 11, 3, 1, 2, 3, tzinfo=UTC),
            received_at=datetime(2026, 11, 3, 1, 2, 3, 1, tzinfo=UTC),
        ),
    ]  # fmt: skip
    assert envelopes[1].body_encoding.value == "base64"
    client = client_for(stack_settings)
    try:
        rows = [raw_event_row(e) for e in envelopes]
        for batch in (rows, rows[:1]):  # the first one archived twice (a re-processed batch)
            client.insert("raw_events", batch, column_names=list(COLUMNS["raw_events"]))
    finally:
        client.close()
    archive = ArchiveSnapshot(stack_settings, ReplayScope(tenant), timedelta(0), uuid.uuid4().hex)
    part = ArchiveSource(archive, page_rows=2).build_part("archive_in", "archive", None)
    read: list[bytes | None] = []
    try:
        while (page := _next_batch(part)) is not None:
            read.extend(page)
    finally:
        part.close()
        archive.drop()
    # In arrival order (received_at), each event once, the bytes the ingress produced.
    assert read == [envelopes[1].to_bytes(), envelopes[2].to_bytes(), envelopes[0].to_bytes()]


def test_replay_of_the_archive_equals_the_live_ledger_byte_for_byte(
    stack_settings: Settings, archived: Tenant
) -> None:
    live = live_rows(stack_settings, archived.tenant_id)
    assert len(live) == 5
    first = run_replay(stack_settings, ReplayScope(archived.tenant_id))
    second = run_replay(stack_settings, ReplayScope(archived.tenant_id))
    assert first.replay_id != second.replay_id
    # 2 clicks + 3 orders + 1 refund archived (the garbage message never was)
    assert (first.events, first.orders, first.entries) == (6, 3, 5)
    assert shadow_rows(stack_settings, first.replay_id) == live
    assert dump(stack_settings, first.replay_id) == dump(stack_settings, second.replay_id)
    assert first.ledger_digest == second.ledger_digest
    result = with_session(stack_settings, lambda s: diff_replay(s, first.replay_id))
    assert result.diff.is_empty
    assert [(t.agent_id, t.live, t.shadow) for t in result.diff.totals] == [
        (archived.ana, Decimal("10.00"), Decimal("10.00")),
        (archived.bob, Decimal("10.00"), Decimal("10.00")),
        (archived.boss, Decimal("0.50"), Decimal("0.50")),
    ]


def test_replay_from_kafka_equals_the_archive_replay(
    stack_settings: Settings, archived: Tenant
) -> None:
    from_archive = run_replay(stack_settings, ReplayScope(archived.tenant_id))
    # The live run's topics are gone from the default list: read the tenant's from them all.
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap, "log_level": 0})
    topics = [t for t in admin.list_topics(timeout=10).topics if t.startswith("replay-")]
    from_kafka = run_replay(
        stack_settings, ReplayScope(archived.tenant_id), source="kafka",
        input_topics=[t for t in topics if not t.startswith("replay-d-")],
    )  # fmt: skip
    assert from_kafka.events == 6
    assert from_kafka.ledger_digest == from_archive.ledger_digest


def test_time_range_and_shop_filters(stack_settings: Settings, archived: Tenant) -> None:
    t = archived
    # Orders are at T0+1d, the refund at T0+2d: until T0+1.5d sees the orders, not the refund.
    before_refund = run_replay(stack_settings, ReplayScope(t.tenant_id, until=T0 + days(1.5)))
    assert (before_refund.events, before_refund.orders) == (5, 3)
    assert {r[2]: r[10] for r in shadow_rows(stack_settings, before_refund.replay_id)
            if r[7] == "reversal"} == {}  # fmt: skip
    diff = with_session(stack_settings, lambda s: diff_replay(s, before_refund.replay_id)).diff
    assert diff.is_empty  # the live refund's reversal is outside the range on both sides
    assert [(x.agent_id, x.shadow) for x in diff.totals] == [
        (t.ana, Decimal("20.00")), (t.bob, Decimal("10.00")), (t.boss, Decimal("1.00")),
    ]  # fmt: skip
    # From T0+1.5d: the refund and the clicks within the lookback before it, no order.
    after = run_replay(stack_settings, ReplayScope(t.tenant_id, since=T0 + days(1.5)))
    assert (after.events, after.orders, after.entries) == (3, 0, 0)
    # Another shop's events only: the clicks (tenant-wide) and none of this shop's orders.
    other = run_replay(stack_settings, ReplayScope(t.tenant_id, shops=("other.myshopify.com",)))
    assert (other.events, other.orders, other.entries) == (2, 0, 0)
    own = run_replay(
        stack_settings, ReplayScope(t.tenant_id, shops=(f"{t.tenant_id}.myshopify.com",))
    )
    assert (own.events, own.entries) == (6, 5)


def test_what_if_diff_and_promotion(
    promoting_settings: Settings, kafka_broker: KafkaBroker
) -> None:
    stack_settings = promoting_settings
    t = live_run(stack_settings, kafka_broker)
    before = ledger_totals(stack_settings, t.tenant_id)
    assert before[t.ana] == Decimal("10.00")
    proposed = CommissionRuleSet.model_validate(
        rules_body(t.program, percent="20", version=2, overrides=["5"])
    )
    replay = run_replay(stack_settings, ReplayScope(t.tenant_id), what_if=proposed)
    result = with_session(stack_settings, lambda s: diff_replay(s, replay.replay_id))
    # By hand: 1001 is 2 x 100.00 to ana, half refunded; 1002 is 100.00 to bob (coupon).
    # 10%: ana 20.00 - 10.00, boss 5% of it 1.00 - 0.50, bob 10.00.
    # 20%: ana 40.00 - 20.00, boss 2.00 - 1.00, bob 20.00.
    assert [(x.agent_id, x.live, x.shadow, x.delta) for x in result.diff.totals] == [
        (t.ana, Decimal("10.00"), Decimal("20.00"), Decimal("10.00")),
        (t.bob, Decimal("10.00"), Decimal("20.00"), Decimal("10.00")),
        (t.boss, Decimal("0.50"), Decimal("1.00"), Decimal("0.50")),
    ]
    assert [c.kind.value for c in result.diff.changes] == ["changed"] * 5

    meta = RequestMeta(request_id="test-promote", source_ip=None, now=datetime.now(UTC))
    promotion = with_session(
        stack_settings, lambda s: promote(s, replay.replay_id, actor="cli:test", meta=meta)
    )
    assert (promotion.adjustments, promotion.already_promoted) == (5, False)
    assert promotion.net_amount == Decimal("20.50")
    after = ledger_totals(stack_settings, t.tenant_id)
    assert {k: v for k, v in after.items() if k != "#rows"} == {
        t.ana: Decimal("20.00"), t.bob: Decimal("20.00"), t.boss: Decimal("1.00"),
    }  # fmt: skip
    assert after["#rows"] == before["#rows"] + 5
    with psycopg.connect(stack_settings.postgres_url) as conn:
        kinds = conn.execute(
            "SELECT kind, source_event_id, count(*) FROM ledger_entries WHERE tenant_id = %s"
            " AND kind = 'adjustment' GROUP BY 1, 2",
            (t.tenant_id,),
        ).fetchall()
        audit = conn.execute(
            "SELECT action, entity_id, after->'adjustments' FROM audit_log WHERE tenant_id = %s",
            (t.tenant_id,),
        ).fetchall()
    assert kinds == [("adjustment", f"replay:{replay.replay_id}", 5)]
    assert audit == [("ledger_replay.promote", replay.replay_id, 5)]
    assert verify_chain(load_entries(stack_settings.postgres_url, t.tenant_id)) == []
    # Nothing left to book: the live view (entries + corrections) equals the shadow.
    assert with_session(stack_settings, lambda s: diff_replay(s, replay.replay_id)).diff.is_empty

    again = with_session(
        stack_settings, lambda s: promote(s, replay.replay_id, actor="cli:test", meta=meta)
    )
    assert (again.already_promoted, again.audit_seq) == (True, promotion.audit_seq)
    assert ledger_totals(stack_settings, t.tenant_id) == after
    # A second replay of the same proposal finds the ledger already equal: promoting it books
    # nothing (only its audit entry).
    second = run_replay(stack_settings, ReplayScope(t.tenant_id), what_if=proposed)
    booked = with_session(
        stack_settings, lambda s: promote(s, second.replay_id, actor="cli:test", meta=meta)
    )
    assert (booked.adjustments, booked.already_promoted) == (0, False)
    assert ledger_totals(stack_settings, t.tenant_id) == after


def test_cli_replays_with_a_what_if_diff_and_promotes(
    promoting_settings: Settings, kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    stack_settings = promoting_settings
    t = live_run(stack_settings, kafka_broker)
    rules = tmp_path / "rules.json"
    rules.write_bytes(orjson.dumps(rules_body(t.program, percent="20", version=2, overrides=["5"])))
    env = {
        "REFSTREAM_POSTGRES_URL": stack_settings.postgres_url,
        "REFSTREAM_CLICKHOUSE_URL": stack_settings.clickhouse_url,
        "REFSTREAM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "COLUMNS": "200",
    }
    runner = CliRunner()
    args = ["replay", "run", "--tenant", t.tenant_id, "--what-if", str(rules), "--promote"]
    result = runner.invoke(refstream_cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "6 events, 3 orders, 5 shadow entries" in result.output
    assert "5 changed, 0 added, 0 missing" in result.output
    for agent, live, shadow, delta in ((t.ana, "10.00", "20.00", "+10.00"),
                                       (t.boss, "0.50", "1.00", "+0.50")):  # fmt: skip
        row = rf"{agent}\s*│\s*USD\s*│\s*{live}\s*│\s*{shadow}\s*│\s*\{delta}"
        assert re.search(row, result.output), result.output
    assert "5 adjustment entries (net +20.50)" in result.output
    assert ledger_totals(stack_settings, t.tenant_id)[t.bob] == Decimal("20.00")

    replay_id = result.output.split("✓ replay ", 1)[1].split(":", 1)[0]
    again = runner.invoke(refstream_cli, ["replay", "promote", replay_id], env=env)
    assert again.exit_code == 0, again.output
    assert "already promoted" in again.output
    shown = runner.invoke(refstream_cli, ["replay", "diff", replay_id], env=env)
    assert "0 changed, 0 added, 0 missing" in shown.output
    missing = runner.invoke(refstream_cli, ["replay", "promote", "rpl_nope"], env=env)
    assert missing.exit_code == 1
    assert "No replay" in missing.output


def test_the_flow_reads_every_stream_the_ingress_accepts_events_into() -> None:
    accepted = {topic_for_shopify(t) for t in SHOPIFY_TOPICS} | {Topic.CLICKS, Topic.ERP}
    assert accepted <= set(INPUT_TOPICS)  # so every accepted event reaches the archive


def test_archive_only_events_are_archived_and_leave_the_ledger_alone() -> None:
    redact = EventEnvelope.wrap(
        orjson.dumps({"shop_id": 1, "shop_domain": "s.myshopify.com"}), event_id="ev-redact",
        source=Source.SHOPIFY, kind="shop/redact", tenant_id="t_gdpr", shop="s.myshopify.com",
        occurred_at=T0, received_at=T0,
    )  # fmt: skip
    assert parse_value(redact.to_bytes()) == [("raw_events", raw_event_row(redact))]
