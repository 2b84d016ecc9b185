"""`envelope_bytes` (the ingress's hot-path serialisation) spells exactly what the model does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events.envelope import (
    EventEnvelope,
    Source,
    envelope_bytes,
    envelope_key,
    is_json,
    json_time,
)

offsets = st.one_of(
    st.just(UTC),
    st.just(timezone(timedelta(0))),
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    st.integers(-50_000, 50_000).map(lambda s: timezone(timedelta(seconds=s))),
)
# hypothesis wants naive bounds; `timezones` makes the values aware.
times = st.datetimes(
    min_value=datetime(1990, 1, 1),  # noqa: DTZ001
    max_value=datetime(2100, 1, 1),  # noqa: DTZ001
    timezones=offsets,
)
texts = st.text(max_size=220)


@given(
    raw=st.binary(max_size=500) | st.text(max_size=300).map(str.encode),
    event_id=texts,
    source=st.sampled_from(Source),
    kind=texts,
    tenant_id=texts,
    shop=st.none() | texts,
    entity_id=st.none() | texts,
    occurred_at=times,
    received_at=times,
    headers=st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4),
)
def test_the_plain_spelling_is_the_models_byte_for_byte(
    raw: bytes, event_id: str, source: Source, kind: str, tenant_id: str, shop: str | None,
    entity_id: str | None, occurred_at: datetime, received_at: datetime,
    headers: dict[str, str] | None,
) -> None:  # fmt: skip
    fields = {
        "event_id": event_id, "source": source, "kind": kind, "tenant_id": tenant_id,
        "shop": shop, "entity_id": entity_id, "occurred_at": occurred_at,
        "received_at": received_at, "headers": headers,
    }  # fmt: skip
    try:
        model = EventEnvelope.wrap(raw, **fields)  # type: ignore[arg-type]
    except ValidationError:
        with pytest.raises(ValidationError):
            envelope_bytes(raw, **fields)  # type: ignore[arg-type]
        return
    assert envelope_bytes(raw, **fields) == model.to_bytes()  # type: ignore[arg-type]
    assert envelope_key(tenant_id, entity_id, event_id) == model.key()


def test_a_typical_webhook_takes_the_plain_path_and_reads_back() -> None:
    when = datetime(2026, 11, 25, 10, 0, 0, 400_000, tzinfo=UTC)
    data = envelope_bytes(
        b'{"id": 1}', event_id="evt_1", source=Source.SHOPIFY, kind="orders/create",
        tenant_id="t_1", occurred_at=when, received_at=when, shop="a.myshopify.com",
        entity_id="1", headers={"shopify-topic": "orders/create"},
    )  # fmt: skip
    again = EventEnvelope.from_bytes(data)
    assert again.raw_body() == b'{"id": 1}'
    assert again.occurred_at == when
    assert b'"occurred_at":"2026-11-25T10:00:00.400000Z"' in data


@given(
    raw=st.binary(max_size=300)
    | st.text(max_size=200).map(str.encode)
    | st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=10),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
        max_leaves=10,
    ).map(orjson.dumps),
    event_id=texts,
    kind=texts,
    occurred_at=times,
    headers=st.none() | st.dictionaries(st.text(max_size=20), st.text(max_size=20), max_size=4),
)
def test_the_plain_spelling_of_form_two_is_the_models_byte_for_byte(
    raw: bytes, event_id: str, kind: str, occurred_at: datetime, headers: dict[str, str] | None
) -> None:
    fields = {
        "event_id": event_id, "source": Source.SHOPIFY, "kind": kind, "tenant_id": "t_1",
        "occurred_at": occurred_at, "received_at": occurred_at, "headers": headers,
    }  # fmt: skip
    try:
        model = EventEnvelope.wrap(raw, **fields)  # type: ignore[arg-type]
    except ValidationError:
        with pytest.raises(ValidationError):
            envelope_bytes(raw, body_is_json=is_json(raw), **fields)  # type: ignore[arg-type]
        return
    value = envelope_bytes(raw, body_is_json=is_json(raw), **fields)  # type: ignore[arg-type]
    assert value == model.to_bytes(json_body=True)
    # Read back as the form-1 bytes read (the model's own round trip is not the question here:
    # an odd time offset comes back as the offset the JSON spelling keeps).
    assert EventEnvelope.from_bytes(value) == EventEnvelope.from_bytes(model.to_bytes())
    assert EventEnvelope.from_bytes(value).raw_body() == raw


def test_times_of_one_second_keep_their_own_fraction_and_offset() -> None:
    """`json_time` keeps the last UTC second's text: the fraction, the second after it, and a
    time of the same second at another offset are still spelled as the model spells them."""
    second = datetime(2026, 12, 7, 17, 0, 5, tzinfo=UTC)
    times = [
        second.replace(microsecond=400_000),
        second,
        second.replace(microsecond=7),
        second + timedelta(seconds=1),
        second.astimezone(timezone(timedelta(hours=-5))),
        second.replace(microsecond=1),
    ]
    spelled = [json_time(when) for when in times]
    assert spelled == [
        "2026-12-07T17:00:05.400000Z",
        "2026-12-07T17:00:05Z",
        "2026-12-07T17:00:05.000007Z",
        "2026-12-07T17:00:06Z",
        "2026-12-07T12:00:05-05:00",
        "2026-12-07T17:00:05.000001Z",
    ]
    for when, text in zip(times, spelled, strict=True):
        model = EventEnvelope.wrap(b"{}", event_id="e", source=Source.API, kind="k",
                                   tenant_id="t", occurred_at=when, received_at=when)  # fmt: skip
        assert f'"occurred_at":"{text}"'.encode() in model.to_bytes()


def test_a_time_spelled_again_is_the_same_text_and_others_their_own() -> None:
    """`json_time` keeps the last UTC time it spelled (a click's time is spelled twice in a
    row): the same object again gives its text, any other time its own, an equal time of
    another object or offset included."""
    first = datetime(2026, 12, 7, 17, 0, 5, 120_000, tzinfo=UTC)
    other = first + timedelta(microseconds=1)
    equal = datetime(2026, 12, 7, 17, 0, 5, 120_000, tzinfo=UTC)
    offset = first.astimezone(timezone(timedelta(hours=2)))
    times = [first, first, other, first, equal, offset, offset, first]
    assert [json_time(when) for when in times] == [
        "2026-12-07T17:00:05.120000Z",
        "2026-12-07T17:00:05.120000Z",
        "2026-12-07T17:00:05.120001Z",
        "2026-12-07T17:00:05.120000Z",
        "2026-12-07T17:00:05.120000Z",
        "2026-12-07T19:00:05.120000+02:00",
        "2026-12-07T19:00:05.120000+02:00",
        "2026-12-07T17:00:05.120000Z",
    ]
