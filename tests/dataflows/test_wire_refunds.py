"""The refund hot path (`wire.decode_refund`: msgspec, only the fields the flow reads) never
disagrees with the contract (`ShopifyRefund`): what msgspec accepts, `ShopifyRefund` accepts with
the same refund facts and the same `refunds` archive row (types and digits compared), unless
`ShopifyRefund` refused only a field the flow does not read (the body is archived as received,
as for orders). The flow's decoder (msgspec, then `ShopifyRefund` for what msgspec refuses)
answers as the contract on every field it reads: hypothesis mutations of a real Shopify refund.
And the flow decodes a refund's body once for its event and its archive row."""

from __future__ import annotations

import copy
from datetime import datetime
from functools import partial
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from dataflows.attribution import events
from dataflows.attribution.events import AnyRefund, refund_body
from dataflows.attribution.flow import parse_value
from dataflows.attribution.wire import (
    MoneySet,
    RefundBody,
    RefundLine,
    RefundTransaction,
    ShopMoney,
    decode_refund,
)
from dataflows.sinks.clickhouse import refund_row
from schemas.conversion import refund_from_shopify
from schemas.events.shopify import (
    ShopifyMoney,
    ShopifyMoneySet,
    ShopifyRefund,
    ShopifyRefundLineItem,
    ShopifyTransaction,
)
from tests.dataflows.builders import T0, refund, shopify
from tests.dataflows.test_wire import _mutate
from tests.dataflows.test_wire_orders import JUNK
from tests.dataflows.wire_facts import agree, judged, keep
from tests.fixtures import DATA

REFUNDS = [
    orjson.loads((DATA / "shopify" / "refunds_create.json").read_bytes()),
    orjson.loads(refund("t_w", 7, 70, [(1, 2), (2, 1)], at=T0).raw_body()),
]


ENVELOPE = shopify("t_w", "refunds/create", {"id": 1}, at=T0, entity="1", event_id="evt_r")


def _facts(refund: AnyRefund) -> dict[str, Any]:
    """The refund's state facts and archive row, every value with its type and text."""
    facts = refund_from_shopify(refund, source_event_id="e").model_dump()
    facts["occurred_at"] = facts["occurred_at"].isoformat()
    row = [  # a time's type is either wire subclass of datetime (`Stamp`, `WireDatetime`)
        ("datetime", v.isoformat()) if isinstance(v, datetime) else (type(v).__name__, str(v))
        for v in refund_row(ENVELOPE, refund)
    ]
    return {"facts": facts, "row": row}


_slow = partial(judged, _facts, ShopifyRefund.model_validate_json)
_fast = partial(judged, _facts, decode_refund)
_flow = partial(judged, _facts, refund_body)


NESTED: dict[str, type] = {
    "refund_line_items": RefundLine, "subtotal_set": MoneySet, "shop_money": ShopMoney,
    "presentment_money": ShopMoney, "transactions": RefundTransaction,
}  # fmt: skip


def _used_only(body: bytes) -> bytes:
    """The body with only the keys the flow reads (what the fast path judges), and what the
    contract requires besides them filled in validly (ids, a transaction's kind and amount)."""
    doc = keep(orjson.loads(body), RefundBody, NESTED)
    for i, line in enumerate(doc.get("refund_line_items") or []):
        if isinstance(line, dict):
            line.setdefault("id", i)
    for i, tx in enumerate(doc.get("transactions") or []):
        if isinstance(tx, dict):
            tx.update(id=i, kind="refund", amount="0")
    return orjson.dumps(doc)


def test_real_refunds_decode_to_the_same_facts_and_row_on_the_fast_path() -> None:
    for doc in REFUNDS:
        body = orjson.dumps(doc)
        fast = _fast(body)
        assert fast is not None
        assert fast == _slow(body)
    # The real refund's row has an amount and a currency (from `subtotal_set`, `transactions`).
    real = _fast(orjson.dumps(REFUNDS[0]))
    assert real is not None
    assert real["row"][5] == ("str", "USD")
    assert real["row"][6][0] == "Decimal"


def _paths(doc: dict[str, Any]) -> list[list[Any]]:
    paths: list[list[Any]] = [[k] for k in doc]
    for i, item in enumerate(doc.get("refund_line_items", [])[:2]):
        paths += [["refund_line_items", i, k] for k in item]
        if item.get("subtotal_set"):
            paths += [["refund_line_items", i, "subtotal_set", "shop_money", k]
                      for k in ("amount", "currency_code")]  # fmt: skip
    paths += [["transactions", i, k] for i, t in enumerate(doc.get("transactions", [])[:1])
              for k in t]  # fmt: skip
    return paths


PATHS = [(n, p) for n, doc in enumerate(REFUNDS) for p in _paths(doc)]


@settings(max_examples=500, deadline=None)
@given(which=st.sampled_from(PATHS), action=st.sampled_from(["drop", "set", "extra"]),
       junk=JUNK)  # fmt: skip
def test_mutated_refunds_are_accepted_or_refused_alike(
    which: tuple[int, list[Any]], action: str, junk: Any
) -> None:
    n, path = which
    doc = copy.deepcopy(REFUNDS[n])
    _mutate(doc, path, action, junk)
    agree(orjson.dumps(doc), _fast, _slow, _flow, _used_only)


def test_broken_bodies_are_refused_by_both() -> None:
    body = orjson.dumps(REFUNDS[0])
    for bad in (body[:-1], b"[]", b"null", b"{}", b'{"id": 1}', b'{"id": "1", "order_id": 2}'):
        assert _fast(bad) is None
        assert _slow(bad) is None
        # the body, or its facts (no time) in the flow
        with pytest.raises(ValueError, match=r"."):
            _facts(refund_body(bad))


def test_the_msgspec_structs_read_only_the_contracts_fields() -> None:
    pairs: list[tuple[type, type[BaseModel]]] = [
        (RefundBody, ShopifyRefund), (RefundLine, ShopifyRefundLineItem),
        (MoneySet, ShopifyMoneySet), (ShopMoney, ShopifyMoney),
        (RefundTransaction, ShopifyTransaction),
    ]  # fmt: skip
    for fast, contract in pairs:
        fields = fast.__struct_fields__  # type: ignore[attr-defined]
        assert set(fields) <= set(contract.model_fields), fast


def test_the_flow_decodes_a_refund_once_for_its_event_and_its_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []

    def counted(body: bytes) -> AnyRefund:
        calls.append(body)
        return refund_body(body)

    monkeypatch.setattr(events, "refund_body", counted)
    monkeypatch.setattr("dataflows.sinks.clickhouse.refund_body", counted)
    envelope = shopify("t_w", "refunds/create", REFUNDS[0], at=T0, entity="450789469")
    out = parse_value(envelope.to_bytes())
    tables = [item[0] for item in out if isinstance(item, tuple)]
    assert tables == ["raw_events", "refunds"]
    assert [type(item).__name__ for item in out if not isinstance(item, tuple)] == ["Event"]
    assert len(calls) == 1
