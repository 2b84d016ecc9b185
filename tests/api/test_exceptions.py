"""The exceptions inbox: dead letters from the real Kafka topic stored per company in the real
PostgreSQL (once per letter, however often delivered), listed newest first for owners and
managers with filters and a cursor, counted, resolved by hand (audited, once) or by promoting
a replay that decided the letter's order."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import psycopg
from confluent_kafka import Producer
from httpx import AsyncClient
from psycopg.types.json import Jsonb
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.context import RequestMeta
from api.db import create_engine, create_sessionmaker
from api.exceptions.consumer import consume
from api.exceptions.letters import exception_row
from api.replays import promote
from dataflows.replay import write_replay_orders
from ingest.cli import ensure_tenant
from schemas.events.envelope import DeadLetter
from schemas.settings import Settings
from tests.api.factories import (
    bearer,
    build_world,
    create_company,
    insert_exception,
    login,
    refund_dead_letter,
)
from tests.fixtures.kafka import KafkaBroker, TopicFactory

T0 = datetime(2026, 11, 2, tzinfo=UTC)


def sink_letter(content: dict[str, Any], reason: str = "ledger: entry refused") -> DeadLetter:
    raw = base64.b64encode(orjson.dumps(content)).decode("ascii")
    return DeadLetter(reason=reason, stage="ledger", failed_at=T0, raw=raw)


# --- which inbox, which id (pure) ------------------------------------------------------------


def test_a_letter_delivered_twice_is_one_exception_and_another_reason_is_another() -> None:
    letter = refund_dead_letter(tenant_id="t_a", event_id="evt-1")
    again = letter.model_copy(update={"failed_at": T0 + timedelta(minutes=5)})
    first, second = exception_row(letter), exception_row(again)
    assert first is not None
    assert second is not None
    assert first.id == second.id
    other = exception_row(letter.model_copy(update={"reason": "orphan: refunds/create"}))
    assert other is not None
    assert other.id != first.id
    assert (first.tenant_id, first.kind, first.entity_id, first.event_id) == (
        "t_a",
        "refunds/create",
        "450789469",
        "evt-1",
    )


def test_a_refused_row_belongs_to_its_tenant_and_a_letter_naming_none_to_no_inbox() -> None:
    row = exception_row(
        sink_letter({"tenant_id": "t_b", "order_id": "o-9", "source_event_id": "evt-9"})
    )
    assert row is not None
    assert (row.tenant_id, row.stage, row.entity_id, row.event_id) == (
        "t_b",
        "ledger",
        "o-9",
        "evt-9",
    )
    assert exception_row(sink_letter({"order_id": "o-9"})) is None
    assert (
        exception_row(DeadLetter(reason="fx: no EUR rate", stage="dataflow", failed_at=T0)) is None
    )
    not_json = base64.b64encode(b"\xff\x00").decode("ascii")
    assert (
        exception_row(DeadLetter(reason="kafka", stage="dataflow", failed_at=T0, raw=not_json))
        is None
    )


# --- the consumer: real Kafka topic -> real PostgreSQL ---------------------------------------


def stored(pg_url: str, tenants: list[str]) -> list[tuple[str, str, str | None]]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT tenant_id, reason, entity_id FROM exceptions WHERE tenant_id = ANY(%s)"
            " ORDER BY tenant_id, reason",
            (tenants,),
        ).fetchall()
    return [(t, r, e) for t, r, e in rows]


def test_the_consumer_stores_each_companys_letters_once(
    pg_url: str, kafka_broker: KafkaBroker, kafka_topic_factory: TopicFactory
) -> None:
    topic = kafka_topic_factory("deadletter")
    a, b = f"t_{uuid.uuid4().hex[:8]}", f"t_{uuid.uuid4().hex[:8]}"
    late = refund_dead_letter(tenant_id=a, order_id="1001", event_id="evt-late")
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "log_level": 0})
    values = [
        late.to_bytes(),
        late.model_copy(update={"failed_at": T0 + timedelta(seconds=9)}).to_bytes(),  # retried
        refund_dead_letter(
            tenant_id=a,
            order_id="1002",
            reason="orphan: refunds/create of order 1002, which never arrived",
        ).to_bytes(),
        sink_letter({"tenant_id": b, "order_id": "2001"}).to_bytes(),
        DeadLetter(reason="fx: no EUR rate", stage="dataflow", failed_at=T0).to_bytes(),
        b"not a dead letter",
    ]
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(15) == 0

    settings = Settings(postgres_url=pg_url, kafka_bootstrap=kafka_broker.bootstrap)
    stop = threading.Event()
    worker = threading.Thread(
        target=consume,
        args=(settings,),
        kwargs={"topic": topic, "group_id": f"g-{topic}", "stop": stop},
        daemon=True,
    )
    worker.start()
    expected = sorted(
        [
            (a, "late: older than the allowed lateness", "1001"),
            (a, "orphan: refunds/create of order 1002, which never arrived", "1002"),
            (b, "ledger: entry refused", "2001"),
        ]
    )
    deadline = time.monotonic() + 60  # waiting for the consumer, not asserting its speed
    while stored(pg_url, [a, b]) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    stop.set()
    worker.join(30)
    assert not worker.is_alive()
    assert stored(pg_url, [a, b]) == expected


# --- the API ---------------------------------------------------------------------------------


async def test_owners_and_managers_list_filter_page_and_count_their_companys_exceptions(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    tenant = world.company_id
    ids = [
        insert_exception(
            pg_url, tenant_id=tenant, order_id=f"{i}", failed_at=T0 + timedelta(hours=i)
        )
        for i in range(1, 4)
    ]
    orphan = insert_exception(
        pg_url,
        tenant_id=tenant,
        order_id="9",
        failed_at=T0,
        reason="orphan: refunds/create of order 9",
    )
    other = await create_company(client)
    insert_exception(pg_url, tenant_id=other["company"]["id"])

    owner = bearer(world.tokens["owner"])
    listed = await client.get("/v1/exceptions", headers=owner)
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [ids[2], ids[1], ids[0], orphan]  # newest first; tie by id
    assert items[0] | {"id": None} == {
        "id": None,
        "reason": "late: older than the allowed lateness",
        "stage": "dataflow",
        "source": "shopify",
        "kind": "refunds/create",
        "event_id": items[0]["event_id"],
        "entity_id": "3",
        "shop": "acme.myshopify.com",
        "occurred_at": "2026-11-02T02:00:00Z",
        "failed_at": "2026-11-02T03:00:00Z",
        "resolved_at": None,
        "resolved_by": None,
        "resolution": None,
    }

    page = await client.get("/v1/exceptions?limit=2", headers=owner)
    assert [i["id"] for i in page.json()["items"]] == [ids[2], ids[1]]
    cursor = page.json()["next_cursor"]
    rest = await client.get("/v1/exceptions", params={"limit": 2, "cursor": cursor}, headers=owner)
    assert [i["id"] for i in rest.json()["items"]] == [ids[0], orphan]

    by_reason = await client.get("/v1/exceptions?reason=orphan", headers=owner)
    assert [i["id"] for i in by_reason.json()["items"]] == [orphan]
    timed = await client.get(
        "/v1/exceptions",
        params={"from": "2026-11-02T01:30:00+00:00", "to": "2026-11-02T03:00:00Z"},
        headers=owner,
    )
    assert [i["id"] for i in timed.json()["items"]] == [ids[1]]

    manager = bearer(world.tokens["manager"])
    assert len((await client.get("/v1/exceptions", headers=manager)).json()["items"]) == 4
    counts = await client.get("/v1/exceptions/counts", headers=manager)
    assert counts.json() == {"open": 4, "resolved": 0}

    other_tokens = await login(client, company=other["company"]["slug"], email=other["owner_email"])
    theirs = await client.get("/v1/exceptions", headers=bearer(other_tokens["access_token"]))
    assert len(theirs.json()["items"]) == 1
    bad = await client.get("/v1/exceptions?status=fixed&cursor=%%%", headers=owner)
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    malformed = await client.get("/v1/exceptions?cursor=bm9wZQ", headers=owner)
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith("application/problem+json")


async def test_a_manager_resolves_an_exception_once_with_an_audited_note(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    exception_id = insert_exception(pg_url, tenant_id=world.company_id)
    manager = bearer(world.tokens["manager"])
    note = {"note": "body re-sent by the shop"}
    resolved = await client.post(
        f"/v1/exceptions/{exception_id}/resolve", json=note, headers=manager
    )
    assert resolved.status_code == 200, resolved.text
    body = resolved.json()
    assert body["resolution"] == "body re-sent by the shop"
    assert body["resolved_by"] == f"user:{world.users['manager']}"
    assert body["resolved_at"] is not None
    again = await client.post(f"/v1/exceptions/{exception_id}/resolve", json=note, headers=manager)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    counts = await client.get("/v1/exceptions/counts", headers=manager)
    assert counts.json() == {"open": 0, "resolved": 1}
    listed = await client.get("/v1/exceptions?status=open", headers=manager)
    assert listed.json()["items"] == []
    with psycopg.connect(pg_url) as conn:
        audits = conn.execute(
            "SELECT action, entity_id FROM audit_log WHERE tenant_id = %s AND action LIKE"
            " 'exception.%%'",
            (world.company_id,),
        ).fetchall()
    assert audits == [("exception.resolve", exception_id)]
    empty = await client.post(
        f"/v1/exceptions/{exception_id}/resolve", json={"note": ""}, headers=manager
    )
    assert empty.status_code == 422


def test_an_exception_changes_only_by_its_resolution_and_is_never_deleted(pg_url: str) -> None:
    tenant = f"t_{uuid.uuid4().hex[:8]}"
    exception_id = insert_exception(pg_url, tenant_id=tenant)
    with psycopg.connect(pg_url) as conn:
        for statement in (
            "UPDATE exceptions SET reason = 'edited' WHERE id = %s",
            "DELETE FROM exceptions WHERE id = %s",
        ):
            try:
                conn.execute(statement, (exception_id,))
            except psycopg.errors.Error:
                conn.rollback()
            else:
                raise AssertionError(f"accepted: {statement}")


# --- resolution by the documented fix: replay, then promote ----------------------------------


async def test_promoting_a_replay_resolves_the_exceptions_of_the_orders_it_decided(
    pg_url: str,
) -> None:
    tenant, replay_id = f"t_{uuid.uuid4().hex[:8]}", f"rpl_{uuid.uuid4().hex}"
    started = T0 + timedelta(days=1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_tenant(conn, tenant)
    fixed = insert_exception(pg_url, tenant_id=tenant, order_id="o1", failed_at=T0)
    not_replayed = insert_exception(pg_url, tenant_id=tenant, order_id="o3", failed_at=T0)
    after_start = insert_exception(
        pg_url,
        tenant_id=tenant,
        order_id="o1",
        failed_at=started + timedelta(hours=1),
        reason="orphan: refunds/create",
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ledger_replays (replay_id, tenant_id, source, filters, config_version,"
            " status, started_at) VALUES (%s, %s, 'archive', %s, 'cfg', 'complete', %s)",
            (replay_id, tenant, Jsonb({"programs": []}), started),
        )
        write_replay_orders(conn, replay_id, ["o1", "o2"])
    engine = create_engine(Settings(postgres_url=pg_url))
    sessions: async_sessionmaker[AsyncSession] = create_sessionmaker(engine)
    meta = RequestMeta(request_id="req-x", source_ip=None, now=started + timedelta(days=1))
    try:
        async with sessions() as session:
            await promote(session, replay_id, actor="cli:test", meta=meta)
            await session.commit()
    finally:
        await engine.dispose()
    with psycopg.connect(pg_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT id, resolution FROM exceptions WHERE tenant_id = %s", (tenant,)
            ).fetchall()
        )
    assert rows == {
        fixed: f"replay {replay_id} promoted",
        not_replayed: None,
        after_start: None,
    }
