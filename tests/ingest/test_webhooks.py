"""Shopify and Odoo webhooks through the real app into the real broker."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import orjson

from dataflows.attribution.wire import decode_envelope
from dataflows.sinks.clickhouse import raw_event_row
from deploy.demo import read_to_end
from ingest.shopify import sign
from schemas.events.envelope import DeadLetter, EventEnvelope, Source
from schemas.settings import Settings
from schemas.topics import Topic, topic_for_shopify
from tests.ingest.conftest import ClientFactory, Registered, shopify_headers

SHOPIFY_FIXTURE_TOPICS = {
    "orders_create.json": "orders/create",
    "orders_paid.json": "orders/paid",
    "orders_updated.json": "orders/updated",
    "orders_cancelled.json": "orders/cancelled",
    "orders_fulfilled.json": "orders/fulfilled",
    "order_full_450789469.json": "orders/updated",
    "refunds_create.json": "refunds/create",
    "customers_create.json": "customers/create",
    "collections_create.json": "collections/create",
    "collections_update.json": "collections/update",
    "collections_delete.json": "collections/delete",
    "customers_data_request.json": "customers/data_request",
    "customers_redact.json": "customers/redact",
    "shop_redact.json": "shop/redact",
    # Last: the ingress refuses a shop's webhooks once the app is uninstalled from it.
    "app_uninstalled.json": "app/uninstalled",
}


def envelopes(settings: Settings, topic: Topic) -> list[EventEnvelope]:
    return [
        EventEnvelope.from_bytes(m.value()) for m in read_to_end(settings.kafka_bootstrap, topic)
    ]


def problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status


async def post_shopify(
    client: httpx.AsyncClient, reg: Registered, body: bytes, topic: str, **kw: str
) -> httpx.Response:
    headers = shopify_headers(reg.shop, reg.secret, body, topic, kw.get("event_id"))
    return await client.post("/webhooks/shopify", content=body, headers=headers)


async def test_every_shopify_fixture_is_accepted_and_produced_byte_for_byte(
    client: httpx.AsyncClient, registered: Registered, shared_fixtures: Path,
    stack_settings: Settings,
) -> None:  # fmt: skip
    files = {p.name for p in (shared_fixtures / "shopify").glob("*.json")}
    not_bodies = {"delivery_headers_examples.json", "collects_list.json"}
    assert files - not_bodies == set(SHOPIFY_FIXTURE_TOPICS)
    sent: dict[str, tuple[bytes, str]] = {}
    for name, topic in SHOPIFY_FIXTURE_TOPICS.items():
        raw = (shared_fixtures / "shopify" / name).read_bytes()
        response = await post_shopify(client, registered, raw, topic)
        assert response.status_code == 200, (name, response.text)
        assert response.json()["status"] == "accepted"
        sent[response.json()["event_id"]] = (raw, topic)
    for event_id, (raw, topic) in sent.items():
        found = [e for e in envelopes(stack_settings, topic_for_shopify(topic))
                 if e.event_id == event_id]  # fmt: skip
        assert len(found) == 1, topic
        envelope = found[0]
        assert envelope.raw_body() == raw
        assert (envelope.kind, envelope.source, envelope.tenant_id) == (
            topic, Source.SHOPIFY, registered.tenant_id)  # fmt: skip
        assert envelope.shop == registered.shop
        assert envelope.headers["shopify-topic"] == topic


async def test_a_json_body_travels_embedded_and_reads_back_byte_for_byte(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    """Wire form 2: a body msgspec read whole is embedded in the envelope as JSON, not escaped
    into a string (whitespace, escapes and unicode as sent); one that ends with whitespace
    keeps form 1. Both readers give the exact bytes back, and the same archive row."""
    order_id = uuid.uuid4().int % 10**12
    embedded = (
        b'{\n  "id" : %d,\n  "updated_at": "2026-11-25T10:00:00-05:00",\r\n\t"note": '
        b'"caf\xc3\xa9 \\u00e9 \\"q\\" \\n", "total" : 1.50e2 }' % order_id
    )
    trailing = b'{"id": %d, "updated_at": "2026-11-25T11:00:00Z"}\n' % order_id
    sent = {}
    for raw, form in ((embedded, b'"body_encoding":"json"}'), (trailing, b'"utf-8"}')):
        response = await post_shopify(client, registered, raw, "orders/updated")
        assert response.status_code == 200, response.text
        sent[response.json()["event_id"]] = (raw, form)
    assert len(sent) == 2
    values = {}
    for message in read_to_end(stack_settings.kafka_bootstrap, Topic.ORDERS):
        value = message.value() or b""
        event_id = EventEnvelope.from_bytes(value).event_id
        if event_id in sent:
            values[event_id] = value
    assert set(values) == set(sent)
    for event_id, (raw, form) in sent.items():
        value = values[event_id]
        assert value.endswith(form)
        slow, fast = EventEnvelope.from_bytes(value), decode_envelope(value)
        assert slow.raw_body() == fast.raw_body() == raw
        assert raw_event_row(slow) == raw_event_row(fast)
    assert b'"body":' + embedded + b',"body_encoding":"json"}' in values[next(iter(sent))]


async def test_orders_are_keyed_by_tenant_and_order_with_event_time(
    client: httpx.AsyncClient, registered: Registered, shared_fixtures: Path,
    stack_settings: Settings,
) -> None:  # fmt: skip
    raw = (shared_fixtures / "shopify" / "refunds_create.json").read_bytes()
    response = await post_shopify(client, registered, raw, "refunds/create")
    event_id = response.json()["event_id"]
    messages = read_to_end(stack_settings.kafka_bootstrap, Topic.REFUNDS)
    (msg,) = [m for m in messages if EventEnvelope.from_bytes(m.value()).event_id == event_id]
    order_id = orjson.loads(raw)["order_id"]
    assert msg.key() == f"{registered.tenant_id}:{order_id}".encode()
    envelope = EventEnvelope.from_bytes(msg.value())
    assert envelope.occurred_at < envelope.received_at


async def test_odoo_fixtures_are_accepted_on_the_erp_topic(
    client: httpx.AsyncClient, registered: Registered, shared_fixtures: Path,
    stack_settings: Settings,
) -> None:  # fmt: skip
    ids = {}
    for path in sorted((shared_fixtures / "odoo").glob("*.json")):
        raw = path.read_bytes()
        response = await client.post(f"/webhooks/odoo/{registered.odoo_token}", content=raw,
                                     headers={"Content-Type": "application/json"})  # fmt: skip
        assert response.status_code == 200, (path.name, response.text)
        assert response.json()["status"] == "accepted"
        ids[response.json()["event_id"]] = raw
    found = {e.event_id: e for e in envelopes(stack_settings, Topic.ERP) if e.event_id in ids}
    assert set(found) == set(ids)
    for event_id, envelope in found.items():
        assert envelope.raw_body() == ids[event_id]
        assert envelope.source is Source.ODOO
    keys = {e.entity_id for e in found.values()}
    assert "S00042" in keys  # the sale order and its invoice share the key


async def test_odoo_unknown_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.post("/webhooks/odoo/not-a-token", content=b"{}",
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    problem(response, 401, "unknown_endpoint")


async def test_previous_secret_accepted_during_rotation(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    body = orjson.dumps({"id": 901, "created_at": "2026-11-01T10:00:00-05:00"})
    headers = shopify_headers(registered.shop, registered.previous_secret, body, "orders/create")
    response = await client.post("/webhooks/shopify", content=body, headers=headers)
    assert response.status_code == 200
    headers = shopify_headers(registered.shop, "some-other-secret", body, "orders/create")
    problem(await client.post("/webhooks/shopify", content=body, headers=headers), 401,
            "invalid_signature")  # fmt: skip


async def test_three_deliveries_of_one_event_produce_one_message(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    event_id = f"ev-dup-{uuid.uuid4().hex}"
    body = orjson.dumps({"id": 902, "created_at": "2026-11-01T10:00:00Z"})
    statuses = []
    for _ in range(3):
        response = await post_shopify(client, registered, body, "orders/paid", event_id=event_id)
        assert response.status_code == 200
        statuses.append(response.json()["status"])
    assert statuses == ["accepted", "duplicate", "duplicate"]
    matching = [e for e in envelopes(stack_settings, Topic.ORDERS) if e.event_id == event_id]
    assert len(matching) == 1


async def test_malformed_json_after_valid_hmac_goes_to_dead_letter(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    for body, topic, reason in [
        (b'{"id": 903, "total_price": ', "orders/create", "JSON"),
        (b'{"no_id": true}', "orders/create", "id"),
        (b'{"id": 904}', "inventory_levels/update", "unsupported topic"),
    ]:
        response = await post_shopify(client, registered, body, topic)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "dead_lettered"
        event_id = response.json()["event_id"]
        letters = [
            DeadLetter.model_validate_json(m.value())
            for m in read_to_end(stack_settings.kafka_bootstrap, Topic.DEADLETTER)
        ]
        (letter,) = [d for d in letters if d.envelope and d.envelope.event_id == event_id]
        assert reason.lower() in letter.reason.lower()
        assert letter.envelope is not None
        assert letter.envelope.raw_body() == body
    metrics = (await client.get("/metrics")).text
    assert 'refstream_ingest_dead_letters_total{source="shopify"}' in metrics


async def test_refusals_have_status_and_machine_readable_body(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    body = b'{"id": 905}'
    headers = shopify_headers(registered.shop, registered.secret, body, "orders/create")

    wrong_type = {**headers, "Content-Type": "text/plain"}
    problem(await client.post("/webhooks/shopify", content=body, headers=wrong_type), 415,
            "unsupported_media_type")  # fmt: skip

    big = b'{"id": 1, "pad": "' + b"x" * (3 * 1024 * 1024) + b'"}'
    big_headers = shopify_headers(registered.shop, registered.secret, big, "orders/create")
    problem(await client.post("/webhooks/shopify", content=big, headers=big_headers), 413,
            "body_too_large")  # fmt: skip

    unknown = {**headers, "X-Shopify-Shop-Domain": "nobody.myshopify.com"}
    problem(await client.post("/webhooks/shopify", content=body, headers=unknown), 401,
            "unknown_shop")  # fmt: skip

    bad_sig = {**headers, "X-Shopify-Hmac-Sha256": sign("wrong", body)}
    problem(await client.post("/webhooks/shopify", content=body, headers=bad_sig), 401,
            "invalid_signature")  # fmt: skip

    tampered = body.replace(b"905", b"906")
    problem(await client.post("/webhooks/shopify", content=tampered, headers=headers), 401,
            "invalid_signature")  # fmt: skip

    metrics = (await client.get("/metrics")).text
    for code in ("unsupported_media_type", "body_too_large", "unknown_shop", "invalid_signature"):
        assert f'outcome="{code}"' in metrics


async def test_per_shop_rate_limit_answers_429_with_retry_after(
    make_client: ClientFactory, registered: Registered
) -> None:
    async with make_client(ingest_rate_limit_per_shop=3) as client:
        codes = []
        for n in range(8):
            body = orjson.dumps({"id": 1000 + n})
            codes.append(await post_shopify(client, registered, body, "orders/create"))
    statuses = [r.status_code for r in codes]
    assert 429 in statuses
    assert statuses.count(200) >= 3
    limited = next(r for r in codes if r.status_code == 429)
    problem(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"kafka": "ok", "redis": "ok"}
    assert "x-request-id" in ready.headers
