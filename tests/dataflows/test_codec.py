"""Order books packed as plain values (`dataflows.commission.codec`) and packed only at snapshots
(`stages.tenant`): every book the engine makes comes back equal, with the same types;
books pickled by older versions still load; a snapshot packs each changed book once."""

from __future__ import annotations

import base64
import pickle
from collections.abc import Callable
from dataclasses import fields
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from msgspec.structs import replace
from pydantic import BaseModel

import dataflows.commission.codec as codec
import dataflows.stages.books as books_module
from dataflows.attribution.events import Event, event_from_envelope, parse_envelope
from dataflows.attribution.local import LocalAttribution, builder
from dataflows.commission.book import (
    OrderBook,
    apply_cancel,
    apply_edit,
    apply_refund,
    mark_paid,
)
from dataflows.commission.codec import FORMAT, pack_book, unpack_book
from dataflows.config import StaticConfig
from dataflows.stages.base import Tuning
from schemas.conversion import OrderRefund, RefundedLine
from schemas.events.envelope import EventEnvelope
from schemas.events.wire import WireDatetime
from schemas.ledger import CommissionAccrual
from tests.dataflows.builders import T0, click, click_id, days, kinds, order, refund, snapshot

TENANT = "t_codec"


def _event(envelope: EventEnvelope) -> Event:
    raw = envelope.to_bytes()
    event = event_from_envelope(parse_envelope(raw), raw)
    assert event is not None
    return event


def _logic(tuning: Tuning | None = None) -> LocalAttribution:
    config = StaticConfig(snapshot(TENANT, coupons={"ANA10": "agt_ana", "BOB5": "agt_bob"}))
    return builder(config, tuning, lambda: 0)(None)


def _books() -> list[OrderBook]:
    """Books as the engine makes them: one line and several, a coupon that beat a click (rejected
    candidates), refunds, a cancellation, an invoice paid, approvals emitted, an unattributed
    order, a customer, odd amounts."""
    logic = _logic()
    feed = [
        click(TENANT, click_id(1), at=T0, visitor="v1"),
        order(TENANT, 1001, at=T0 + days(1), cites=click_id(1), lines=((1, 2, "50.00"),)),
        order(TENANT, 1002, at=T0 + days(1), cites=click_id(1), coupon="BOB5", customer=7,
              lines=((1, 3, "19.99"), (2, 1, "0.01"), (3, 7, "1234.5"))),
        order(TENANT, 1003, at=T0 + days(2)),  # nobody's
        refund(TENANT, 1001, 71, [(1, 1)], at=T0 + days(3)),
        refund(TENANT, 1002, 72, [(1, 2), (3, 1)], at=T0 + days(3)),
        order(TENANT, 1002, at=T0 + days(4), cites=click_id(1), topic="orders/cancelled"),
    ]  # fmt: skip
    for envelope in feed:
        logic.on_item(_event(envelope))
    books = [logic.book(o) for o in ("1001", "1002", "1003")]
    mark_paid(books[0], 1_800_000_000_000, "INV/2026/00017")
    books[0].approved.add(books[0].entries[0].entry_id)
    assert books[1].refunds
    assert books[1].cancellation is not None
    assert books[1].decision.rejected, "the click lost to the coupon"
    assert not books[2].decision.attributed
    return books


def _same(a: Any, b: Any) -> None:
    """Equal, and of the same types all the way down (a Decimal's exponent, a timestamp's text)."""
    if isinstance(a, WireDatetime):  # the decoder's `Stamp` subclass comes back as its base,
        assert isinstance(b, WireDatetime)  # as it did from pickle
        assert (a, a.source_text, a.tzinfo) == (b, b.source_text, b.tzinfo)
        return
    assert type(a) is type(b), (a, b)
    if isinstance(a, OrderBook):
        for f in fields(OrderBook):
            _same(getattr(a, f.name), getattr(b, f.name))
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif isinstance(a, BaseModel):
        for name in type(a).model_fields:
            _same(getattr(a, name), getattr(b, name))
    elif isinstance(a, Decimal):
        assert str(a) == str(b)
    else:
        assert a == b


def test_every_book_comes_back_equal_with_the_same_types() -> None:
    for book in _books():
        packed = pack_book(book)
        _same(unpack_book(packed), book)
        assert len(packed) < len(pickle.dumps(book, protocol=pickle.HIGHEST_PROTOCOL))


def test_a_book_pickled_by_an_older_version_still_loads() -> None:
    book = _books()[1]
    older = pickle.dumps(book, protocol=pickle.HIGHEST_PROTOCOL)
    _same(unpack_book(older), book)
    del book.cancellation  # a book pickled before the field existed
    assert unpack_book(pickle.dumps(book)).cancellation is None


def test_fields_added_after_a_book_was_packed_get_their_defaults() -> None:
    book = _books()[0]
    layout = pickle.loads(pack_book(book))
    # Packed before `fx_rate` and `cancellation` (the book's last fields) and before the
    # entries' `link_code` (their last field) existed:
    older = (*layout[:-2],)
    older[8][0].pop()
    loaded = unpack_book(pickle.dumps(older))
    assert loaded.fx_rate == Decimal(1)
    assert loaded.cancellation is None
    assert loaded.entries[0].link_code is None
    assert loaded.entries[1].link_code == book.entries[1].link_code
    assert isinstance(loaded.entries[0], CommissionAccrual)


def test_a_layout_it_does_not_know_is_refused() -> None:
    with pytest.raises(ValueError, match="format 99"):
        unpack_book(pickle.dumps((99, "anything")))
    assert FORMAT == 1


def test_a_book_is_packed_when_it_changes_and_a_snapshot_packs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    packed: list[str] = []

    def counting(book: OrderBook) -> bytes:
        packed.append(book.conversion.order_id)
        return pack_book(book)

    monkeypatch.setattr(books_module, "pack_book", counting)
    for tuning, expected in ((Tuning(), ["1001", "1002", "1001"]), (Tuning(snapshots=False), [])):
        packed.clear()
        logic = _logic(tuning)
        logic.on_item(_event(click(TENANT, click_id(1), at=T0)))
        logic.on_item(_event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1))))
        logic.on_item(_event(order(TENANT, 1002, at=T0 + days(1), cites=click_id(1))))
        logic.on_item(_event(refund(TENANT, 1001, 71, [(1, 1)], at=T0 + days(2))))
        assert packed == expected  # each change, with snapshots; never without
        logic.snapshot()
        assert packed == expected  # a snapshot copies the bytes: it packs nothing
        stored = logic.stored_books()["1001"]
        assert isinstance(stored, bytes) is tuning.snapshots


def test_a_resumed_tenant_applies_follow_ups_to_its_packed_books_as_an_uninterrupted_one() -> None:
    follow_ups = [
        refund(TENANT, 1001, 71, [(1, 1)], at=T0 + days(2)),
        order(TENANT, 1001, at=T0 + days(3), cites=click_id(1), topic="orders/cancelled"),
    ]
    runs = []
    for resume in (False, True):
        logic = _logic()
        logic.on_item(_event(click(TENANT, click_id(1), at=T0)))
        logic.on_item(_event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1))))
        if resume:
            config = StaticConfig(snapshot(TENANT, coupons={"ANA10": "agt_ana"}))
            logic = builder(config, None, lambda: 0)(logic.snapshot())
            assert isinstance(logic.stored_books()["1001"], bytes)
        runs.append([out for e in follow_ups for out in logic.on_item(_event(e))[0]])
    assert runs[0] == runs[1]
    assert kinds(runs[0]).count("entry") >= 2


def test_the_book_functions_work_on_unpacked_books() -> None:
    book = unpack_book(pack_book(_books()[0]))
    refunded = OrderRefund(
        refund_id="r9", order_id="1001", occurred_at=datetime.fromisoformat("2026-01-20T00:00Z"),
        source_event_id="ev-r9", lines=(),
    )  # fmt: skip
    apply_refund(book, refunded, "ev-r9")
    assert apply_cancel(book, T0 + days(9), "ev-c") != []
    assert sum((e.amount for e in book.entries), Decimal(0)) == Decimal(0)
    assert codec._TIMES  # the per-book cache of parsed times was used


def test_books_packed_by_the_first_version_of_the_layout_still_load() -> None:
    """`order_books_format1.txt`: `_books()` packed by `pack_book` and pickled whole, each by the
    code of 2026-12-07 (commit aad080f): the packed one unpacks to its pickled twin."""
    path = Path(__file__).parents[1] / "fixtures" / "data" / "order_books_format1.txt"
    lines = path.read_text().split()
    assert len(lines) == 6
    for packed, pickled in zip(lines[::2], lines[1::2], strict=True):
        _same(unpack_book(base64.b64decode(packed)), pickle.loads(base64.b64decode(pickled)))


def _copied(book: OrderBook) -> OrderBook:
    """An equal book of other objects: packed from scratch, nothing reused."""
    copied: OrderBook = pickle.loads(pickle.dumps(book))
    return copied


def test_a_changed_book_repacks_as_one_packed_from_scratch() -> None:
    """`pack_book` reuses the packed values of what an unpacked book still holds: the result is
    the one encoding every part anew gives, whatever the change."""
    rules_rate = StaticConfig(snapshot(TENANT)).tenant(TENANT).rules_rate
    changes: list[Callable[[OrderBook], object]] = [
        lambda book: book.paid_invoice,  # nothing
        lambda book: book.approved.update(e.entry_id for e in book.entries[-1:]),
        lambda book: apply_refund(book, _refund_of(book, "r9"), "ev-r9"),
        lambda book: apply_cancel(book, T0 + days(9), "ev-c"),
        lambda book: mark_paid(book, 1_800_000_000_000, "INV/9"),
        lambda book: apply_edit(
            book, replace(book.conversion, order_discount=Decimal("1.00")), None,
            rules_rate, "ev-e", T0 + days(9),
        ),
        lambda book: book.entries.reverse(),
    ]  # fmt: skip
    for original in _books():
        for change in changes:
            book = unpack_book(pack_book(original))
            change(book)
            repacked, fresh = pack_book(book), pack_book(_copied(book))
            assert pickle.loads(repacked) == pickle.loads(fresh)
            _same(unpack_book(repacked), book)


def test_nothing_is_reused_for_another_book_or_a_replaced_part() -> None:
    first, second = _books()[:2]
    book = unpack_book(pack_book(first))
    assert pickle.loads(pack_book(second)) == pickle.loads(pack_book(_copied(second)))
    book.conversion = second.conversion
    _same(unpack_book(pack_book(book)).conversion, second.conversion)


def _refund_of(book: OrderBook, refund_id: str) -> OrderRefund:
    line = book.conversion.lines[0]
    return OrderRefund(
        refund_id=refund_id, order_id=book.conversion.order_id, source_event_id=f"ev-{refund_id}",
        occurred_at=datetime.fromisoformat("2026-11-20T00:00Z"),
        lines=(RefundedLine(line_id=line.line_id, quantity=1),),
    )  # fmt: skip
