"""The live fan-out writes its messages straight from the rows (`live.live_messages`): the
bytes must be those of the pydantic messages (`live_batches(...)[i].to_bytes()`), which the
API and the dashboards parse, for every row the sink can be given."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflows.sinks import live
from dataflows.sinks.clickhouse import COLUMNS
from dataflows.sinks.live import live_batches, live_messages
from schemas.live import LiveBatch

offsets = st.one_of(
    st.just(UTC),
    st.integers(min_value=-14 * 60, max_value=14 * 60).map(
        lambda minutes: timezone(timedelta(minutes=minutes))
    ),
    # sub-minute offsets: pydantic truncates them where orjson would round
    st.integers(min_value=-50_000, max_value=50_000).map(
        lambda seconds: timezone(timedelta(seconds=seconds))
    ),
)
times = st.datetimes(
    min_value=datetime(1970, 1, 2),  # noqa: DTZ001
    max_value=datetime(2299, 12, 31),  # noqa: DTZ001
    timezones=offsets,
)
ids = st.text(min_size=1, max_size=12)  # any text: escapes must match too
maybe = st.none() | ids
money = st.decimals(allow_nan=False, allow_infinity=False, places=None).filter(
    lambda d: abs(d) < Decimal(10) ** 14
)
tenants = st.sampled_from(["t1", "t2", "t3"])


def conversion_row(tenant: str, *values: Any) -> tuple[Any, ...]:
    cid, name, order_id, agent, program, revenue, currency, at, rule = values
    fields = dict.fromkeys(COLUMNS["conversions"])
    fields.update(
        tenant_id=tenant, conversion_id=cid, order_name=name, order_id=order_id, agent_id=agent,
        program_id=program, revenue=revenue, currency=currency, occurred_at=at, rule=rule,
    )  # fmt: skip
    return tuple(fields.values())


def entry_row(tenant: str, *values: Any) -> tuple[Any, ...]:
    eid, agent, cid, order_id, amount, currency, kind = values
    fields = dict.fromkeys(COLUMNS["commission_events"])
    fields.update(
        tenant_id=tenant, entry_id=eid, agent_id=agent, conversion_id=cid, order_id=order_id,
        amount=amount, currency=currency, kind=kind,
    )  # fmt: skip
    return tuple(fields.values())


conversions = st.builds(
    conversion_row, tenants, ids, st.none() | st.just("") | ids, ids, maybe, maybe, money,
    st.sampled_from(["EUR", "USD"]), times, st.sampled_from(["coupon", "last_click"]),
)  # fmt: skip
entries = st.builds(
    entry_row, tenants, ids, ids, ids, ids, money, st.sampled_from(["EUR", "JPY"]),
    st.sampled_from(["accrual", "reversal"]),
)  # fmt: skip


def through_models(per_table: dict[str, list[tuple[Any, ...]]], written_at: datetime,
                   max_items: int) -> list[tuple[str, bytes]]:  # fmt: skip
    batches = live_batches(per_table, COLUMNS, written_at, max_items)
    return [(b.tenant_id, b.to_bytes()) for b in batches]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(conversions, max_size=8), st.lists(entries, max_size=8), times,
    st.integers(min_value=1, max_value=6),
)  # fmt: skip
def test_messages_are_the_pydantic_bytes(
    convs: list[tuple[Any, ...]], ents: list[tuple[Any, ...]], written_at: datetime, max_items: int
) -> None:
    per_table = {"conversions": convs, "commission_events": ents, "clicks": [("ignored",)]}
    expected = through_models(per_table, written_at, max_items)
    assert live_messages(per_table, COLUMNS, written_at, max_items) == expected


def test_ordinary_rows_take_the_direct_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """The rows the flow writes (UTC and whole-minute offsets, Decimals) are encoded without the
    models (which cost ~10x more), and the bytes are what readers parse."""

    def no_models(*_: object) -> list[tuple[str, bytes]]:
        raise AssertionError("went through the pydantic models")

    monkeypatch.setattr(live, "_through_models", no_models)
    at = datetime(2026, 11, 25, 4, 3, 2, 1000, tzinfo=timezone(timedelta(hours=-5)))
    row = conversion_row(
        "t1", "cv_1", "#1", "1", "agt", None, Decimal("12.30"), "EUR", at, "coupon"
    )
    entry = entry_row("t1", "le_1", "agt", "cv_1", "1", Decimal("-1.23"), "EUR", "reversal")
    written = datetime(2026, 11, 25, 9, tzinfo=UTC)
    per_table = {"conversions": [row], "commission_events": [entry]}
    ((tenant, message),) = live_messages(per_table, COLUMNS, written)
    assert tenant == "t1"
    assert message == (
        b'{"v":1,"tenant_id":"t1","written_at":"2026-11-25T09:00:00Z","conversions":[{"id":'
        b'"cv_1","order":"#1","agent_id":"agt","program_id":null,"revenue":"12.30","currency":'
        b'"EUR","occurred_at":"2026-11-25T04:03:02.001000-05:00","rule":"coupon","order_id":"1"}'
        b'],"entries":[{"id":"le_1","agent_id":"agt","conversion_id":"cv_1","order":"1",'
        b'"amount":"-1.23","currency":"EUR","kind":"reversal"}]}'
    )
    batch = LiveBatch.from_bytes(message)
    assert (batch.conversions[0].occurred_at, batch.entries[0].amount) == (at, Decimal("-1.23"))
