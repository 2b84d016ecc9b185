"""The envelope's two wire forms (`schemas.events.envelope`'s docstring) read the same.

Form 1 carries the body as a JSON string (its UTF-8 text, or base64); form 2, written by the
ingress's hot path, embeds a JSON body as it is. Every reader must make the same of both: the
contract (`EventEnvelope.from_bytes`), the dataflow's msgspec decoder (`decode_envelope`), the
archive row (`raw_event_row`, which replay rebuilds form 1 from), the flow's parse
(`parse_value`: rows, state events, dead letters) and the model's own form-1 bytes.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from dataflows.attribution.events import Event, event_from_envelope
from dataflows.attribution.flow import parse_value
from dataflows.attribution.wire import Envelope, JsonEnvelope, decode_envelope
from dataflows.sinks.clickhouse import raw_event_row
from schemas.events.envelope import (
    BodyEncoding,
    DeadLetter,
    EventEnvelope,
    Source,
    embeddable,
    envelope_bytes,
    form1,
    is_json,
)
from schemas.ids import body_sha256
from tests.dataflows.builders import T0, click, click_id, kind_of, order
from tests.fixtures import DATA

WHEN = datetime(2026, 11, 25, 10, 0, 0, 400_000, tzinfo=UTC)
EASTERN = timezone(timedelta(hours=-5))
FIELDS: dict[str, Any] = {
    "event_id": "ev-1", "source": Source.SHOPIFY, "kind": "orders/create", "tenant_id": "t_f",
    "shop": "s.myshopify.com", "entity_id": "1", "occurred_at": datetime(2026, 11, 1, 7, 30,
    tzinfo=EASTERN), "received_at": WHEN, "headers": {"shopify-topic": "orders/create"},
}  # fmt: skip

# Bodies that travel in form 2: unicode as UTF-8 and as escapes, escaped quotes and control
# characters, whitespace inside (indentation, around colons and commas), number spellings,
# JSON values that are not objects.
EMBEDDED = [
    b'{"id": 1, "note": "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", '
    b'"esc": "\\u00e9\\ud83d\\ude00"}',
    b'{"q": "say \\"hi\\"", "ctl": "a\\nb\\tc\\\\d\\/e\\u0000", "html": "<a href=\'x\'>&amp;</a>"}',
    b'{\n  "id" :  7 ,\r\n\t"items": [ 1,2 , 3 ],\n  "n": 1.50E+3, "z": -0.0,'
    b' "big": 123456789012345678901234567890\n}',
    b'[{"a": {}}, [], null, true, false, ""]',
    b'"just a string \\u00e9"',
    b"0",
    b"-12.5e-3",
    b"null",
    orjson.dumps({"id": 9, "name": "#1001", "line_items": [{"price": "10.00"}]}),
    *[
        path.read_bytes().rstrip()  # as Shopify sends them: no newline at the end
        for path in sorted((DATA / "shopify").glob("*.json"))
    ],
]
# Bodies that stay in form 1: whitespace at either end (a JSON reader would drop it), not
# JSON, not UTF-8 (base64), empty.
FORM_ONE = [
    b'{"id": 1}\n',
    b' {"id": 1}',
    b'\t"x"\r\n',
    *[
        raw
        for path in sorted((DATA / "shopify").glob("*.json"))
        if (raw := path.read_bytes()).endswith(b"\n")
    ],  # the fixture files that end with a newline
    b"not json",
    b'{"id": 1,}',
    b'{"id": NaN}',
    b'{"a": "\xff"}',  # msgspec reads it as JSON, but it is not UTF-8
    b"\xff\xfe binary",
    b"",
]


def _form(value: bytes) -> str:
    encoding = orjson.loads(value)["body_encoding"]
    assert isinstance(encoding, str)
    return encoding


def _same_everywhere(raw: bytes, old: bytes, new: bytes) -> None:
    """`old` (form 1) and `new` (either form) of one body read the same in every reader."""
    slow_old, slow_new = EventEnvelope.from_bytes(old), EventEnvelope.from_bytes(new)
    fast_old, fast_new = decode_envelope(old), decode_envelope(new)
    assert slow_new == slow_old
    for envelope in (slow_old, slow_new, fast_old, fast_new):
        assert envelope.raw_body() == raw
    row = raw_event_row(slow_old)
    for envelope in (slow_new, fast_old, fast_new):
        assert raw_event_row(envelope) == row
    assert slow_new.to_bytes() == old  # what the archive keeps and replay rebuilds: form 1


@pytest.mark.parametrize("raw", EMBEDDED, ids=range(len(EMBEDDED)))
def test_a_json_body_is_embedded_and_reads_as_its_form_one_twin(raw: bytes) -> None:
    assert is_json(raw)
    assert embeddable(raw)
    old = EventEnvelope.wrap(raw, **FIELDS).to_bytes()
    new = envelope_bytes(raw, body_is_json=True, **FIELDS)
    assert new == EventEnvelope.wrap(raw, **FIELDS).to_bytes(json_body=True)
    assert (_form(old), _form(new)) == ("utf-8", "json")
    assert b'"body":' + raw + b',"body_encoding":"json"}' in new  # the bytes as they came
    assert orjson.loads(new)["body"] == orjson.loads(raw)
    assert isinstance(decode_envelope(new), JsonEnvelope)
    assert isinstance(decode_envelope(old), Envelope)
    _same_everywhere(raw, old, new)
    assert form1(new) != new
    assert EventEnvelope.model_validate_json(form1(new)).raw_body() == raw


@pytest.mark.parametrize("raw", FORM_ONE, ids=range(len(FORM_ONE)))
def test_other_bodies_keep_form_one(raw: bytes) -> None:
    old = EventEnvelope.wrap(raw, **FIELDS).to_bytes()
    new = envelope_bytes(raw, body_is_json=is_json(raw), **FIELDS)
    assert new == old == EventEnvelope.wrap(raw, **FIELDS).to_bytes(json_body=True)
    try:
        raw.decode("utf-8")
        expected = BodyEncoding.UTF8
    except UnicodeDecodeError:
        expected = BodyEncoding.BASE64  # a non-UTF-8 body still travels as base64
    assert EventEnvelope.from_bytes(new).body_encoding is expected
    _same_everywhere(raw, old, new)


def test_the_hot_paths_word_alone_does_not_embed_what_would_be_lost() -> None:
    # `body_is_json` is the caller's word that msgspec read the body; `embeddable` still keeps
    # a body with whitespace around it, or one that is not UTF-8, in form 1.
    for raw in (b'{"id": 1}\n', b'{"a": "\xff"}'):
        assert is_json(raw)
        assert envelope_bytes(raw, body_is_json=True, **FIELDS) == (
            EventEnvelope.wrap(raw, **FIELDS).to_bytes()
        )


def test_odd_values_take_the_models_path_in_either_form() -> None:
    odd = {**FIELDS, "occurred_at": datetime(2026, 1, 1, tzinfo=timezone(timedelta(seconds=7)))}
    raw = b'{"id": 1}'
    new = envelope_bytes(raw, body_is_json=True, **odd)
    assert _form(new) == "json"
    assert new == EventEnvelope.wrap(raw, **odd).to_bytes(json_body=True)
    assert EventEnvelope.from_bytes(new).raw_body() == raw


def _flow(value: bytes) -> list[Any]:
    """`parse_value`'s output without what differs by design: the Kafka value an event carries
    (for its dead letter) and a dead letter's failure time."""
    out: list[Any] = []
    for item in parse_value(value):
        tag = kind_of(item)
        if isinstance(item, Event):
            out.append((tag, item.kept()))
        elif isinstance(item, DeadLetter):
            out.append((tag, item.reason, item.envelope, item.raw))
        else:
            out.append((tag, item))
    return out


def _dataflow_envelopes() -> list[EventEnvelope]:
    pretty = orjson.dumps(
        {"id": 77, "name": "#77 caf\u00e9", "created_at": T0.isoformat(),
         "updated_at": T0.isoformat(), "currency": "EUR", "note": 'a "quoted" \\ note\n',
         "line_items": [{"id": 1, "quantity": 2, "price": "12.50"}]},
        option=orjson.OPT_INDENT_2,
    )  # fmt: skip
    base = order("t_f", 7, at=T0, cites=click_id(1))
    return [
        click("t_f", click_id(1), at=T0, visitor="v\u00e9"),
        click("t_f", click_id(2), at=T0),
        base,
        base.model_copy(update={"body": pretty.decode(), "payload_ref": EventEnvelope.wrap(
            pretty, **FIELDS).payload_ref}),
        EventEnvelope.wrap(  # unreadable for its kind: a dead letter in either form
            b'{"id": "not a number"}', event_id="ev-bad", source=Source.SHOPIFY,
            kind="orders/create", tenant_id="t_f", occurred_at=T0, received_at=T0,
        ),
        EventEnvelope.wrap(  # a click body that is no click
            b'{"click_id": 5}', event_id="clk_x", source=Source.CLICK, kind="click",
            tenant_id="t_f", occurred_at=T0, received_at=T0,
        ),
    ]  # fmt: skip


def test_the_dataflow_makes_the_same_rows_events_and_dead_letters_of_both_forms() -> None:
    kinds: set[str] = set()
    for envelope in _dataflow_envelopes():
        raw = envelope.raw_body()
        old, new = envelope.to_bytes(), envelope.to_bytes(json_body=True)
        assert _form(new) == "json", raw
        _same_everywhere(raw, old, new)
        flowed = _flow(new)
        assert flowed == _flow(old)
        kinds.update(tag for tag, *_ in flowed)
        # Both decoders of the flow: msgspec's (above, in `parse_value`) and the contract's.
        try:
            slow = event_from_envelope(EventEnvelope.from_bytes(new))
        except ValueError as exc:
            slow_out: Any = str(exc)
            fast_out: Any = None
            try:
                event_from_envelope(decode_envelope(new))
            except ValueError as fast_exc:
                fast_out = str(fast_exc)
            assert fast_out == slow_out
        else:
            assert slow == event_from_envelope(decode_envelope(new))
    assert kinds == {"row", "event", "dead"}


def test_readers_refuse_a_broken_form_two_alike() -> None:
    raw = b'{"id": 1}'
    new = envelope_bytes(raw, body_is_json=True, **FIELDS)
    latin1 = b'{"id": "\xe9"}'  # hashed as it is, but not UTF-8
    document = orjson.loads(new)
    document["payload_ref"].update(sha256=body_sha256(latin1), size=len(latin1))
    document["body"] = orjson.Fragment(latin1)
    broken = [
        new.replace(b'"body":{"id": 1}', b'"body":{"id": 2}'),  # not the hashed bytes
        new.replace(b'"body":{"id": 1},', b""),  # no body
        orjson.dumps(document),
        new.replace(b'"body":{"id": 1}', b'"body":{"id": 1'),  # not JSON
        new.replace(b'"json"', b'"JSON"'),
    ]
    for value in broken:
        with pytest.raises(ValidationError):
            EventEnvelope.from_bytes(value)
        with pytest.raises(ValueError):  # noqa: PT011 - msgspec's errors, or the body's check
            decode_envelope(value)
        assert [tag for tag, *_ in _flow(value)] == ["dead"]


def test_form_two_in_another_field_order_reads_the_same() -> None:
    raw = b'{"id": 1, "n": "\xc3\xa9"}'
    new = envelope_bytes(raw, body_is_json=True, **FIELDS)
    document = orjson.loads(new)
    reordered = b'{"body_encoding":"json","body":' + raw + b"," + orjson.dumps(
        {k: v for k, v in document.items() if k not in ("body", "body_encoding")}
    )[1:]  # fmt: skip
    assert isinstance(decode_envelope(reordered), JsonEnvelope)
    _same_everywhere(raw, EventEnvelope.wrap(raw, **FIELDS).to_bytes(), reordered)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    value=_json,
    indent=st.none() | st.integers(0, 3),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
    ensure_ascii=st.booleans(),
)
def test_any_json_body_reads_back_byte_for_byte_in_both_forms(
    value: Any, indent: int | None, separators: tuple[str, str], ensure_ascii: bool
) -> None:
    raw = json.dumps(
        value, indent=indent, separators=separators, ensure_ascii=ensure_ascii
    ).encode()
    old = EventEnvelope.wrap(raw, **FIELDS).to_bytes()
    new = envelope_bytes(raw, body_is_json=is_json(raw), **FIELDS)
    assert new == EventEnvelope.wrap(raw, **FIELDS).to_bytes(json_body=True)
    _same_everywhere(raw, old, new)
