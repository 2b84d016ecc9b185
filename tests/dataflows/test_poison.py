"""No single event stops the engine: each poison below is dead-lettered with its reason, and a
well-formed order sent after all of them is still attributed and booked (real broker, ClickHouse
and PostgreSQL). Before the bounds, the first one stopped the flow for every tenant for good."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
import pytest
from bytewax.testing import run_main
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

from dataflows.attribution.flow import build
from dataflows.attribution.local import LocalAttribution, builder
from dataflows.config import StaticConfig
from dataflows.sinks import clickhouse, postgres
from dataflows.sinks.clickhouse import COLUMNS, ClickHouseSink
from dataflows.sinks.deadletter import isolate
from dataflows.stages.base import Tuning
from deploy.demo import read_to_end
from schemas.events.envelope import EventEnvelope, Source
from schemas.ledger import CommissionAccrual, EntryKind
from schemas.settings import Settings
from tests.dataflows.builders import (
    T0,
    click,
    click_id,
    days,
    kind_of,
    order,
    order_body,
    refund,
    snapshot,
)
from tests.dataflows.conftest import Tenant, Topics, ledger_totals, produce


def poisons(tenant: str, cites: str) -> dict[str, dict[str, Any]]:
    """Order bodies that once stopped the flow or could: name → body."""

    def body(n: int, **line: Any) -> dict[str, Any]:
        b = order_body(n, at=T0 + days(1), cites=cites)
        b["line_items"][0].update(line)
        return b

    bodies = {
        "overflowing price": body(3001, price="1000000000000000.00"),
        "exponent price": body(3002, price="1E+999999"),
        "NaN price": body(3003, price="NaN"),
        "Infinity price": body(3004, price="Infinity"),
        "negative quantity": body(3005, quantity=-5),
        "quantity beyond int64": body(3006, quantity=10**30),
        "deeply nested line": body(3007, properties=True),
        "year 2999": body(3008),
        "year 10000": body(3009),
    }
    bodies["year 2999"]["processed_at"] = "2999-01-01T00:00:00+00:00"
    bodies["year 10000"]["processed_at"] = "10000-01-01T00:00:00+00:00"
    return bodies


def test_poison_orders_are_dead_lettered_and_the_flow_goes_on(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    cid = click_id(f"{t.tenant_id}-p")
    items: list[tuple[str, Any]] = [
        (topics.clicks, click(t.tenant_id, cid, at=T0, agent=t.ana, program=t.program))
    ]
    bad = poisons(t.tenant_id, cid)
    for body in bad.values():
        # The standard library writes what orjson refuses (an int beyond 64 bits); the nesting
        # is spliced in as text (deeper than any JSON writer's recursion allows).
        nested = body["line_items"][0].pop("properties", None)
        raw = json.dumps(body).encode()
        if nested is not None:
            deep = b"[" * 3000 + b"1" + b"]" * 3000
            raw = raw.replace(b'"price"', b'"properties": ' + deep + b', "price"', 1)
        env = EventEnvelope.wrap(
            raw, event_id=f"ev-poison-{body['id']}", source=Source.SHOPIFY, kind="orders/create",
            tenant_id=t.tenant_id, shop=f"{t.tenant_id}.myshopify.com", entity_id=str(body["id"]),
            occurred_at=T0 + days(1), received_at=T0 + days(1),
        )  # fmt: skip
        items.append((topics.orders, env))
    # The well-formed order after every poison: ana 10% of 100.00, her manager 5% of that.
    items.append((topics.orders, order(t.tenant_id, 3100, at=T0 + days(2), cites=cid)))
    produce(stack_settings, items)

    run_main(build(stack_settings, tail=False, input_topics=topics.inputs,
                   deadletter_topic=topics.deadletter))  # fmt: skip

    assert ledger_totals(stack_settings, t.tenant_id) == {
        t.ana: Decimal("10.00"), t.boss: Decimal("0.50"), "#rows": Decimal(2),
    }  # fmt: skip
    dead = [orjson.loads(m.value() or b"") for m in
            read_to_end(stack_settings.kafka_bootstrap, topics.deadletter)]  # fmt: skip
    reasons = [d["reason"] for d in dead]
    assert len(reasons) == len(bad), reasons
    # Each dead letter keeps what is needed to process the order again once fixed.
    assert all(d["envelope"] is not None or d["raw"] for d in dead)
    text = "\n".join(reasons)
    for needle in ("1000000000000000.00", "1E+999999", "2999-01-01", "quantity"):
        assert needle in text


class _BrokenConfig:
    """A configuration whose reads fail: stands for any bug one event can reach."""

    def tenant(self, tenant_id: str) -> Any:
        raise KeyError(f"no configuration for {tenant_id}")


def test_an_exception_in_the_stateful_step_dead_letters_that_event_only() -> None:
    from dataflows.attribution.events import event_from_envelope

    logic: LocalAttribution = builder(_BrokenConfig(), Tuning(), lambda: 0)(None)  # type: ignore[arg-type]
    env = order("t_x", 1, at=T0, lines=[(1, 1, "10.00")])
    event = event_from_envelope(env, env.to_bytes())
    assert event is not None
    out, discard = logic.on_item(event)
    dead, *rest = list(out)
    assert (kind_of(dead), rest, discard) == ("dead", [], False)
    assert dead.reason.startswith(f"state: order {env.event_id}: KeyError")
    assert dead.envelope is not None
    assert dead.envelope.event_id == env.event_id


class _RatesBrokenFor:
    """A tenant configuration whose exchange rates fail for one currency: a bug that only the
    order books' stage reaches (the tenant decides the order without reading a rate)."""

    def __init__(self, config: StaticConfig, currency: str) -> None:
        self.config, self.currency = config, currency

    def tenant(self, tenant_id: str) -> Any:
        return _RatesBroken(self.config.tenant(tenant_id), self.currency)


class _RatesBroken:
    def __init__(self, cfg: Any, currency: str) -> None:
        self._cfg, self._currency = cfg, currency

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cfg, name)

    def fx_rate(self, currency: str, at: datetime) -> Decimal | None:
        if currency == self._currency:
            raise ArithmeticError("the rate table is corrupt")
        rate: Decimal | None = self._cfg.fx_rate(currency, at)
        return rate


def test_an_exception_in_an_order_book_dead_letters_that_order_and_the_books_go_on() -> None:
    from dataflows.attribution.events import event_from_envelope

    config = _RatesBrokenFor(StaticConfig(snapshot("t_x")), "EUR")
    logic = builder(config, Tuning(), lambda: 0)(None)  # type: ignore[arg-type]

    def feed(env: EventEnvelope) -> list[Any]:
        event = event_from_envelope(env, env.to_bytes())
        assert event is not None
        return list(logic.on_item(event)[0])

    feed(click("t_x", click_id(1), at=T0))
    (letter,) = feed(order("t_x", 1001, at=T0 + days(1), cites=click_id(1), currency="EUR"))
    assert kind_of(letter) == "dead"
    assert letter.reason.startswith("state: order 1001 (")
    assert "ArithmeticError: the rate table is corrupt" in letter.reason
    facts = orjson.loads(base64.b64decode(letter.raw or ""))
    assert (facts["tenant_id"], facts["order_id"]) == ("t_x", "1001")
    # The next order of the tenant, in the same bucket or another, books as usual.
    booked = feed(order("t_x", 1002, at=T0 + days(1), cites=click_id(1)))
    assert "entry" in [kind_of(item) for item in booked]
    # A follow-up of the order whose book failed is reported, not lost.
    (orphan,) = feed(refund("t_x", 1001, 9, [(1, 1)], at=T0 + days(2)))
    assert orphan.reason.startswith("orphan: refund of order 1001, which has no book")


def test_isolate_writes_the_good_items_and_rejects_only_the_refused_ones() -> None:
    written: list[int] = []
    rejected: list[int] = []

    def write(items: Any) -> None:
        if 13 in items:
            raise DataError("13 is refused")
        written.extend(items)

    isolate(list(range(40)), write, lambda e: isinstance(e, DataError),
            lambda item, _: rejected.append(item))  # fmt: skip
    assert (sorted(written), rejected) == ([i for i in range(40) if i != 13], [13])
    with pytest.raises(OperationalError):  # an outage is not a row's fault: it propagates
        isolate([1], lambda _: (_ for _ in ()).throw(OperationalError("down")),
                clickhouse.is_content_error, lambda *_: None)  # fmt: skip
    assert clickhouse.is_content_error(DatabaseError("Code: 407. DECIMAL_OVERFLOW"))


def test_sinks_dead_letter_a_row_the_store_refuses_and_write_the_rest(
    stack_settings: Settings, topics: Topics, tenant: Tenant
) -> None:
    """Rows that got past every bound but that the store still refuses (here: built by hand)."""
    agent, tenant = tenant.ana, tenant.tenant_id
    at = datetime(2026, 1, 1, tzinfo=UTC)
    good, huge = Decimal("12.5000"), Decimal("1" + "0" * 16)
    row = dict.fromkeys(COLUMNS["refunds"])
    rows = []
    for n, amount in enumerate((good, huge, good)):
        row.update(tenant_id=tenant, refund_id=f"r{n}", order_id="o", occurred_at=at, amount=amount,
                   line_count=1, source_event_id=f"e{n}", version=1)  # fmt: skip
        rows.append(tuple(row.values()))
    entry = dict.fromkeys(COLUMNS["commission_events"])
    entry_rows = []
    for n, amount in enumerate((good, huge)):
        entry.update(tenant_id=tenant, entry_id=f"ch_{n}", agent_id=agent, conversion_id="cv",
                     order_id="o", kind="accrual", status="pending", level=0, amount=amount,
                     currency="USD", fx_rate=Decimal(1), occurred_at=at, source_event_id=f"e{n}",
                     version=1)  # fmt: skip
        entry_rows.append(tuple(entry.values()))
    part = ClickHouseSink(stack_settings, topics.deadletter).build("t", 0, 1)
    try:  # two tables in one pass: inserted concurrently, each isolating its refused row
        part.write_batch([("refunds", rows[:2]), ("commission_events", entry_rows),
                          ("refunds", rows[2:])])  # fmt: skip
    finally:
        part.close()
    client = clickhouse.client_for(stack_settings)
    stored = client.query("SELECT refund_id FROM refunds FINAL WHERE tenant_id = {t:String}"
                          " ORDER BY refund_id", parameters={"t": tenant}).result_rows  # fmt: skip
    entries_stored = client.query(
        "SELECT entry_id FROM commission_events FINAL WHERE tenant_id = {t:String}",
        parameters={"t": tenant},
    ).result_rows
    client.close()
    assert stored == [("r0",), ("r2",)]
    assert entries_stored == [("ch_0",)]

    ledger = postgres.LedgerSink(stack_settings.postgres_url, stack_settings.kafka_bootstrap,
                                 topics.deadletter).build("t", 0, 1)  # fmt: skip
    entries = [
        CommissionAccrual(
            entry_id=f"ce_{tenant}_{n}",
            tenant_id=tenant,
            agent_id=agent,
            program_id=None,
            conversion_id="cv",
            order_id="o",
            kind=EntryKind.ACCRUAL,
            amount=amount,
            currency="USD",
            occurred_at=at,
            source_event_id=f"e{n}",
        )
        for n, amount in enumerate((good, huge, good))
    ]
    try:
        ledger.write_batch([(tenant, list(entries))])
    finally:
        ledger.close()
    with psycopg.connect(stack_settings.postgres_url) as conn:
        ids = conn.execute("SELECT entry_id FROM ledger_entries WHERE tenant_id = %s"
                           " ORDER BY entry_id", (tenant,)).fetchall()  # fmt: skip
    assert ids == [(f"ce_{tenant}_0",), (f"ce_{tenant}_2",)]
    dead = [orjson.loads(m.value() or b"") for m in
            read_to_end(stack_settings.kafka_bootstrap, topics.deadletter)]  # fmt: skip
    assert [d["stage"] for d in dead] == ["sink:clickhouse", "sink:clickhouse", "sink:ledger"]
    refused = sorted((d["reason"], orjson.loads(base64.b64decode(d["raw"]))) for d in dead[:2])
    assert "commission_events row refused" in refused[0][0]
    assert refused[0][1]["entry_id"] == "ch_1"
    assert "refunds row refused" in refused[1][0]
    assert refused[1][1]["refund_id"] == "r1"
    assert f"ledger entry ce_{tenant}_1 refused" in dead[2]["reason"]
