"""Order books as plain values for snapshots: `pack_book` / `unpack_book`. Pure: no I/O, no clock.

A book holds the order's facts (msgspec structs: the conversion and its lines), pydantic models
(ledger entries, refunds), a decision,
Decimals, enums and parsed timestamps. Pickled as objects (`CompactPickle` for the models), each
of those is a Python-level `__reduce__` call, a class looked up by name, or both: measured on the
bench's one-line order books (`bench.order_path`, one-off timing), 26 µs and 1.6 KB a book, most
of the order path's pickling. Here a book becomes one tuple of strings, ints and tuples before
`pickle` sees it, so pickling is the C loop over plain values:

- each model is the tuple of its field values in field order (`CompactPickle`'s contract:
  fields are only appended, so a shorter tuple from an older book gets the defaults of the
  fields added since; `tests/schemas/test_compact.py` pins the field order);
- a `Decimal` is its text (exact: `Decimal(str(d)) == d` with the same exponent), an enum its
  value, a timestamp parsed from text that named its UTC offset (`WireDatetime`) that text;
- anything else (a computed datetime, a decision's rejected candidates, sets) is left as it is,
  for `pickle` to handle as before: correct, only not faster.

Books written by `pickle.dumps(book)` before this module (snapshots of older versions) still
load: `unpack_book` recognises them and fills fields they lack with their defaults.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import msgspec
from pydantic import BaseModel

from dataflows.attribution.logic import AttributionDecision
from dataflows.commission.adjustments import Cancellation
from dataflows.commission.book import OrderBook
from schemas.compact import _made, _names
from schemas.conversion import Conversion, ConversionLine, OrderRefund, RefundedLine, load_state
from schemas.events.wire import WireDatetime
from schemas.ledger import AttributionRule, CommissionAccrual, EntryKind, EntryStatus

# The first element of a packed book's tuple: the layout below. A new layout gets a new number
# and `unpack_book` keeps reading the old ones.
FORMAT = 1

Encode = Callable[[Any], Any]


def _decimal_out(value: Any) -> Any:
    return str(value) if type(value) is Decimal else value


def _decimal_in(value: Any) -> Any:
    return Decimal(value) if type(value) is str else value


def _time_out(value: Any) -> Any:
    """A timestamp parsed from text naming its offset → that text; any other value as it is."""
    if isinstance(value, WireDatetime) and getattr(value, "_offset_in_text", False):
        return value._source_text  # read back as a WireDatetime, as pickle did (`__reduce_ex__`)
    return value


def _time_in(value: Any) -> Any:
    if type(value) is not str:
        return value
    # A book's entries carry its order's time: parsed once per text (and shared, as the
    # unpickled objects were). Bounded: cleared at each book (`unpack_book`).
    parsed = _TIMES.get(value)
    if parsed is None:
        parsed = _TIMES[value] = WireDatetime.from_wire(value)
    return parsed


_TIMES: dict[str, datetime] = {}


def _enum_in(cls: type[Enum]) -> Encode:
    members = {member._value_: member for member in cls}
    return lambda value: members.get(value, value) if type(value) is str else value


def _enum_out(value: Any) -> Any:
    return value._value_ if isinstance(value, Enum) else value


class _ModelCodec:
    """One model class: its values in field order, with the named fields converted."""

    __slots__ = ("cls", "getter", "inward", "names", "outward")

    def __init__(self, cls: type[BaseModel], **special: tuple[Encode, Encode]) -> None:
        names = _names(cls)
        unknown = set(special) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
        self.cls, self.names = cls, names
        self.getter: Callable[[dict[str, Any]], tuple[Any, ...]] = cls._compact_values  # type: ignore[attr-defined]
        self.outward = [(names.index(name), out) for name, (out, _) in special.items()]
        self.inward = [(names.index(name), in_) for name, (_, in_) in special.items()]

    def encode(self, model: Any) -> list[Any]:
        values = list(self.getter(model.__dict__))
        for index, out in self.outward:
            values[index] = out(values[index])
        return values

    def decode(self, values: Sequence[Any]) -> Any:
        """The model of `encode`'s values (not changed: `unpack_book` keeps them for reuse)."""
        names = self.names
        if len(values) < len(names):  # packed before fields were added: they get defaults
            values = [*values, *_defaults_after(self.cls, len(values))]
        if self.inward:
            converted = list(values)
            for index, in_ in self.inward:
                converted[index] = in_(converted[index])
            values = converted
        return _made(self.cls, dict(zip(names, values, strict=True)), set(names))


def _defaults_after(cls: type[BaseModel], count: int) -> list[Any]:
    return [
        cls.model_fields[name].get_default(call_default_factory=True)
        for name in _names(cls)[count:]
    ]


class _StructCodec:
    """One msgspec struct class (`ConversionLine`, `Conversion`), packed as `_ModelCodec` packs
    a model: its values in field order (the order the pydantic models had, so books packed
    before keep loading), the named fields converted. Loading checks the values again
    (`__post_init__`)."""

    __slots__ = ("cls", "inward", "names", "outward")

    def __init__(self, cls: type[msgspec.Struct], **special: tuple[Encode, Encode]) -> None:
        names = cls.__struct_fields__
        unknown = set(special) - set(names)
        if unknown:
            raise TypeError(f"{cls.__name__} has no fields {sorted(unknown)}")
        self.cls, self.names = cls, names
        self.outward = [(names.index(name), out) for name, (out, _) in special.items()]
        self.inward = [(names.index(name), in_) for name, (_, in_) in special.items()]

    def encode(self, model: Any) -> list[Any]:
        values = list(msgspec.structs.astuple(model))
        for index, out in self.outward:
            values[index] = out(values[index])
        return values

    def decode(self, values: Sequence[Any]) -> Any:
        converted = list(values)
        for index, in_ in self.inward:
            if index < len(converted):  # (fields packed before one was added get its default)
                converted[index] = in_(converted[index])
        return self.cls(**dict(zip(self.names, converted, strict=False)))


def _many(codec: _ModelCodec | _StructCodec) -> tuple[Encode, Encode]:
    """A tuple-of-models field."""
    return (
        lambda models: [codec.encode(m) for m in models],
        lambda values: tuple(codec.decode(v) for v in values),
    )


DECIMAL = (_decimal_out, _decimal_in)
TIME = (_time_out, _time_in)

_LINE = _StructCodec(
    ConversionLine, unit_price=DECIMAL, discount=DECIMAL, included_tax=DECIMAL
)  # fmt: skip
_CONVERSION = _StructCodec(
    Conversion, occurred_at=TIME, order_discount=DECIMAL, lines=_many(_LINE)
)  # fmt: skip
_ENTRY = _ModelCodec(
    CommissionAccrual,
    kind=(_enum_out, _enum_in(EntryKind)),
    status=(_enum_out, _enum_in(EntryStatus)),
    amount=DECIMAL,
    fx_rate=DECIMAL,
    occurred_at=TIME,
)
_REFUND = _ModelCodec(OrderRefund, occurred_at=TIME, lines=_many(_ModelCodec(RefundedLine)))

_DECISION_FIELDS = tuple(f.name for f in fields(AttributionDecision))
_RULES_IN = _enum_in(AttributionRule)
_BOOK_FIELDS = fields(OrderBook)


def _default(f: Any) -> Any:
    """A book field's default, made anew (a list or set must not be shared between books)."""
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _decision_out(decision: AttributionDecision) -> list[Any]:
    values = [getattr(decision, name) for name in _DECISION_FIELDS]
    values[0] = _enum_out(values[0])
    return values


def _decision_in(values: list[Any]) -> AttributionDecision:
    decision = object.__new__(AttributionDecision)  # frozen: its __init__ sets field by field
    decision.__dict__.update(zip(_DECISION_FIELDS, values, strict=False))
    decision.__dict__["rule"] = _RULES_IN(values[0])
    for f in fields(AttributionDecision)[len(values) :]:  # fields added since it was packed
        decision.__dict__[f.name] = f.default
    return decision


@dataclass(slots=True)
class _Unpacked:
    """The book `unpack_book` made last, and the packed values of its conversion, decision,
    entries and refunds. Models and decisions are immutable, so while the book still holds the
    same objects, `pack_book` packs those values again instead of encoding the objects (a
    follow-up encodes only what it added). One book: the one being changed."""

    book: OrderBook | None = None
    conversion: tuple[Conversion | None, Any] = (None, None)
    decision: tuple[AttributionDecision | None, Any] = (None, None)
    entries: list[tuple[CommissionAccrual, Any]] = field(default_factory=list)
    refunds: list[tuple[OrderRefund, Any]] = field(default_factory=list)


_LAST = _Unpacked()
_NONE = _Unpacked()  # for a book other than the last unpacked one: never changed


def _reused(
    models: list[Any], known: list[tuple[Any, Any]], encode: Callable[[Any], Any]
) -> list[Any]:
    """Each model's packed values: the known ones while the list starts with the same models."""
    if not known:
        return [encode(model) for model in models]
    values = []
    for index, model in enumerate(models):
        if index < len(known) and known[index][0] is model:
            values.append(known[index][1])
        else:
            values.append(encode(model))
    return values


def pack_book(book: OrderBook) -> bytes:
    """The book as bytes (see the module docstring); `unpack_book` gives an equal book."""
    cancellation = book.cancellation
    last = _LAST if book is _LAST.book else _NONE
    conversion, decision = book.conversion, book.decision
    values = (
        FORMAT,
        last.conversion[1] if conversion is last.conversion[0] else _CONVERSION.encode(conversion),
        last.decision[1] if decision is last.decision[0] else _decision_out(decision),
        book.received_ms,
        book.chain,
        book.rule_key,
        _decimal_out(book.period_volume),
        book.is_new_customer,
        _reused(book.entries, last.entries, _ENTRY.encode),
        _reused(book.refunds, last.refunds, _REFUND.encode),
        book.cancelled,
        book.paid_ms,
        book.paid_invoice,
        book.approved,
        _decimal_out(book.fx_rate),
        None if cancellation is None else (
            _time_out(cancellation.occurred_at), cancellation.source_event_id
        ),
    )  # fmt: skip
    return pickle.dumps(values, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_book(data: bytes) -> OrderBook:
    """The book `pack_book` packed, or one `pickle.dumps(book)` wrote (older snapshots)."""
    _TIMES.clear()
    _LAST.book = None
    loaded = load_state(data)  # (a book pickled whole may hold facts in a former format)
    if isinstance(loaded, OrderBook):
        _complete(loaded)
        return loaded
    if loaded[0] != FORMAT:
        raise ValueError(f"an order book packed in format {loaded[0]!r}, not {FORMAT}")
    values = list(loaded[1:])
    values += [_default(f) for f in _BOOK_FIELDS[len(values) :]]  # fields added since
    conversion, decision, received_ms, chain, rule_key, period_volume, is_new = values[:7]
    entries, refunds, cancelled, paid_ms, paid_invoice, approved, fx_rate = values[7:14]
    cancellation = values[14]
    book = OrderBook(
        _CONVERSION.decode(conversion),
        _decision_in(decision),
        received_ms,
        chain,
        rule_key,
        _decimal_in(period_volume),
        is_new,
        [_ENTRY.decode(e) for e in entries],
        [_REFUND.decode(r) for r in refunds],
        cancelled,
        paid_ms,
        paid_invoice,
        approved,
        _decimal_in(fx_rate),
        None if cancellation is None else Cancellation(_time_in(cancellation[0]), cancellation[1]),
    )
    _LAST.book = book
    _LAST.conversion = (book.conversion, conversion)
    _LAST.decision = (book.decision, decision)
    _LAST.entries = list(zip(book.entries, entries, strict=True))
    _LAST.refunds = list(zip(book.refunds, refunds, strict=True))
    return book


def _complete(book: OrderBook) -> None:
    """Give the fields an older pickled book lacks their defaults."""
    for f in _BOOK_FIELDS:
        if not hasattr(book, f.name):
            setattr(book, f.name, _default(f))
