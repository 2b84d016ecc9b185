"""The hot path's msgspec decoders never disagree with the pydantic contract: what msgspec
accepts, pydantic accepts with the same rows and state events, and the flow's decoders (msgspec,
then pydantic for what msgspec refuses) answer exactly as pydantic alone (hypothesis mutations
of real envelopes: missing, mistyped, extra and oversized fields, naive times, bodies that do
not match their hash, broken JSON)."""

from __future__ import annotations

import os
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.attribution.bounds import OutOfBounds, check_time
from dataflows.attribution.events import Unprocessable, click_event, parse_click, parse_envelope
from dataflows.attribution.wire import ClickBody, Envelope, decode_click, decode_envelope
from dataflows.sinks.clickhouse import click_row, raw_event_row
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope, Source
from tests.dataflows.builders import T0, click, click_id, order
from tests.fixtures import DATA


def _envelopes() -> list[EventEnvelope]:
    shopify = [
        EventEnvelope.wrap(
            path.read_bytes(),
            event_id=f"ev-{path.stem}",
            source=Source.SHOPIFY,
            kind="orders/create",
            tenant_id="t_w",
            shop="s.myshopify.com",
            entity_id="1",
            occurred_at=T0,
            received_at=T0,
            headers={"x-shopify-topic": "orders/create"},
        )
        for path in sorted((DATA / "shopify").glob("*.json"))
    ]
    binary = EventEnvelope.wrap(
        b"\xff\xfe not utf-8", event_id="ev-bin", source=Source.ODOO, kind="account.move",
        tenant_id="t_w", occurred_at=T0, received_at=T0,
    )  # fmt: skip
    clicks = [click("t_w", click_id(n), at=T0, visitor=f"v{n}" if n % 2 else None)
              for n in range(3)]  # fmt: skip
    return [*clicks, order("t_w", 7, at=T0, cites=click_id(1)), binary, *shopify]


ENVELOPES = _envelopes()


def _pydantic(raw: bytes, *, bounded: bool = False) -> tuple[Any, ...] | None:
    """The contract's row; with `bounded`, `None` also for times the flow refuses on purpose
    (`dataflows.attribution.bounds`)."""
    try:
        envelope = EventEnvelope.from_bytes(raw)
        if bounded:
            check_time("occurred_at", envelope.occurred_at)
            check_time("received_at", envelope.received_at)
    except ValueError:
        return None
    return raw_event_row(envelope)


def _msgspec(raw: bytes) -> tuple[Any, ...] | None:
    try:
        envelope = decode_envelope(raw)
    except ValueError:
        return None
    return raw_event_row(envelope)


def _flow(raw: bytes) -> tuple[Any, ...] | None:
    try:
        envelope = parse_envelope(raw)
    except Unprocessable:
        return None
    return raw_event_row(envelope)


def _agree(raw: bytes) -> None:
    fast, slow = _msgspec(raw), _pydantic(raw)
    if fast is not None:
        assert fast == slow
    assert _flow(raw) == _pydantic(raw, bounded=True)


def test_every_real_envelope_decodes_to_the_same_archive_row_on_the_fast_path() -> None:
    for envelope in ENVELOPES:
        raw = envelope.to_bytes()
        assert _msgspec(raw) == _pydantic(raw) is not None


def test_clicks_decode_to_the_same_row_and_state_event() -> None:
    for envelope in ENVELOPES[:3]:
        fast, slow = decode_envelope(envelope.to_bytes()), envelope
        fast_click = decode_click(fast.raw_body())
        slow_click = ClickEvent.model_validate_json(slow.raw_body())
        assert click_row(fast_click, fast) == click_row(slow_click, slow)
        assert click_event(fast, fast_click) == click_event(slow, slow_click)


JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False),
    st.text(max_size=5), st.sampled_from(["", "x" * 201, "2026-01-01T00:00:00",
                                          "2026-01-01T00:00:00+02:00", "clk_" + "a" * 32]),
    st.lists(st.integers(-5, 5), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(-5, 5)),
)  # fmt: skip


def _mutate(doc: dict[str, Any], path: list[str], action: str, junk: Any) -> None:
    *parents, leaf = path
    for key in parents:
        doc = doc[key]
    if action == "drop":
        doc.pop(leaf, None)
    elif action == "set":
        doc[leaf] = junk
    else:
        doc[f"{leaf}_extra"] = junk


ENVELOPE_FIELDS = [[k] for k in ENVELOPES[0].model_dump()] + [
    ["payload_ref", "sha256"],
    ["payload_ref", "size"],
    ["payload_ref", "content_type"],
]


@settings(max_examples=int(os.environ.get("WIRE_EXAMPLES", "400")), deadline=None)
@given(
    which=st.integers(0, len(ENVELOPES) - 1),
    path=st.sampled_from(ENVELOPE_FIELDS),
    action=st.sampled_from(["drop", "set", "extra"]),
    junk=JUNK,
)
def test_mutated_envelopes_are_accepted_or_refused_alike(
    which: int, path: list[str], action: str, junk: Any
) -> None:
    doc = ENVELOPES[which].model_dump(mode="json")
    _mutate(doc, path, action, junk)
    _agree(orjson.dumps(doc))


CLICK_FIELDS = list(ClickEvent.model_fields)


@settings(max_examples=int(os.environ.get("WIRE_EXAMPLES", "400")), deadline=None)
@given(path=st.sampled_from(CLICK_FIELDS), action=st.sampled_from(["drop", "set", "extra"]),
       junk=JUNK)  # fmt: skip
def test_mutated_click_bodies_are_accepted_or_refused_alike(
    path: str, action: str, junk: Any
) -> None:
    doc = orjson.loads(ENVELOPES[1].raw_body())
    _mutate(doc, [path], action, junk)
    body = orjson.dumps(doc)
    try:
        slow: tuple[Any, ...] | None = click_row(ClickEvent.model_validate_json(body), ENVELOPES[1])
    except ValueError:
        slow = None
    try:
        fast: tuple[Any, ...] | None = click_row(decode_click(body), ENVELOPES[1])
    except ValueError:
        fast = None
    if fast is not None:
        assert fast == slow
    envelope = EventEnvelope.wrap(body, event_id="e", source=Source.CLICK, kind="click",
                                  tenant_id="t_w", occurred_at=T0, received_at=T0)  # fmt: skip
    try:
        flow: tuple[Any, ...] | None = click_row(parse_click(envelope), ENVELOPES[1])
    except Unprocessable:
        flow = None
    if slow is not None:
        try:
            check_time("click", ClickEvent.model_validate_json(body).occurred_at)
        except OutOfBounds:
            slow = None  # the flow's time bounds refuse it on purpose
    assert flow == slow


def test_broken_json_and_mismatched_bodies_are_refused_by_both() -> None:
    raw = ENVELOPES[0].to_bytes()
    doc = orjson.loads(raw)
    doc["body"] = doc["body"] + " "
    for bad in (raw[:-1], b"[]", b"null", orjson.dumps(doc)):
        assert _msgspec(bad) is None
        assert _flow(bad) is None


def test_the_msgspec_structs_have_exactly_the_contracts_fields() -> None:
    """A field added to the pydantic contract must be added to the hot path's decoder too (a
    missing one would be refused there and only slowed down, an extra one never checked)."""
    assert set(Envelope.__struct_fields__) == set(EventEnvelope.model_fields)
    assert set(ClickBody.__struct_fields__) == set(ClickEvent.model_fields)
