"""`ingest.shopify.parse` reads a body's facts through msgspec (only the model's fields, as
their JSON text) and pydantic (that small object): the same facts, and the same refusals, as
pydantic reading the whole body."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ingest import shopify

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "shopify"


def _whole(topic: str, raw: bytes) -> object:
    """What pydantic makes of the whole body: the facts, or its first error's type and place."""
    try:
        return shopify._FACTS[topic].model_validate_json(raw)
    except ValidationError as exc:
        return [(e["type"], e["loc"]) for e in exc.errors()]


def _fast(topic: str, raw: bytes) -> object:
    try:
        return shopify.parse(topic, raw)
    except shopify.UnreadableBody as exc:
        cause = exc.__cause__
        assert isinstance(cause, ValidationError)
        return [(e["type"], e["loc"]) for e in cause.errors()]


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_every_fixture_reads_the_same_under_every_topic(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    for topic in sorted(shopify._FACTS):
        assert _fast(topic, raw) == _whole(topic, raw), topic


_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.sampled_from(["2024-03-01T10:00:00-05:00", "2024-03-01T10:00:00Z", "2024-03-01 10:00:00",
                     "2024-03-01T10:00:00.1234567+01:30", "2024-03-01", "12", "x", "",
                     "2024-03-01T10:00:00\\u002B01:00"]),
    st.text(max_size=8), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["order_id", "created_at", "id"]), st.integers(), max_size=2),
)  # fmt: skip
_names = st.sampled_from(
    ["id", "order_id", "created_at", "processed_at", "updated_at", "order_edit", "shop_id",
     "shop_domain", "note", "line_items"]
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(sorted(shopify._FACTS)),
    body=st.dictionaries(_names, _values, max_size=6),
)
def test_generated_bodies_read_the_same(topic: str, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode().replace(b"\\\\u002B", b"\\u002B")  # an escape in a string
    assert _fast(topic, raw) == _whole(topic, raw)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1, 2]", b'"text"', b"null", b'{"id": 1,}', b'{"id": 1} x', b"\xff{}",
            b'{"id": NaN}', b'{"id": 1, "id": "x"}'],
)  # fmt: skip
def test_unreadable_bodies_are_refused_as_before(raw: bytes) -> None:
    for topic in ("orders/create", "refunds/create", "orders/edited", "shop/redact"):
        assert _fast(topic, raw) == _whole(topic, raw), topic


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.json")))
def test_read_says_when_msgspec_read_the_body_whole(name: str) -> None:
    # Its word lets the envelope embed the body as JSON (wire form 2): true only when msgspec
    # read the body, never when pydantic alone did (it accepts NaN, which JSON does not).
    raw = (FIXTURES / name).read_bytes()
    for topic in ("orders/create", "customers/create"):
        try:
            facts, is_json = shopify.read(topic, raw)
        except shopify.UnreadableBody:
            continue
        assert facts == shopify.parse(topic, raw)
        assert is_json
    facts, is_json = shopify.read("orders/create", b'{"id": 1, "total": NaN}')
    assert facts == shopify.parse("orders/create", b'{"id": 1, "total": NaN}')
    assert not is_json
