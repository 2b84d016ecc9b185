"""The GDPR redaction job on an archive of realistic size (issue #17).

    .venv/bin/python -m bench.redaction [--orders 50000] [--customers 5000]

Starts a chDB front in a scratch directory and a fresh PostgreSQL database, archives `--orders`
Shopify orders (the full `order_full_450789469.json` fixture, about 17 KB each, spread over
`--customers` customers, each order with a click and a conversion) in one shop, then times:
finding the pending requests, one `customers/redact` (its orders, clicks and the request
rewritten) and one `shop/redact` of the whole shop. Checks the customer's email is gone from
every version of every row; prints figures with the load average.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import clickhouse_connect
import orjson
import psycopg

from api.redaction import job
from dataflows.sinks.clickhouse import COLUMNS, raw_event_row
from deploy import migrations
from deploy.clickhouse_http import start_subprocess, stop_subprocess
from schemas.events.envelope import EventEnvelope, Source
from schemas.settings import Settings
from tests.fixtures import DATA
from tests.fixtures.postgres import SERVER_URL, drop_database, migrated_database

TENANT, SHOP = "t_bench", "bench.myshopify.com"
T0 = datetime(2026, 11, 1, tzinfo=UTC)
BATCH = 5000


def _email(customer: int) -> str:
    return f"customer{customer}@mail.example.com"


def _wrap(kind: str, event_id: str, body: dict[str, Any], at: datetime) -> EventEnvelope:
    return EventEnvelope.wrap(
        orjson.dumps(body), event_id=event_id, source=Source.SHOPIFY, kind=kind,
        tenant_id=TENANT, shop=SHOP, entity_id=event_id, occurred_at=at, received_at=at,
    )  # fmt: skip


def seed(client: Any, orders: int, customers: int) -> None:
    template = orjson.loads((DATA / "shopify" / "order_full_450789469.json").read_bytes())
    for start in range(0, orders, BATCH):
        events, clicks, conversions = [], [], []
        for n in range(start, min(start + BATCH, orders)):
            customer = n % customers
            at = T0 + timedelta(seconds=n)
            body = template | {
                "id": 10_000_000 + n, "email": _email(customer), "contact_email": _email(customer),
                "customer": template["customer"] | {"id": customer, "email": _email(customer)},
            }  # fmt: skip
            events.append(raw_event_row(_wrap("orders/create", f"ev-{n}", body, at)))
            clicks.append((TENANT, f"clk-{n}", "lnk", "p", "a", SHOP, f"vis-{customer}", at,
                           None, None, "ua", f"ip-{customer}", False, False, 1))  # fmt: skip
            conversions.append((
                TENANT, f"cv-{n}", SHOP, str(10_000_000 + n), "#1", at, at, "click", "a", "p",
                f"clk-{n}", None, str(customer), False, "USD", Decimal("10.00"), Decimal(1),
                f"ev-{n}", 1, "lnk",
            ))  # fmt: skip
        client.insert("raw_events", events, column_names=list(COLUMNS["raw_events"]))
        client.insert("clicks", clicks, column_names=list(COLUMNS["clicks"]))
        client.insert("conversions", conversions, column_names=list(COLUMNS["conversions"]))


def request(client: Any, kind: str, event_id: str, body: dict[str, Any]) -> None:
    envelope = _wrap(kind, event_id, body, T0 + timedelta(days=20))
    client.insert("raw_events", [raw_event_row(envelope)], column_names=list(COLUMNS["raw_events"]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--customers", type=int, default=5_000)
    args = parser.parse_args()
    pg = migrated_database(SERVER_URL)
    with tempfile.TemporaryDirectory() as scratch:
        process, port = start_subprocess(Path(scratch) / "data")
        try:
            settings = pg.settings(clickhouse_url=f"http://default:@127.0.0.1:{port}/bench")
            migrations.migrate_clickhouse(settings)
            client = clickhouse_connect.get_client(
                host="127.0.0.1", port=port, database="bench", send_receive_timeout=3600
            )
            with psycopg.connect(pg.url) as conn:
                conn.execute("INSERT INTO tenants (id, name, slug) VALUES (%s, 'B', 'bench')",
                             (TENANT,))  # fmt: skip
                conn.commit()
                run(client, conn, settings, args.orders, args.customers)
        finally:
            stop_subprocess(process)
            drop_database(pg)


def run(client: Any, conn: Any, settings: Settings, orders: int, customers: int) -> None:
    began = time.perf_counter()
    seed(client, orders, customers)
    mb = (
        client.command(
            "SELECT sum(data_uncompressed_bytes) FROM system.parts "
            "WHERE database = 'bench' AND table = 'raw_events' AND active"
        )
        / 1e6
    )
    print(f"seeded {orders:,} orders of {customers:,} customers ({mb:,.0f} MB of bodies) "
          f"in {time.perf_counter() - began:.1f} s")  # fmt: skip
    key = job.key_of(settings)
    customer = 42
    request(client, "customers/redact", "ev-req-customer", {
        "shop_id": 1, "shop_domain": SHOP,
        "customer": {"id": customer, "email": _email(customer), "phone": None},
        "orders_to_redact": [],
    })  # fmt: skip
    began = time.perf_counter()
    pending = job.pending(client, conn)
    found_s = time.perf_counter() - began
    began = time.perf_counter()
    outcome = job.execute(client, conn, pending[0], key)
    customer_s = time.perf_counter() - began
    left = client.command("SELECT count() FROM raw_events WHERE positionCaseInsensitive(body, "
                          "{e:String}) > 0", parameters={"e": _email(customer) + '"'})  # fmt: skip
    assert left == 0, left
    print(f"pending requests found in {found_s * 1000:.0f} ms")
    print(f"customers/redact: {outcome.raw_events} events, {outcome.clicks} clicks "
          f"in {customer_s:.2f} s")  # fmt: skip
    request(client, "shop/redact", "ev-req-shop", {"shop_id": 1, "shop_domain": SHOP})
    began = time.perf_counter()
    outcome = job.execute(client, conn, job.pending(client, conn)[0], key)
    shop_s = time.perf_counter() - began
    left = client.command("SELECT count() FROM raw_events WHERE "
                          "position(body, 'mail.example.com') > 0")  # fmt: skip
    assert left == 0, left
    print(f"shop/redact: {outcome.raw_events:,} events, {outcome.clicks:,} clicks "
          f"in {shop_s:.1f} s")  # fmt: skip
    print("load average: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
