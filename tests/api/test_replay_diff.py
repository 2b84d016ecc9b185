"""The pure live-vs-shadow comparison and the adjustments promotion books."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from api.replays.diff import ChangeKind, EntryFacts, diff_ledgers, plan_adjustments

AT = datetime(2026, 11, 1, tzinfo=UTC)


def entry(entry_id: str, agent: str, amount: str, *, target: str | None = None) -> EntryFacts:
    return EntryFacts(
        entry_id=entry_id, target_id=target or entry_id, agent_id=agent, currency="USD",
        amount=Decimal(amount), program_id="prg", conversion_id="cv", order_id="o1",
        line_item_id="1", level=0, fx_rate=Decimal(1), rule_id="r", rule_version=1, occurred_at=AT,
    )  # fmt: skip


def test_a_changed_rate_is_a_changed_entry_with_its_difference_per_agent() -> None:
    live = [entry("le_1", "ana", "10.00"), entry("le_2", "boss", "0.50")]
    shadow = [entry("le_1", "ana", "20.00"), entry("le_2", "boss", "0.50")]
    diff = diff_ledgers(live, shadow)
    assert [(c.target_id, c.kind) for c in diff.changes] == [("le_1", ChangeKind.CHANGED)]
    assert [(t.agent_id, t.live, t.shadow, t.delta) for t in diff.totals] == [
        ("ana", Decimal("10.00"), Decimal("20.00"), Decimal("10.00")),
        ("boss", Decimal("0.50"), Decimal("0.50"), Decimal(0)),
    ]
    [adjustment] = plan_adjustments("t1", "rpl_1", diff)
    assert (adjustment.agent_id, adjustment.amount) == ("ana", Decimal("10.00"))


def test_an_entry_moving_to_another_agent_is_a_minus_and_a_plus() -> None:
    diff = diff_ledgers([entry("le_1", "ana", "10.00")], [entry("le_1", "bob", "10.00")])
    plan = plan_adjustments("t1", "rpl_1", diff)
    assert sorted((a.agent_id, a.amount) for a in plan) == [
        ("ana", Decimal("-10.00")),
        ("bob", Decimal("10.00")),
    ]
    assert len({a.entry_id for a in plan}) == 2


def test_added_and_missing_entries() -> None:
    diff = diff_ledgers([entry("le_live", "ana", "4.00")], [entry("le_new", "ana", "3.00")])
    assert [(c.target_id, c.kind) for c in diff.changes] == [
        ("le_live", ChangeKind.MISSING),
        ("le_new", ChangeKind.ADDED),
    ]
    assert sorted(a.amount for a in plan_adjustments("t1", "rpl_1", diff)) == [
        Decimal("-4.00"),
        Decimal("3.00"),
    ]


def test_booked_corrections_count_on_the_live_side_so_nothing_is_booked_twice() -> None:
    live = [entry("le_1", "ana", "10.00")]
    shadow = [entry("le_1", "ana", "20.00")]
    [adjustment] = plan_adjustments("t1", "rpl_1", diff_ledgers(live, shadow))
    corrected = [*live, entry(adjustment.entry_id, "ana", "10.00", target="le_1")]
    assert diff_ledgers(corrected, shadow).is_empty
    assert plan_adjustments("t1", "rpl_2", diff_ledgers(corrected, shadow)) == []


def test_adjustment_ids_derive_from_replay_entry_and_agent() -> None:
    diff = diff_ledgers([entry("le_1", "ana", "1.00")], [entry("le_1", "ana", "2.00")])
    first = plan_adjustments("t1", "rpl_1", diff)
    assert first == plan_adjustments("t1", "rpl_1", diff)
    assert first[0].entry_id != plan_adjustments("t1", "rpl_2", diff)[0].entry_id


def test_fields_other_than_money_do_not_count_as_changes() -> None:
    live = [entry("le_1", "ana", "1.00")]
    shadow = [replace(entry("le_1", "ana", "1.00"), rule_version=2)]
    assert diff_ledgers(live, shadow).is_empty
