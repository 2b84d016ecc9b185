"""HMAC verification and header reading: pure, against Shopify's own test vectors."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.shopify import (
    KEPT_HEADERS,
    ShopifyHeaders,
    UnreadableBody,
    _signature,
    parse,
    sign,
    verify,
)


def vectors(shared: Path, key: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((shared / "hmac_vectors.json").read_text())[key]
    assert data, f"no {key} in hmac_vectors.json"
    return data


def test_every_shopify_valid_vector_verifies(shared_fixtures: Path) -> None:
    for vector in vectors(shared_fixtures, "webhook_vectors"):
        body = vector["body"].encode()
        assert sign(vector["secret"], body) == vector["expected_header_value"], vector["id"]
        sent = vector.get("expected_header_value_as_sent_by_test", vector["expected_header_value"])
        assert verify(body, sent, (vector["secret"],)), vector["id"]


def test_every_shopify_negative_vector_is_rejected(shared_fixtures: Path) -> None:
    for vector in vectors(shared_fixtures, "negative_vectors"):
        body = vector["body"].encode()
        assert not verify(body, vector["header_value"], (vector["secret"],)), vector["id"]
        assert verify(body, vector["correct_value_for_reference"], (vector["secret"],))


def test_previous_secret_is_accepted_during_rotation() -> None:
    body = b'{"id": 1}'
    assert verify(body, sign("old", body), ("new", "old"))
    assert verify(body, sign("new", body), ("new", "old"))
    assert not verify(body, sign("older", body), ("new", "old"))


@pytest.mark.parametrize("signature", [None, "", "not base64!", "AAAA", "=" * 44])
def test_missing_or_malformed_signatures_fail(signature: str | None) -> None:
    assert not verify(b"{}", signature, ("secret",))


def test_signature_is_over_raw_bytes_not_reserialised_json() -> None:
    raw = b'{"admin_graphql_api_id":"gid:\\/\\/shopify\\/Order\\/1"}'
    reserialised = json.dumps(json.loads(raw)).encode()
    assert not verify(reserialised, sign("s", raw), ("s",))


def test_headers_are_case_insensitive_and_x_prefix_optional() -> None:
    classic = ShopifyHeaders.read({"X-Shopify-Topic": "orders/paid",
                                   "x-shopify-shop-domain": "A.myshopify.com"})  # fmt: skip
    events = ShopifyHeaders.read({"shopify-topic": "orders/paid", "SHOPIFY-EVENT-ID": "e1",
                                  "shopify-shop-domain": "a.myshopify.com"})  # fmt: skip
    assert classic.topic == events.topic == "orders/paid"
    assert classic.shop_domain == events.shop_domain == "a.myshopify.com"
    assert events.delivery_id(b"{}") == "e1"


def test_delivery_id_falls_back_to_webhook_id_then_content() -> None:
    assert ShopifyHeaders.read({"X-Shopify-Webhook-Id": "w1"}).delivery_id(b"{}") == "w1"
    bare = ShopifyHeaders.read({"X-Shopify-Topic": "orders/paid"})
    assert bare.delivery_id(b"{}") == bare.delivery_id(b"{}")
    assert bare.delivery_id(b"{}") != bare.delivery_id(b"[]")


def test_front_door_reads_ids_and_event_time_for_the_key() -> None:
    received = datetime(2026, 11, 25, tzinfo=UTC)
    refund = parse(
        "refunds/create", b'{"id": 5, "order_id": 77, "created_at": "2026-01-02T03:04:05-05:00"}'
    )
    assert refund.facts(received) == (datetime(2026, 1, 2, 8, 4, 5, tzinfo=UTC), "77")
    edit = parse("orders/edited", b'{"order_edit": {"id": 1, "order_id": 78}}')
    assert edit.facts(received) == (received, "78")
    order = parse("orders/paid", b'{"id": 79, "extra": {"anything": [1, 2]}}')
    assert order.facts(received) == (received, "79")


@pytest.mark.parametrize(
    ("topic", "body", "reason"),
    [
        ("orders/paid", b'{"id": ', "invalid JSON"),
        ("orders/paid", b'{"id": "not-a-number"}', "id"),
        ("refunds/create", b'{"id": 1}', "order_id"),
        ("orders/paid", b'{"id": 1, "created_at": "2026-01-02T03:04:05"}', "created_at"),
        ("inventory_levels/update", b"{}", "unsupported topic"),
    ],
)
def test_front_door_refuses_bodies_it_cannot_key(topic: str, body: bytes, reason: str) -> None:
    with pytest.raises(UnreadableBody, match=reason):
        parse(topic, body)


def _headers_as_before(headers: dict[str, str]) -> ShopifyHeaders:
    """`ShopifyHeaders.read` as it was spelled before Round 7 (comprehensions, keywords)."""
    prefixed: dict[str, str] = {}
    bare: dict[str, str] = {}
    for key, value in headers.items():
        name = key.lower()
        if name.startswith("x-shopify-"):
            prefixed[name[2:]] = value
        elif name.startswith("shopify-"):
            bare[name] = value
    found = {**bare, **prefixed} if bare else prefixed
    get = {name: value.strip() for name, value in found.items()}.get
    return ShopifyHeaders(
        hmac=get("shopify-hmac-sha256"), topic=get("shopify-topic"),
        shop_domain=(get("shopify-shop-domain") or "").lower() or None,
        event_id=get("shopify-event-id"), webhook_id=get("shopify-webhook-id"),
        triggered_at=get("shopify-triggered-at"),
        kept={name: v for name in KEPT_HEADERS if (v := get(name)) is not None},
    )  # fmt: skip


_NAMES = st.sampled_from(
    [f"{x}shopify-{n}" for x in ("x-", "X-", "") for n in (
        "topic", "Shop-Domain", "hmac-sha256", "event-id", "webhook-id", "triggered-at",
        "api-version", "name", "sub-topic", "other")]
    + ["content-type", "user-agent", "x-request-id", "shopify", "x-shopify"]
)  # fmt: skip


@given(st.dictionaries(_NAMES, st.text(alphabet=" \tab.-é/", max_size=6), max_size=12))
def test_headers_read_as_they_were_read_before(headers: dict[str, str]) -> None:
    assert ShopifyHeaders.read(headers) == _headers_as_before(headers)
    # Names lower-case already (ASGI's), taken as they are: the same reading.
    lowered = {name.lower(): value for name, value in headers.items()}
    assert ShopifyHeaders.read(lowered, lower_case_names=True) == _headers_as_before(lowered)


@given(secret=st.text(max_size=100), raw=st.binary(max_size=5000))
def test_signature_from_prepared_states_is_hmac_sha256(secret: str, raw: bytes) -> None:
    """`verify`'s HMAC, from the secret's padded states prepared once, is `hmac.digest`'s (keys
    shorter and longer than SHA-256's 64-byte block, non-ASCII ones)."""
    expected = hmac.digest(secret.encode(), raw, "sha256")
    assert _signature(secret, raw) == expected
    assert _signature(secret, raw) == expected  # the prepared states are not consumed
    assert verify(raw, base64.b64encode(expected).decode(), ("other", secret))
