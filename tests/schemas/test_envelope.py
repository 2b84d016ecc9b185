from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events.click import ClickEvent
from schemas.events.envelope import BodyEncoding, DeadLetter, EventEnvelope, Source
from schemas.events.shopify import SHOPIFY_TOPICS
from schemas.ids import body_sha256, derived_id
from schemas.topics import Topic, topic_for_shopify

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_envelope(raw: bytes, **overrides: object) -> EventEnvelope:
    fields: dict[str, object] = {
        "event_id": "evt-1",
        "source": Source.SHOPIFY,
        "kind": "orders/create",
        "tenant_id": "t_acme",
        "shop": "acme.myshopify.com",
        "entity_id": "450789469",
        "occurred_at": T0,
        "received_at": T0 + timedelta(seconds=2),
        "headers": {"x-shopify-topic": "orders/create"},
    }
    fields.update(overrides)
    return EventEnvelope.wrap(raw, **fields)  # type: ignore[arg-type]


@given(st.binary(max_size=2000))
def test_any_body_bytes_survive_the_round_trip_through_kafka_bytes(raw: bytes) -> None:
    envelope = make_envelope(raw)
    again = EventEnvelope.from_bytes(envelope.to_bytes())
    assert again.raw_body() == raw
    assert again == envelope
    assert again.payload_ref.sha256 == body_sha256(raw)


def test_utf8_body_travels_as_text_and_invalid_utf8_as_base64() -> None:
    assert make_envelope(b'{"a": "\xc3\xa9"}').body_encoding is BodyEncoding.UTF8
    assert make_envelope(b'{"a": "\xff"}').body_encoding is BodyEncoding.BASE64


def test_shopify_escaped_slashes_are_kept_byte_for_byte() -> None:
    raw = b'{"admin_graphql_api_id":"gid:\\/\\/shopify\\/Order\\/1"}'
    envelope = EventEnvelope.from_bytes(make_envelope(raw).to_bytes())
    assert envelope.raw_body() == raw
    assert envelope.json_body() == {"admin_graphql_api_id": "gid://shopify/Order/1"}


def test_tampered_body_is_rejected() -> None:
    data = orjson.loads(make_envelope(b'{"total_price": "10.00"}').to_bytes())
    data["body"] = '{"total_price": "99.00"}'
    with pytest.raises(ValidationError, match="payload_ref"):
        EventEnvelope.model_validate(data)


def test_naive_timestamps_are_rejected() -> None:
    with pytest.raises(ValidationError):
        make_envelope(b"{}", occurred_at=datetime(2026, 3, 1, 12, 0))  # noqa: DTZ001


def test_unknown_fields_are_rejected() -> None:
    data = orjson.loads(make_envelope(b"{}").to_bytes())
    data["surprise"] = 1
    with pytest.raises(ValidationError):
        EventEnvelope.model_validate(data)


def test_event_time_keeps_its_offset_and_instant() -> None:
    eastern = timezone(timedelta(hours=-5))
    envelope = make_envelope(b"{}", occurred_at=datetime(2026, 3, 1, 7, 0, tzinfo=eastern))
    again = EventEnvelope.from_bytes(envelope.to_bytes())
    assert again.occurred_at == T0


def test_key_is_tenant_and_ordered_entity() -> None:
    assert make_envelope(b"{}").key() == b"t_acme:450789469"
    assert make_envelope(b"{}", entity_id=None).key() == b"t_acme:evt-1"


def test_dead_letter_carries_the_envelope_and_reason() -> None:
    envelope = make_envelope(b"not json")
    letter = DeadLetter(reason="invalid JSON", stage="ingress", failed_at=T0, envelope=envelope)
    assert orjson.loads(letter.to_bytes())["envelope"]["body"] == "not json"


def test_derived_ids_are_stable_and_unambiguous() -> None:
    assert derived_id("le", "t", "o1", 1) == derived_id("le", "t", "o1", 1)
    assert derived_id("le", "a", "bc") != derived_id("le", "ab", "c")
    assert derived_id("clk", "x").startswith("clk_")
    with pytest.raises(ValueError, match="separator"):
        derived_id("le", "a\x1fb")


def test_click_ids_must_have_the_click_prefix() -> None:
    click_id = derived_id("clk", "t", 1)
    click = ClickEvent(click_id=click_id, tenant_id="t", link_code="ana", occurred_at=T0)
    assert click.is_bot is False
    with pytest.raises(ValidationError):
        ClickEvent(click_id="evt_1", tenant_id="t", link_code="ana", occurred_at=T0)


def test_every_modelled_shopify_topic_has_a_stream() -> None:
    for shopify_topic in SHOPIFY_TOPICS:
        assert topic_for_shopify(shopify_topic) in set(Topic)
    with pytest.raises(KeyError):
        topic_for_shopify("inventory_levels/update")
