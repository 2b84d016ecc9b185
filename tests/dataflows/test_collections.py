"""Collection membership at decision time (`dataflows.commission.collections`) and in the
configuration snapshot, and the edit path inside bytewax: an edit keeps the decided collections
of the lines the order had, a new line gets the membership of the edit's time."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from dataflows.attribution.events import Event, event_from_envelope
from dataflows.attribution.local import builder
from dataflows.commission.collections import with_collections
from dataflows.config import ConfigSnapshot, TenantConfig, build_snapshot
from schemas.conversion import Conversion, ConversionLine
from schemas.events.envelope import EventEnvelope
from schemas.ledger import CommissionAccrual
from tests.dataflows.builders import T0, days, kinds, order_body, rules_body, shopify
from tests.dataflows.test_flow import TENANT, run

SHOP = f"{TENANT}.myshopify.com"


def conversion(*lines: ConversionLine) -> Conversion:
    return Conversion(
        tenant_id="t1", order_id="1", occurred_at=T0, currency="USD", lines=lines,
        source_event_id="e1",
    )  # fmt: skip


def line(line_id: str, product: str | None, collections: tuple[str, ...] = ()) -> ConversionLine:
    return ConversionLine(
        line_id=line_id, product_id=product, collection_ids=collections, quantity=1,
        unit_price=Decimal("10"),
    )  # fmt: skip


def test_lines_get_their_products_collections() -> None:
    order = conversion(line("1", "p1"), line("2", "p2"), line("3", None))
    out = with_collections(order, {"p1": ("c1", "c2")})
    assert [entry.collection_ids for entry in out.lines] == [("c1", "c2"), (), ()]
    assert with_collections(order, {}) is order  # nothing known: the same object
    assert with_collections(order, {"p9": ("c1",)}) is order


def test_an_edit_keeps_the_decided_collections_of_the_lines_it_had() -> None:
    decided = with_collections(conversion(line("1", "p1")), {"p1": ("old",)})
    edited = conversion(line("1", "p1"), line("2", "p1"), line("3", "p3"))
    out = with_collections(edited, {"p1": ("new",), "p3": ("c3",)}, decided=decided)
    assert [entry.collection_ids for entry in out.lines] == [("old",), ("new",), ("c3",)]
    # A line whose product changed under the same id is a new line.
    swapped = with_collections(conversion(line("1", "p3")), {"p3": ("c3",)}, decided=decided)
    assert swapped.lines[0].collection_ids == ("c3",)


def test_snapshot_keeps_membership_per_shop_and_versions_it() -> None:
    rows = [
        ("t1", "a.myshopify.com", "c1", ["p1", "p2"]),
        ("t1", "a.myshopify.com", "c2", ["p1"]),
        ("t1", "b.myshopify.com", "c9", ["p1"]),
        ("t2", "z.myshopify.com", "c1", ["p5"]),
    ]
    snapshot = build_snapshot([], [], [], [], collections=rows)
    tenant = snapshot.tenant("t1")
    assert tenant.product_collections("a.myshopify.com") == {"p1": ("c1", "c2"), "p2": ("c1",)}
    assert tenant.product_collections("b.myshopify.com") == {"p1": ("c9",)}
    assert tenant.product_collections("other.myshopify.com") == {}
    assert tenant.product_collections(None) == {"p1": ("c1", "c2", "c9"), "p2": ("c1",)}
    assert snapshot.tenant("t2").product_collections(None) == {"p5": ("c1",)}
    assert build_snapshot([], [], [], [], collections=rows[:1]).version != snapshot.version


def config(membership: dict[str, list[str]]) -> ConfigSnapshot:
    programs = [(TENANT, "prg_main", 30, "last_click", True, 0, 30, "USD")]
    body = rules_body() | {
        "collection_rates": [{"collection_id": "c1", "rate": {"kind": "percent", "value": "20"}}]
    }
    return build_snapshot(
        programs, [(TENANT, "ANA", "prg_main", "agt_ana")], [(TENANT, "agt_ana", None, None)],
        [(TENANT, "rule_prg_main", 1, "prg_main", body)], tenant_rows=[(TENANT, "USD")],
        collections=[(TENANT, SHOP, c, products) for c, products in membership.items()],
    )  # fmt: skip


def order(topic: str, lines: list[tuple[int, int, str, str]], event_id: str) -> EventEnvelope:
    body: dict[str, Any] = order_body(
        6001, at=T0, coupon="ANA", lines=[(i, q, p) for i, q, p, _ in lines]
    )
    for item, (*_, product) in zip(body["line_items"], lines, strict=True):
        item["product_id"] = int(product)
    at = T0 + days(1) if event_id != "o1" else T0
    body["updated_at"] = at.isoformat()
    return shopify(TENANT, topic, body, at=at, entity="6001", event_id=event_id)


def test_an_edit_prices_a_new_line_by_its_collection_and_leaves_the_others() -> None:
    created = order("orders/create", [(1, 1, "100.00", "11")], "o1")
    edited = order("orders/updated", [(1, 1, "100.00", "11"), (2, 1, "50.00", "22")], "o2")
    # Product 11 is in c1 (20 %); product 22 joins c1 too: the new line earns 20 %.
    result = run([created, edited], config({"c1": ["11", "22"]}))
    assert sum(e.amount for e in result.entries) == Decimal("30.00")
    assert not result.dead
    # Decided while product 11 was in no collection: line 1 keeps its 10 % when the edit comes
    # under a configuration where it is in c1 (nothing retroactive); the new line gets 20 %.
    decided = run([created], config({}))
    assert [e.amount for e in decided.entries] == [Decimal("10.00")]
    assert repriced_after(created, edited, {"c1": ["11", "22"]}) == {
        ("1", "accrual"): Decimal("10.00"),
        ("2", "reprice"): Decimal("10.00"),
    }


def repriced_after(
    created: EventEnvelope, edited: EventEnvelope, membership: dict[str, list[str]]
) -> dict[tuple[str | None, str], Decimal]:
    """The entries when `created` is decided with no membership and `edited` arrives after the
    configuration gained `membership` (one dataflow, its configuration changing in between)."""
    provider = Switchable(config({}))
    logic = builder(provider, None, lambda: 0)(None)
    outputs = list(logic.on_item(parsed(created))[0])
    provider.snapshot = config(membership)
    outputs += logic.on_item(parsed(edited))[0]
    entries = [item for item in outputs if isinstance(item, CommissionAccrual)]
    assert "dead" not in kinds(outputs)
    return {(e.line_item_id, e.kind.value): e.amount for e in entries}


class Switchable:
    """A configuration provider whose snapshot the test replaces (a refresh between events)."""

    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self.snapshot = snapshot

    def tenant(self, tenant_id: str) -> TenantConfig:
        return self.snapshot.tenant(tenant_id)


def parsed(envelope: EventEnvelope) -> Event:
    event = event_from_envelope(envelope, envelope.to_bytes())
    assert event is not None
    return event
