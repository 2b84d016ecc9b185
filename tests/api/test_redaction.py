"""GDPR redaction against the real stores: archived Shopify events and analytics rows in the
chDB front, the record in PostgreSQL. Shows the personal data gone from every store the job
touches (queried, all versions of every row, not only the merged view) while the totals stay."""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from api.exceptions import consumer as exceptions_consumer
from api.redaction import job, plan
from dataflows.sinks.clickhouse import COLUMNS, raw_event_row
from deploy import migrations
from deploy.cli import app
from schemas.events.envelope import DeadLetter, EventEnvelope, Source
from schemas.events.shopify import ShopifyOrder, parse_shopify_body
from schemas.settings import Settings
from tests.fixtures.clickhouse import ClickHouseServer
from tests.fixtures.postgres import PgTarget

SHOP = "acme-redact.myshopify.com"
OTHER_SHOP = "other-redact.myshopify.com"
BOB = 207119551  # the customer of order_full_450789469.json
BOB_EMAIL = "bob.norman@mail.example.com"
KEY = b"k" * 32
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
# Strings of Bob's order and click that identify him (email, name, phone, address, IP, agent).
BOB_TRACES = (
    "bob.norman", "Norman", "+13125551212", "Chestnut", "Louisville", "216.191.105.146",
    "ua-bob", "ip-bob", "vis-bob", "ref/bob",
)  # fmt: skip


@dataclass(frozen=True)
class Stores:
    settings: Settings
    client: Client
    tenant: str


@pytest.fixture
def stores(clickhouse_server: ClickHouseServer, pg_target: PgTarget) -> Iterator[Stores]:
    database = f"test_redact_{uuid.uuid4().hex[:12]}"
    settings = pg_target.settings(
        clickhouse_url=f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{database}"
    )
    migrations.migrate_clickhouse(settings)
    tenant = f"t_red_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_target.url) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, slug) VALUES (%s, %s, %s)", (tenant, "R", tenant)
        )
    client = clickhouse_server.client(database=database)
    try:
        yield Stores(settings, client, tenant)
    finally:
        client.command(f"DROP DATABASE IF EXISTS {database}")
        client.close()


def _fixture(shared: Any, name: str) -> dict[str, Any]:
    doc: dict[str, Any] = orjson.loads((shared / "shopify" / name).read_bytes())
    return doc


def _envelope(
    tenant: str, kind: str, event_id: str, body: dict[str, Any], shop: str | None, at: datetime
) -> EventEnvelope:
    source = Source.SHOPIFY if kind != "click" else Source.PIXEL
    return EventEnvelope.wrap(
        orjson.dumps(body), event_id=event_id, source=source, kind=kind, tenant_id=tenant,
        shop=shop, entity_id=event_id, occurred_at=at, received_at=at,
    )  # fmt: skip


def _click(click_id: str, who: str) -> dict[str, Any]:
    return {
        "click_id": click_id, "link_code": "lnk1", "visitor_id": f"vis-{who}",
        "user_agent": f"ua-{who}", "ip_hash": f"ip-{who}", "referrer": f"https://ref/{who}",
        "landing_url": "https://shop/?ref=lnk1",
    }  # fmt: skip


def _seed(stores: Stores, shared: Any) -> None:
    """Bob's order (created, paid), its refund, his customer record, Jane's order, both their
    clicks, and analytics rows for both orders, as the dataflow writes them."""
    t = stores.tenant
    bob_order = _fixture(shared, "order_full_450789469.json")
    bob_order["phone"] = "+13125551212"
    bob_order["browser_ip"] = "216.191.105.146"
    bob_order["client_details"] |= {"browser_ip": "216.191.105.146", "user_agent": "ua-bob"}
    jane_order = _fixture(shared, "orders_create.json")
    customer = _fixture(shared, "customers_create.json") | {"id": BOB, "email": BOB_EMAIL}
    refund = _fixture(shared, "refunds_create.json")
    envelopes = [
        _envelope(t, "orders/create", "ev-bob-create", bob_order, SHOP, T0),
        _envelope(t, "orders/paid", "ev-bob-paid", bob_order, SHOP, T0 + timedelta(minutes=1)),
        _envelope(t, "refunds/create", "ev-bob-refund", refund, SHOP, T0 + timedelta(hours=1)),
        _envelope(t, "customers/create", "ev-bob-customer", customer, SHOP, T0),
        _envelope(t, "orders/create", "ev-jane-create", jane_order, SHOP, T0),
        _envelope(t, "orders/create", "ev-other-shop", jane_order, OTHER_SHOP, T0),
        _envelope(t, "click", "clk-bob", _click("clk-bob", "bob"), SHOP, T0),
        _envelope(t, "click", "clk-jane", _click("clk-jane", "jane"), None, T0),
    ]
    _insert(stores.client, "raw_events", [raw_event_row(e) for e in envelopes])
    clicks = [
        (t, cid, "lnk1", "p1", "a1", shop, f"vis-{who}", T0, "https://shop/?ref=lnk1",
         f"https://ref/{who}", f"ua-{who}", f"ip-{who}", False, False, 1)
        for cid, who, shop in (("clk-bob", "bob", SHOP), ("clk-jane", "jane", None))
    ]  # fmt: skip
    _insert(stores.client, "clicks", clicks)
    conversions = [
        (t, f"cv-{oid}", SHOP, oid, "#1001", T0, T0, "click", "a1", "p1", cid, None,
         str(customer_id), True, "USD", Decimal(revenue), Decimal(1), "ev", 1, "lnk1", "", [])
        for oid, cid, customer_id, revenue in (
            ("450789469", "clk-bob", BOB, "598.94"),
            ("1073459981", "clk-jane", 1073339475, "10.00"),
        )
    ]  # fmt: skip
    _insert(stores.client, "conversions", conversions)
    entries = [
        (t, f"en-{oid}", "a1", "p1", f"cv-{oid}", oid, None, "accrual", "pending", 0,
         Decimal(amount), "USD", Decimal(1), "r1", 1, T0, "ev", 1, SHOP, "lnk1", None)
        for oid, amount in (("450789469", "59.89"), ("1073459981", "1.00"))
    ]  # fmt: skip
    _insert(stores.client, "commission_events", entries)
    _insert(
        stores.client, "refunds",
        [(t, "509562969", "450789469", SHOP, T0, "USD", Decimal("41.94"), None, 1, "ev", 1)],
    )  # fmt: skip


def _letters(stores: Stores, shared: Any, pg_url: str) -> None:
    """Dead letters in the exceptions inbox, stored by the inbox consumer's own code: Bob's
    order refused by the dataflow, Bob's click row refused by the sink, Jane's order."""
    bob_order = _fixture(shared, "order_full_450789469.json")
    jane_order = _fixture(shared, "orders_create.json")
    at = T0 + timedelta(days=1)
    letters = [
        DeadLetter(reason="late event", stage="dataflow", failed_at=at, envelope=_envelope(
            stores.tenant, "orders/updated", "ev-bob-late", bob_order, SHOP, at)),
        DeadLetter(reason="late event", stage="dataflow", failed_at=at, envelope=_envelope(
            stores.tenant, "orders/updated", "ev-jane-late", jane_order, SHOP, at)),
        DeadLetter(reason="refused", stage="sink:clickhouse", failed_at=at, raw=base64.b64encode(
            orjson.dumps({"tenant_id": stores.tenant} | _click("clk-bob", "bob"))).decode()),
    ]  # fmt: skip
    rows, skipped = exceptions_consumer.rows_of([letter.to_bytes() for letter in letters])
    assert skipped == 0
    with psycopg.connect(pg_url) as conn:
        exceptions_consumer.store(conn, rows)


def _inbox(pg_url: str, tenant: str) -> dict[str, str]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT coalesce(event_id, entity_id, id), event::text FROM exceptions "
            "WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()
    return dict(rows)


def _insert(client: Client, table: str, rows: list[Any]) -> None:
    client.insert(table, rows, column_names=list(COLUMNS[table]))


def _request(stores: Stores, shared: Any, kind: str, event_id: str) -> None:
    if kind == "customers/redact":
        body = _fixture(shared, "customers_redact.json") | {
            "shop_domain": SHOP, "orders_to_redact": [450789469],
            "customer": {"id": BOB, "email": BOB_EMAIL, "phone": "+13125551212"},
        }  # fmt: skip
    else:
        body = _fixture(shared, "shop_redact.json") | {"shop_domain": SHOP}
    at = T0 + timedelta(days=3)
    _insert(
        stores.client, "raw_events",
        [raw_event_row(_envelope(stores.tenant, kind, event_id, body, SHOP, at))],
    )  # fmt: skip


def _totals(client: Client, tenant: str) -> tuple[Any, ...]:
    return tuple(
        client.query(sql, parameters={"t": tenant}).result_rows[0][0]
        for sql in (
            "SELECT sum(revenue) FROM conversions FINAL WHERE tenant_id = {t:String}",
            "SELECT sum(amount) FROM commission_events FINAL WHERE tenant_id = {t:String}",
            "SELECT sum(amount) FROM refunds FINAL WHERE tenant_id = {t:String}",
            "SELECT count() FROM conversions FINAL WHERE tenant_id = {t:String}",
        )
    )


def _traces(client: Client, tenant: str, needle: str) -> int:
    """Rows of any version (no FINAL) in the archive or the clicks that contain `needle`."""
    archive = client.query(
        "SELECT count() FROM raw_events WHERE tenant_id = {t:String} "
        "AND positionCaseInsensitive(body, {n:String}) > 0",
        parameters={"t": tenant, "n": needle},
    ).result_rows[0][0]
    clicks = client.query(
        "SELECT count() FROM clicks WHERE tenant_id = {t:String} AND positionCaseInsensitive("
        "concat(ifNull(ip_hash, ''), ifNull(user_agent, ''), ifNull(visitor_id, ''), "
        "ifNull(referrer, '')), {n:String}) > 0",
        parameters={"t": tenant, "n": needle},
    ).result_rows[0][0]
    return int(archive) + int(clicks)


def _bodies(client: Client, tenant: str) -> dict[str, bytes]:
    rows = client.query(
        "SELECT event_id, body FROM raw_events FINAL WHERE tenant_id = {t:String}",
        parameters={"t": tenant},
    ).result_rows
    return {event_id: body.encode() for event_id, body in rows}


def test_customers_redact_erases_the_customer_everywhere_and_keeps_totals(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget
) -> None:
    client, tenant = stores.client, stores.tenant
    _seed(stores, shared_fixtures)
    _letters(stores, shared_fixtures, pg_target.url)
    _request(stores, shared_fixtures, "customers/redact", "ev-redact-bob")
    totals = _totals(client, tenant)
    inbox = _inbox(pg_target.url, tenant)
    assert sum("bob.norman" in e or "ip-bob" in e for e in inbox.values()) == 2
    before = _bodies(client, tenant)
    for needle in BOB_TRACES:
        assert _traces(client, tenant, needle) > 0, needle  # the seed holds what we erase

    with psycopg.connect(pg_target.url) as conn:
        outcomes = job.run(client, conn, KEY)
        assert job.run(client, conn, KEY) == []  # recorded: not carried out twice
        record = conn.execute(
            "SELECT kind, shop, customer_ref, raw_events, clicks, requested_at, done_at, "
            "exceptions "
            "FROM redactions WHERE tenant_id = %s AND request_event_id = 'ev-redact-bob'",
            (tenant,),
        ).fetchone()

    # Bob's orders (2 versions), refund, customer record, click and the request itself.
    assert [(o.raw_events, o.clicks) for o in outcomes] == [(6, 1)]
    for needle in BOB_TRACES:
        assert _traces(client, tenant, needle) == 0, needle
    assert _totals(client, tenant) == totals
    after = _bodies(client, tenant)
    # Jane's order, the other shop's event and Jane's click are untouched.
    for untouched in ("ev-jane-create", "ev-other-shop", "clk-jane"):
        assert after[untouched] == before[untouched]
    assert _traces(client, tenant, "jane@example.com") > 0
    assert _traces(client, tenant, "ua-jane") == 2  # archive + clicks row
    # The masked order still parses as the same order: a replay attributes it the same way.
    original = parse_shopify_body("orders/create", before["ev-bob-create"])
    masked = parse_shopify_body("orders/create", after["ev-bob-create"])
    assert isinstance(original, ShopifyOrder)
    assert isinstance(masked, ShopifyOrder)
    assert (masked.id, masked.line_items, masked.total_price, masked.note_attributes) == (
        original.id, original.line_items, original.total_price, original.note_attributes,
    )  # fmt: skip
    assert masked.email is None
    assert masked.customer is not None
    assert masked.customer.id == BOB
    assert masked.customer.first_name is None
    # The stored hash is the masked body's (replay rebuilds the envelope from the row).
    sha = client.query(
        "SELECT CAST(body_sha256 AS String) FROM raw_events FINAL WHERE tenant_id = {t:String} "
        "AND event_id = 'ev-bob-create'", parameters={"t": tenant},
    ).result_rows[0][0]  # fmt: skip
    assert sha == hashlib.sha256(after["ev-bob-create"]).hexdigest()
    # The record: counts and a keyed hash, nothing of the customer.
    ref = hmac.new(
        KEY, f"refstream-redaction\x00{tenant}\x00{SHOP}\x00{BOB}".encode(), hashlib.sha256
    ).hexdigest()
    assert record is not None
    assert record[:5] == ("customers/redact", SHOP, ref, 6, 1)
    assert record[5] == T0 + timedelta(days=3)
    assert record[6] >= record[5]
    assert record[7] == 2  # Bob's two letters in the exceptions inbox
    after_inbox = _inbox(pg_target.url, tenant)
    for needle in BOB_TRACES:
        assert not any(needle in e for e in after_inbox.values()), needle
    assert after_inbox["ev-jane-late"] == inbox["ev-jane-late"]
    assert "jane@example.com" in after_inbox["ev-jane-late"]
    assert not any(str(BOB) in str(v) or "bob" in str(v).lower() for v in record)


def test_shop_redact_erases_every_customer_of_the_shop(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget
) -> None:
    client, tenant = stores.client, stores.tenant
    _seed(stores, shared_fixtures)
    _request(stores, shared_fixtures, "shop/redact", "ev-redact-shop")
    totals = _totals(client, tenant)
    before = _bodies(client, tenant)

    with psycopg.connect(pg_target.url) as conn:
        outcomes = job.run(client, conn, KEY)
        record = conn.execute(
            "SELECT customer_ref, raw_events, clicks FROM redactions WHERE tenant_id = %s",
            (tenant,),
        ).fetchall()

    # Every event of the shop (7, the request included) and Jane's click (no shop on it, but
    # cited by a conversion of the shop); the other shop's event stays.
    assert [(o.raw_events, o.clicks) for o in outcomes] == [(8, 2)]
    assert record == [(None, 8, 2)]
    for needle in (*BOB_TRACES, "ua-jane", "ip-jane", "vis-jane"):
        assert _traces(client, tenant, needle) == 0, needle
    assert _traces(client, tenant, "jane@example.com") == 1  # the other shop's order
    assert _bodies(client, tenant)["ev-other-shop"] == before["ev-other-shop"]
    assert _totals(client, tenant) == totals


def test_cli_runs_pending_requests(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`refstream redact run` carries out what is pending against the configured stores."""
    _seed(stores, shared_fixtures)
    _request(stores, shared_fixtures, "customers/redact", "ev-redact-cli")
    monkeypatch.setenv("REFSTREAM_POSTGRES_URL", pg_target.url)
    monkeypatch.setenv("REFSTREAM_CLICKHOUSE_URL", stores.settings.clickhouse_url)
    monkeypatch.setenv("REFSTREAM_REDACTION_KEY", KEY.decode())
    result = CliRunner().invoke(app, ["redact", "run"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps at the terminal width
    assert "customers/redact ev-redact-cli" in output
    assert "6 archived event(s), 1 click(s), 0 inbox letter(s) masked" in output
    assert _traces(stores.client, stores.tenant, "bob.norman") == 0
    again = CliRunner().invoke(app, ["redact", "run"])
    assert "0 redaction request(s) carried out" in again.output


def test_request_bodies_are_read_as_shopify_documents_them(shared_fixtures: Any) -> None:
    at = T0
    raw = (shared_fixtures / "shopify" / "customers_redact.json").read_bytes()
    request = plan.request_from_body(
        tenant_id="t", shop=None, kind="customers/redact", event_id="e", requested_at=at, body=raw
    )
    assert (request.shop, request.customer_id, request.email, request.phone) == (
        "{shop}.myshopify.com", 191167, "john@example.com", "555-625-1199",
    )  # fmt: skip
    assert request.orders == frozenset({"299938", "280263", "220458"})
    shop_raw = (shared_fixtures / "shopify" / "shop_redact.json").read_bytes()
    shop = plan.request_from_body(
        tenant_id="t", shop="s.myshopify.com", kind="shop/redact", event_id="e", requested_at=at,
        body=shop_raw,
    )  # fmt: skip
    assert (shop.kind, shop.shop, shop.customer_id) == ("shop/redact", "s.myshopify.com", None)
    for kind, body in (
        ("customers/redact", b"not json"),
        ("customers/redact", b'{"shop_domain": "s", "customer": {"email": "x@y"}}'),
        ("shop/redact", b'{"shop_id": 1}'),
        ("orders/create", raw),
    ):
        with pytest.raises(plan.RequestError):
            plan.request_from_body(
                tenant_id="t", shop=None, kind=kind, event_id="e", requested_at=at, body=body
            )


def test_masking_reaches_every_depth_and_keeps_the_rest() -> None:
    body = orjson.dumps(
        {
            "id": 1, "email": "a@b", "total_price": "9.00",
            "customer": {"id": 7, "first_name": "A", "default_address": {"city": "X"}},
            "line_items": [{"name": "Shirt", "price": "9.00"}],
            "shipping_address": {"name": "A B"}, "note": None,
        }
    )  # fmt: skip
    assert orjson.loads(plan.masked_body(body)) == {
        "id": 1, "email": None, "total_price": "9.00",
        "customer": {"id": 7, "first_name": None, "default_address": None},
        "line_items": [{"name": "Shirt", "price": "9.00"}],
        "shipping_address": None, "note": None,
    }  # fmt: skip
    assert plan.masked_body(b"\xff\x00 not json") == b""


def test_shop_redact_of_a_large_shop_lists_its_ids_in_one_statement(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget
) -> None:
    """15,000 events: their ids (over 256 KiB) exceed both the URL limit of server-side
    parameters and ClickHouse's default query size; the job binds them into the body."""
    orders = [
        raw_event_row(
            _envelope(stores.tenant, "orders/create", f"ev-large-order-{n:05}",
                      {"id": n, "email": f"buyer{n}@example.com"}, SHOP, T0)
        )
        for n in range(15_000)
    ]  # fmt: skip
    _insert(stores.client, "raw_events", orders)
    _request(stores, shared_fixtures, "shop/redact", "ev-redact-large")
    with psycopg.connect(pg_target.url) as conn:
        outcomes = job.run(stores.client, conn, KEY)
    assert [o.raw_events for o in outcomes] == [15_001]
    assert _traces(stores.client, stores.tenant, "@example.com") == 0


def test_the_inbox_lets_a_redaction_rewrite_only_a_letters_event(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget
) -> None:
    _letters(stores, shared_fixtures, pg_target.url)
    with psycopg.connect(pg_target.url) as conn:
        (letter,) = conn.execute(
            "SELECT id FROM exceptions WHERE tenant_id = %s AND event_id = 'ev-jane-late'",
            (stores.tenant,),
        ).fetchone() or (None,)
        for flag, change in (
            ("off", "event = '{}'::jsonb"),  # not declared a redaction
            ("on", "reason = 'forged'"),  # a redaction touching more than the letter
            ("on", "resolved_at = now(), resolved_by = 'u', resolution = 'x'"),
        ):
            with pytest.raises(psycopg.errors.RaiseException):
                _update(conn, flag, change, letter)
        _update(conn, "on", "event = '{}'::jsonb", letter)
        assert conn.execute("SELECT event FROM exceptions WHERE id = %s", (letter,)).fetchone() == (
            {},
        )


def _update(conn: psycopg.Connection[Any], flag: str, change: str, letter: str) -> None:
    with conn.transaction():
        conn.execute(f"SET LOCAL refstream.redaction = '{flag}'")
        conn.execute(f"UPDATE exceptions SET {change} WHERE id = %s", (letter,))


def test_a_failing_request_does_not_hold_up_the_others(
    stores: Stores, shared_fixtures: Any, pg_target: PgTarget
) -> None:
    """A request that cannot be recorded (its tenant is unknown to PostgreSQL) stays pending
    and is named; the one before it keeps its committed record, the run goes on."""
    _seed(stores, shared_fixtures)
    stray = _envelope(
        "t_unknown_tenant", "shop/redact", "ev-redact-stray",
        {"shop_id": 1, "shop_domain": SHOP}, SHOP, T0 + timedelta(days=4),
    )  # fmt: skip
    _insert(stores.client, "raw_events", [raw_event_row(stray)])
    _request(stores, shared_fixtures, "customers/redact", "ev-redact-after")
    with psycopg.connect(pg_target.url) as conn:
        with pytest.raises(job.RequestsFailed) as failure:
            job.run(stores.client, conn, KEY)
        assert [r.event_id for r in failure.value.failed] == ["ev-redact-stray"]
        assert [o.request.event_id for o in failure.value.outcomes] == ["ev-redact-after"]
        assert [r.event_id for r in job.pending(stores.client, conn)] == ["ev-redact-stray"]
    with psycopg.connect(pg_target.url) as other:
        recorded = other.execute(
            "SELECT request_event_id FROM redactions WHERE tenant_id = %s", (stores.tenant,)
        ).fetchall()
    assert recorded == [("ev-redact-after",)]
    assert _traces(stores.client, stores.tenant, "bob.norman") == 0
