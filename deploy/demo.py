"""The demo's traffic: a small, deterministic sample of real-shaped events sent through the
ingress, a live trickle of the same kinds, and the checks that read the results back.

`send` makes referral clicks (`GET /r/{code}`), signed Shopify orders (some citing a click, some
with an agent's coupon), refunds and Odoo invoices over HTTP, exactly as Shopify, shoppers and
Odoo would; the ingress writes them to Kafka. `live` keeps sending such events at a steady rate
until told to stop. The company they belong to is set up by `deploy.demo_company`.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
import httpx
import orjson
import psycopg
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from deploy.demo_company import DemoSetup
from ingest.shopify import sign
from schemas.events.envelope import EventEnvelope
from schemas.ids import random_id
from schemas.settings import Settings
from schemas.topics import Topic

PRODUCTS = (("SKU-CHAIR", Decimal("249.00")), ("SKU-DESK", Decimal("899.00")),
            ("SKU-LAMP", Decimal("59.90")), ("SKU-MAT", Decimal("34.50")))  # fmt: skip
INVOICED_ORDERS = 3  # referred orders whose ERP sale order and paid invoice the demo sends
STREAMS = ("clicks", "orders", "refunds", "erp")


@dataclass
class DemoReport:
    sent: Counter[str] = field(default_factory=Counter)
    acked: Counter[str] = field(default_factory=Counter)
    event_ids: dict[str, set[str]] = field(default_factory=dict)
    order_ids: list[str] = field(default_factory=list)
    invoiced: list[str] = field(default_factory=list)  # orders whose Odoo invoice is paid

    def ack(self, stream: str, event_id: str) -> None:
        self.acked[stream] += 1
        self.event_ids.setdefault(stream, set()).add(event_id)


def send(
    settings: Settings, setup: DemoSetup, *, clicks: int, orders: int, seed_value: int = 7
) -> DemoReport:
    """Send the sample through the ingress over HTTP; returns what was sent and acknowledged."""
    rng = random.Random(seed_value)
    report = DemoReport()
    click_ids: list[str] = []
    run = secrets.token_hex(4)
    with httpx.Client(base_url=ingest_url(settings), timeout=10) as client:
        _wait_for_registration(client, setup)
        for n in range(clicks):
            # Half the visitors click twice; each run brings new visitors (same IP, so the
            # user agent tells them apart for the ingress's duplicate-click window).
            visitor = f"demo {run} visitor {n % max(1, clicks // 2)}"
            click_id = _click(client, report, rng.choice(setup.link_codes), visitor)
            if click_id is not None:
                click_ids.append(click_id)
        first_order = int(time.time() * 1000)  # new order ids every run: a demo run adds orders
        for n in range(orders):
            # Placed now: after the clicks (a click after its order never counts).
            now = datetime.now(UTC)
            body = _order_body(rng, first_order + n, now, click_ids, setup.coupons)
            report.order_ids.append(str(first_order + n))
            if _referred(body) and len(report.invoiced) < INVOICED_ORDERS:
                report.invoiced.append(str(first_order + n))
            _post_shopify(client, setup, report, "orders", "orders/create", body)
            if n % 10 == 3:
                _post_shopify(client, setup, report, "refunds", "refunds/create",
                              _refund_body(body, now))  # fmt: skip
        _post_odoo(client, setup, report, report.invoiced)
    return report


# The live trickle's mix of events: a paid invoice is two Odoo notifications (sale order, invoice).
LIVE_MIX = (("click", 0.55), ("order", 0.30), ("refund", 0.05), ("invoice", 0.10))


def live(settings: Settings, setup: DemoSetup, *, rate: float, stop: threading.Event) -> DemoReport:
    """Send a realistic trickle through the ingress at about `rate` events per second until
    `stop` is set: referral clicks, orders (citing a recent click, with a coupon, or neither),
    refunds of recent orders and paid Odoo invoices of recent referred orders. Returns what was
    sent and acknowledged."""
    rng = random.Random()
    report = DemoReport()
    clicks: deque[str] = deque(maxlen=100)  # recent click ids, for orders to cite
    orders: deque[dict[str, object]] = deque(maxlen=50)  # recent orders, refundable once
    referred: deque[str] = deque(maxlen=50)  # recent referred orders, invoiced once
    next_order = int(time.time() * 1000)
    run = secrets.token_hex(4)
    due = time.monotonic()
    with httpx.Client(base_url=ingest_url(settings), timeout=10) as client:
        _wait_for_registration(client, setup)
        while not stop.is_set():
            before = sum(report.sent.values())
            kind = _live_kind(rng, has_orders=bool(orders), has_referred=bool(referred))
            if kind == "click":
                visitor = f"live {run} visitor {sum(report.sent.values())}"
                click_id = _click(client, report, rng.choice(setup.link_codes), visitor)
                if click_id is not None:
                    clicks.append(click_id)
            elif kind == "order":
                now = datetime.now(UTC)
                body = _order_body(rng, next_order, now, list(clicks), setup.coupons)
                report.order_ids.append(str(next_order))
                next_order += 1
                _post_shopify(client, setup, report, "orders", "orders/create", body)
                orders.append(body)
                if _referred(body):
                    referred.append(str(body["id"]))
            elif kind == "refund":
                order = orders.popleft()
                _post_shopify(client, setup, report, "refunds", "refunds/create",
                              _refund_body(order, datetime.now(UTC)))  # fmt: skip
            else:
                order_id = referred.popleft()
                report.invoiced.append(order_id)
                _post_odoo(client, setup, report, [order_id])
            # A steady pace: each event is due 1/rate after the previous one was due (an invoice
            # is two); after a stall it resumes the pace instead of catching up in a burst.
            due = max(due + (sum(report.sent.values()) - before) / rate, time.monotonic() - 1)
            stop.wait(max(0.0, due - time.monotonic()))
    return report


def _live_kind(rng: random.Random, *, has_orders: bool, has_referred: bool) -> str:
    """The next live event's kind, drawn from `LIVE_MIX` among those possible now."""
    blocked = {"refund"} if not has_orders else set()
    if not has_referred:
        blocked.add("invoice")
    kinds = [kind for kind, _ in LIVE_MIX if kind not in blocked]
    weights = [weight for kind, weight in LIVE_MIX if kind not in blocked]
    return rng.choices(kinds, weights)[0]


def ingest_url(settings: Settings) -> str:
    return f"http://{settings.ingest_host}:{settings.ingest_port}"


def _wait_for_registration(client: httpx.Client, setup: DemoSetup, timeout: float = 10) -> None:
    # The ingress reloads registrations on an announcement; give it a moment to see the shop.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get(f"/r/{setup.link_codes[0]}").status_code == 302:
            return
        time.sleep(0.2)
    raise RuntimeError("the ingress does not know the demo links (is it running?)")


def _referred(order: dict[str, object]) -> bool:
    """Whether the order carries a coupon or cites a click (attributed, normally)."""
    return bool(order["discount_codes"] or order["landing_site"])


def _click(client: httpx.Client, report: DemoReport, code: str, visitor: str) -> str | None:
    """A shopper follows a referral link; returns the click id when the ingress recorded it."""
    response = client.get(f"/r/{code}", headers={"User-Agent": f"Mozilla/5.0 ({visitor})"})
    report.sent["clicks"] += 1
    if response.status_code != 302:
        return None
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["rsclid"][0]
    report.ack("clicks", click_id)
    return click_id


def _post_shopify(
    client: httpx.Client, setup: DemoSetup, report: DemoReport, stream: str, topic: str,
    body: dict[str, object], secret_reload: float = 10,
) -> None:  # fmt: skip
    raw = orjson.dumps(body)
    headers = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": topic,
        "X-Shopify-Shop-Domain": setup.shop,
        "X-Shopify-Hmac-Sha256": sign(setup.secret, raw),
        "X-Shopify-Event-Id": random_id("demo"),
        "X-Shopify-API-Version": "2026-07",
    }
    report.sent[stream] += 1
    deadline = time.monotonic() + secret_reload
    while True:
        response = client.post("/webhooks/shopify", content=raw, headers=headers)
        # A rerun rotates the shop's secret: until the ingress has reloaded it, it refuses the
        # new signature, and retrying is what Shopify would do.
        if response.status_code != 401 or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    if response.status_code == 200 and response.json()["status"] == "accepted":
        report.ack(stream, response.json()["event_id"])


def _post_odoo(
    client: httpx.Client, setup: DemoSetup, report: DemoReport, order_ids: list[str]
) -> None:
    for record in _odoo_records(order_ids):
        response = client.post(f"/webhooks/odoo/{setup.odoo_token}", content=record,
                               headers={"Content-Type": "application/json"})  # fmt: skip
        report.sent["erp"] += 1
        if response.status_code == 200 and response.json()["status"] == "accepted":
            report.ack("erp", response.json()["event_id"])


def _order_body(
    rng: random.Random, order_id: int, at: datetime, click_ids: list[str], coupons: tuple[str, ...]
) -> dict[str, object]:
    sku, price = rng.choice(PRODUCTS)
    qty = rng.randint(1, 5)
    total = price * qty
    roll = rng.random()
    coupon = (
        [{"code": rng.choice(coupons), "amount": "0.00", "type": "percentage"}]
        if roll < 0.3
        else []
    )
    landing = (
        f"/collections/office?rsclid={rng.choice(click_ids)}" if click_ids and roll > 0.5 else None
    )
    stamp = at.isoformat()
    return {
        "id": order_id, "name": f"#{order_id}", "email": f"buyer{order_id}@example.com",
        "created_at": stamp, "processed_at": stamp, "updated_at": stamp, "currency": "USD",
        "total_price": str(total), "subtotal_price": str(total), "total_discounts": "0.00",
        "total_tax": "0.00", "financial_status": "paid", "discount_codes": coupon,
        "landing_site": landing, "customer": {"id": 900_000 + order_id % 37},
        "line_items": [{"id": order_id * 10, "product_id": 1, "sku": sku, "title": sku,
                        "quantity": qty, "price": str(price), "total_discount": "0.00"}],
    }  # fmt: skip


def _refund_body(order: dict[str, object], at: datetime) -> dict[str, object]:
    line = order["line_items"][0]  # type: ignore[index]
    return {
        "id": int(order["id"]) * 3, "order_id": order["id"],  # type: ignore[call-overload]
        "created_at": at.isoformat(), "processed_at": at.isoformat(),
        "refund_line_items": [{"id": line["id"] + 1, "line_item_id": line["id"], "quantity": 1,
                               "subtotal": float(line["price"]), "total_tax": 0.0}],
    }  # fmt: skip


def _odoo_records(order_ids: list[str]) -> list[bytes]:
    """For each order, what Odoo 17 sends when the shop order becomes an ERP sale order and its
    customer invoice is paid, in Odoo's exact webhook serialisation: the sale order (named
    `S<id>`, created from the shop order `#<id>`), then the posted, paid invoice of `S<id>`."""
    records: list[dict[str, object]] = []
    for order_id in order_ids:
        record_id = int(order_id) % 1_000_000_000
        records.append({
            "_action": "Notify refstream: sale order confirmed(#57)", "_id": record_id,
            "_model": "sale.order", "id": record_id, "name": f"S{order_id}",
            "client_order_ref": f"#{order_id}", "state": "sale",
        })  # fmt: skip
        records.append({
            "_action": "Notify refstream: invoice paid(#58)", "_id": record_id,
            "_model": "account.move", "id": record_id, "invoice_origin": f"S{order_id}",
            "move_type": "out_invoice", "name": f"INV/{order_id}", "payment_state": "paid",
            "state": "posted",
        })  # fmt: skip
    return [json.dumps(r, sort_keys=True).encode() for r in records]


@dataclass(frozen=True, slots=True)
class AgentResult:
    agent_id: str
    conversions: dict[str, int]  # by attribution rule
    commission: Decimal
    approved: Decimal  # of which approved (the paid invoices' orders)


# Per agent: entries of the orders, how many are approved now, and their approved amount.
APPROVALS = """
SELECT e.agent_id, count(*), count(*) FILTER (WHERE s.status = 'approved'),
       coalesce(sum(e.amount) FILTER (WHERE s.status = 'approved'), 0)
FROM ledger_entries e
LEFT JOIN LATERAL (
    SELECT status FROM ledger_status_events WHERE entry_id = e.entry_id ORDER BY id DESC LIMIT 1
) s ON true
WHERE e.tenant_id = %s AND e.order_id = ANY(%s)
GROUP BY e.agent_id
"""


def attribution_results(
    settings: Settings, setup: DemoSetup, report: DemoReport, timeout: float = 90
) -> list[AgentResult]:
    """Wait until the dataflow has decided this run's orders, then read their results back:
    conversions from ClickHouse, commission from the PostgreSQL ledger."""
    expected = len(report.order_ids)
    scope = {"t": setup.tenant_id, "orders": report.order_ids}
    target = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username,
        password=target.password, database=target.database,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        decided = 0
        while time.monotonic() < deadline:
            decided = client.query(
                "SELECT uniqExact(order_id) FROM conversions FINAL WHERE tenant_id = {t:String}"
                " AND order_id IN {orders:Array(String)}",
                parameters=scope,
            ).result_rows[0][0]
            if decided >= expected:
                break
            time.sleep(1)
        else:
            raise TimeoutError(f"the dataflow decided {decided} of {expected} orders")
        rows = client.query(
            "SELECT ifNull(agent_id, '-'), rule, count() FROM conversions FINAL"
            " WHERE tenant_id = {t:String} AND order_id IN {orders:Array(String)} GROUP BY 1, 2",
            parameters=scope,
        ).result_rows
    finally:
        client.close()
    with psycopg.connect(settings.postgres_url, autocommit=True) as conn:
        money: dict[str, Decimal] = dict(conn.execute(
            "SELECT agent_id, sum(amount) FROM ledger_entries WHERE tenant_id = %s"
            " AND order_id = ANY(%s) GROUP BY agent_id", (setup.tenant_id, report.order_ids),
        ).fetchall())  # fmt: skip
        approved = _wait_for_approvals(conn, setup.tenant_id, report.invoiced)
    by_agent: dict[str, dict[str, int]] = {}
    for agent, rule, count in rows:
        by_agent.setdefault(agent, {})[rule] = int(count)
    return [
        AgentResult(
            agent,
            by_agent.get(agent, {}),
            Decimal(money.get(agent, 0)),
            Decimal(approved.get(agent, 0)),
        )
        for agent in sorted(set(by_agent) | set(money))
    ]


def _wait_for_approvals(
    conn: psycopg.Connection[Any], tenant_id: str, invoiced: list[str], timeout: float = 15
) -> dict[str, Decimal]:
    """Approved commission per agent, once every entry of the invoiced orders is approved (the
    paid invoices arrive after their orders), or as far as it got after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        rows = conn.execute(APPROVALS, (tenant_id, invoiced)).fetchall()
        done = all(entries == approved for _, entries, approved, _ in rows)
        if done or time.monotonic() >= deadline:
            return {agent: amount for agent, _, approved, amount in rows if approved}
        time.sleep(0.5)


def in_topics(settings: Settings, report: DemoReport) -> dict[str, int]:
    """How many of the acknowledged events each stream's topic holds."""
    streams = {
        "clicks": Topic.CLICKS,
        "orders": Topic.ORDERS,
        "refunds": Topic.REFUNDS,
        "erp": Topic.ERP,
    }
    found = {}
    for stream, topic in streams.items():
        wanted = report.event_ids.get(stream, set())
        messages = read_to_end(settings.kafka_bootstrap, topic)
        ids = {EventEnvelope.from_bytes(m.value() or b"").event_id for m in messages}
        found[stream] = len(wanted & ids)
    return found


def read_to_end(bootstrap: str, topic: str, timeout: float = 20) -> list[Message]:
    """Every message of `topic`, read from the beginning to the end of every partition.

    (Reads to EOF rather than trusting high watermarks, which the local broker reports wrong.)
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": random_id("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "session.timeout.ms": 6000,
            "log_level": 0,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = set(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        at_eof: set[int] = set()
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while at_eof != partitions and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                    continue
                raise RuntimeError(str(error))
            messages.append(msg)
        if at_eof != partitions:
            raise TimeoutError(f"{topic}: end of partitions {partitions - at_eof} not reached")
        return messages
    finally:
        consumer.close()
