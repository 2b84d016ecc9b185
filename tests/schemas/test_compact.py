"""Compact pickling (`schemas.compact`, `WireDatetime.__reduce_ex__`): what the dataflow keeps in
recovery snapshots and sends between workers loads back equal, with the wire timestamps' text;
pickles written in pydantic's own format (snapshots of earlier versions) still load; a model
pickled before a field was appended loads with that field's default; and each model's field order
is pinned, since compact pickles carry values by position. An order's facts (`ConversionLine`,
`Conversion`) were pydantic models and are msgspec structs since 2026-12-08: their pickles of
both earlier formats load as structs."""

from __future__ import annotations

import copy
import pickle
import subprocess
import sys
from datetime import UTC, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from pydantic import BaseModel, Field

from schemas.compact import CompactPickle, rebuild_model, trusted, trusted_replace
from schemas.conversion import Conversion, ConversionLine, OrderRefund, RefundedLine, load_state
from schemas.events.wire import WireDatetime, wire_text
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CandidateKind,
    CommissionAccrual,
    EntryApproval,
    EntryKind,
    EntryStatus,
    RejectedCandidate,
    RejectionCode,
)

# Positional: appending a field is fine, any other change breaks resuming snapshots.
FIELD_ORDER: dict[type[BaseModel] | type[msgspec.Struct], tuple[str, ...]] = {
    ConversionLine: ("line_id", "product_id", "collection_ids", "quantity", "unit_price",
                     "discount", "included_tax"),
    Conversion: ("tenant_id", "shop", "order_id", "order_name", "occurred_at", "currency",
                 "customer_id", "customer_email", "coupon_codes", "click_ids", "visitor_id",
                 "lines", "order_discount", "source_event_id"),
    RefundedLine: ("line_id", "quantity"),
    OrderRefund: ("refund_id", "order_id", "occurred_at", "lines", "source_event_id"),
    RejectedCandidate: ("kind", "ref", "agent_id", "program_id", "link_code", "at", "code",
                        "reason"),
    AttributedConversion: ("conversion_id", "tenant_id", "shop", "order_id", "order_name",
                           "occurred_at", "attributed_at", "rule", "agent_id", "program_id",
                           "click_id", "link_code", "coupon_code", "customer_id",
                           "is_new_customer", "currency", "revenue", "fx_rate", "explanation",
                           "source_event_id", "rejected"),
    CommissionAccrual: ("entry_id", "tenant_id", "agent_id", "program_id", "conversion_id",
                        "order_id", "line_item_id", "kind", "status", "level", "amount",
                        "currency", "fx_rate", "rule_id", "rule_version", "occurred_at",
                        "reason", "source_event_id", "shop", "coupon_code", "link_code"),
    EntryApproval: ("tenant_id", "entry_id", "approved_at", "reason"),
}  # fmt: skip

AT = WireDatetime.from_wire("2026-03-10T12:00:00.25-05:00")


def conversion() -> Conversion:
    return Conversion(
        tenant_id="t1", shop="s.myshopify.com", order_id="1001", order_name="#1001",
        occurred_at=AT, currency="USD", customer_email=" A@B.test ", coupon_codes=("save10",),
        click_ids=("clk_1",), lines=(
            ConversionLine(line_id="l1", quantity=2, unit_price=Decimal("10.50")),
            ConversionLine(line_id="l2", product_id="p", collection_ids=("c",), quantity=1,
                           unit_price=Decimal("3"), discount=Decimal("0.5")),
        ), order_discount=Decimal("1.00"), source_event_id="ev1",
    )  # fmt: skip


def entry() -> CommissionAccrual:
    return CommissionAccrual(
        entry_id="le_1", tenant_id="t1", agent_id="a", program_id="p", conversion_id="cv",
        order_id="1001", kind=EntryKind.ACCRUAL, amount=Decimal("2.10"), currency="USD",
        occurred_at=AT, source_event_id="ev1", shop="s.myshopify.com", link_code="lnk",
    )  # fmt: skip


def structs() -> list[Conversion | ConversionLine]:
    c = conversion()
    return [c, c.lines[1]]


def models() -> list[BaseModel]:
    refund = OrderRefund(refund_id="r1", order_id="1001", occurred_at=AT, source_event_id="ev2",
                         lines=(RefundedLine(line_id="l1", quantity=1),))  # fmt: skip
    rejected = RejectedCandidate(
        kind=CandidateKind.CLICK, ref="clk_2", agent_id="b", at=AT,
        code=RejectionCode.SELF_REFERRAL, reason="self",
    )  # fmt: skip
    decided = AttributedConversion(
        conversion_id="cv", tenant_id="t1", shop=None, order_id="1001", order_name=None,
        occurred_at=AT, attributed_at=AT, click_id=None, link_code=None, customer_id=None,
        rule=AttributionRule.COUPON, agent_id="a", program_id="p", coupon_code="SAVE10",
        is_new_customer=True, currency="USD", revenue=Decimal("23.50"), explanation="coupon",
        source_event_id="ev1", rejected=(rejected,),
    )  # fmt: skip
    approval = EntryApproval(tenant_id="t1", entry_id="le_1", approved_at=AT, reason="hold")
    return [refund, rejected, decided, entry(), approval]


def test_field_order_is_pinned() -> None:
    for model, names in FIELD_ORDER.items():
        if issubclass(model, msgspec.Struct):
            assert model.__struct_fields__ == names, f"{model.__name__}: only append fields"
            continue
        assert issubclass(model, CompactPickle), model
        assert tuple(model.model_fields) == names, (
            f"{model.__name__}'s fields changed order or were removed: compact pickles in "
            "recovery snapshots carry values by position; only append fields"
        )


@pytest.mark.parametrize("model", models(), ids=lambda m: type(m).__name__)
def test_round_trip_is_equal_and_keeps_wire_text(model: BaseModel) -> None:
    loaded = pickle.loads(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    assert loaded == model
    assert loaded.model_dump_json() == model.model_dump_json()
    assert copy.deepcopy(model) == model
    with pytest.raises(Exception, match="frozen"):
        loaded.tenant_id = "other"  # type: ignore[attr-defined]


def test_compact_pickle_is_smaller_than_pydantics_own() -> None:
    c = entry()
    compact = pickle.dumps(c, protocol=pickle.HIGHEST_PROTOCOL)
    own = pickle.dumps(
        (type(c), BaseModel.__getstate__(c)), protocol=pickle.HIGHEST_PROTOCOL
    )  # what pydantic pickles as the state
    assert len(compact) < len(own)


def test_pickles_in_pydantics_own_format_still_load() -> None:
    """A snapshot of an earlier version pickled models with `copyreg.__newobj__` + state."""
    for model in models():
        cls = type(model)
        old = cls.__new__(cls)
        old.__setstate__(BaseModel.__getstate__(model))  # what unpickling such a pickle does
        assert old == model
        payload = pickle.dumps(_OldFormat(model), protocol=pickle.HIGHEST_PROTOCOL)
        assert pickle.loads(payload) == model


class _OldFormat:
    """Pickles `model` the way pydantic did before `CompactPickle`."""

    def __init__(self, model: BaseModel) -> None:
        self.model = model

    def __reduce__(self) -> tuple[object, ...]:
        return (
            copyreg_newobj, (type(self.model),), BaseModel.__getstate__(self.model),
        )  # fmt: skip


def copyreg_newobj(cls: type[BaseModel]) -> BaseModel:
    return cls.__new__(cls)


@pytest.mark.parametrize("made", structs(), ids=lambda m: type(m).__name__)
def test_a_struct_round_trips_equal_with_its_wire_text(made: Conversion | ConversionLine) -> None:
    payload = pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL)
    loaded = pickle.loads(payload)
    assert loaded == made
    assert type(loaded) is type(made)
    assert b"line_id" not in payload  # values by position, not names
    assert copy.deepcopy(made) == made
    if isinstance(made, Conversion):
        assert type(loaded.occurred_at) is WireDatetime
        assert wire_text(loaded.occurred_at) == wire_text(made.occurred_at)
        assert loaded.conversion_id == made.conversion_id
    with pytest.raises(AttributeError):
        loaded.line_id = "other"  # type: ignore[misc]


def _old_pickles(made: Conversion | ConversionLine) -> list[bytes]:
    """`made` pickled as the pydantic model it was: in `CompactPickle`'s format (values by
    position through `rebuild_model`) and in pydantic's own (`__newobj__` + its state)."""
    values = msgspec.structs.astuple(made)
    if isinstance(made, Conversion):  # its lines pickled as the old models they were
        index = Conversion.__struct_fields__.index("lines")
        old_lines = tuple(
            _Reduced((rebuild_model, (ConversionLine, msgspec.structs.astuple(line))))
            for line in made.lines
        )
        values = (*values[:index], old_lines, *values[index + 1 :])
    names = type(made).__struct_fields__
    state = {"__dict__": dict(zip(names, values, strict=True)),
             "__pydantic_fields_set__": set(names), "__pydantic_extra__": None,
             "__pydantic_private__": None}  # fmt: skip
    compact = pickle.dumps(_Reduced((rebuild_model, (type(made), values))))
    own = pickle.dumps(_Reduced((copyreg_newobj, (type(made),), state)))
    return [compact, own]


class _Reduced:
    def __init__(self, reduced: tuple[object, ...]) -> None:
        self.reduced = reduced

    def __reduce__(self) -> tuple[object, ...]:
        return self.reduced


@pytest.mark.parametrize("made", structs(), ids=lambda m: type(m).__name__)
def test_pickles_of_the_former_pydantic_models_load_as_structs(
    made: Conversion | ConversionLine,
) -> None:
    compact, own = _old_pickles(made)
    assert pickle.loads(compact) == made
    assert type(pickle.loads(compact)) is type(made)
    with pytest.raises(TypeError):  # pydantic's format: a struct cannot be made empty
        pickle.loads(own)
    for loaded in (load_state(compact), load_state(own)):  # what snapshots are read with
        assert loaded == made
        assert type(loaded) is type(made)


def test_a_struct_pickled_before_a_field_was_appended_gets_its_default() -> None:
    line = conversion().lines[1]
    values = msgspec.structs.astuple(line)[:-2]  # as if discount and included_tax came later
    loaded = rebuild_model(ConversionLine, values)  # type: ignore[arg-type]
    assert loaded == msgspec.structs.replace(line, discount=Decimal(0))


def test_a_field_appended_later_gets_its_default() -> None:
    e = entry()
    values = tuple(e.__dict__[name] for name in FIELD_ORDER[CommissionAccrual][:-3])
    loaded = rebuild_model(CommissionAccrual, values)
    assert loaded.shop is None
    assert loaded.coupon_code is None
    assert loaded.link_code is None
    assert loaded.amount == e.amount
    assert loaded.entry_id == e.entry_id


def test_wire_datetimes_keep_their_text_and_zone() -> None:
    cases = [
        WireDatetime.from_wire("2026-03-10T12:00:00Z"),
        WireDatetime.from_wire("2026-03-10T12:00:00.123456+05:30"),
        WireDatetime.from_wire("2026-03-10 12:00:00", naive_tz=timezone(timedelta(hours=-3))),
        WireDatetime.from_wire("2026-03-10T12:00:00+00:00", naive_tz=UTC),
    ]
    for value in cases:
        loaded = pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        assert type(loaded) is WireDatetime
        assert loaded == value
        assert loaded.utcoffset() == value.utcoffset()
        assert wire_text(loaded) == wire_text(value)
    computed = cases[0] + timedelta(seconds=1)  # a derived instant has no text
    assert pickle.loads(pickle.dumps(computed)) == computed


def test_a_process_that_never_pickled_the_model_loads_it() -> None:
    """Another bytewax worker (or a resumed process) loads what this one pickled."""
    payload = pickle.dumps(models(), protocol=pickle.HIGHEST_PROTOCOL)
    code = (
        "import pickle, sys\n"
        "loaded = pickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.write(repr([type(m).__name__ for m in loaded]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, check=False,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode() == repr([type(m).__name__ for m in models()])


@pytest.mark.parametrize("model", models(), ids=lambda m: type(m).__name__)
def test_trusted_makes_what_validation_makes(model: BaseModel) -> None:
    """`trusted` on a model's validated values: equal, same dumps, same fields set; and a
    default left out is filled as validation fills it."""
    values = {name: getattr(model, name) for name in model.model_fields_set}
    made = trusted(type(model), **values)
    assert made == model
    assert made.model_dump_json() == model.model_dump_json()
    assert made.model_fields_set == model.model_fields_set
    assert list(made.__dict__) == list(type(model).model_fields)  # field order, for pickles
    assert pickle.loads(pickle.dumps(made)) == model


@pytest.mark.parametrize("model", models(), ids=lambda m: type(m).__name__)
def test_trusted_replace_makes_what_validation_makes(model: BaseModel) -> None:
    """A model with some values replaced: what validation makes of the changed values, with
    the replaced fields set and its own dict; the model it came from unchanged."""
    values = {name: getattr(model, name) for name in model.model_fields_set}
    before = model.model_dump()
    for name in type(model).model_fields:
        value = getattr(model, name)
        change = f"{value}!" if isinstance(value, str) else None
        if change is None or "id" not in name:
            continue
        made = trusted_replace(model, **{name: change})
        expected = type(model)(**values | {name: change})
        assert made == expected
        assert made.model_dump_json() == expected.model_dump_json()
        assert made.model_fields_set == expected.model_fields_set
        assert list(made.__dict__) == list(type(model).model_fields)
        assert pickle.loads(pickle.dumps(made)) == expected
        assert made.__dict__ is not model.__dict__
        assert made.model_fields_set is not model.model_fields_set
    assert model.model_dump() == before


def test_trusted_replace_sets_a_default_it_replaces() -> None:
    made = trusted_replace(entry(), level=2, status=EntryStatus.HOLD)
    assert made == entry().model_copy(update={"level": 2, "status": EntryStatus.HOLD})
    assert made.model_fields_set == entry().model_fields_set | {"level", "status"}
    with pytest.raises(TypeError, match="unknown fields \\['nope'\\]"):
        trusted_replace(entry(), level=1, nope=1)


def test_trusted_refuses_unknown_and_missing_fields() -> None:
    values = {name: getattr(entry(), name) for name in entry().model_fields_set}
    with pytest.raises(TypeError, match="unknown fields \\['nope'\\]"):
        trusted(CommissionAccrual, **values, nope=1)
    del values["entry_id"]
    with pytest.raises(TypeError, match="missing \\['entry_id'\\]"):
        trusted(CommissionAccrual, **values)

    class WithFactory(BaseModel):
        items: list[int] = Field(default_factory=list)

    with pytest.raises(TypeError, match="default factory"):
        trusted(WithFactory)
