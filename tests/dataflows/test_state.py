"""The tenant state machine driven directly: bounded state (expiry by event time), the
processing-time backstop for held orders, and snapshot/resume."""

from __future__ import annotations

import pickle
from datetime import timedelta

import pytest

from dataflows.attribution.events import Event, event_from_envelope
from dataflows.attribution.local import LocalAttribution, builder
from dataflows.config import StaticConfig
from dataflows.stages.base import Tuning
from schemas.events.envelope import EventEnvelope
from tests.dataflows.builders import T0, click, click_id, days, kinds, order, refund, snapshot

TENANT = "t_state"
MS = timedelta(milliseconds=1)
T0_MS = int(T0.timestamp() * 1000)


def event(envelope: EventEnvelope) -> Event:
    parsed = event_from_envelope(envelope, envelope.to_bytes())
    assert parsed is not None
    return parsed


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def logic(tuning: Tuning | None = None, clock: Clock | None = None) -> LocalAttribution:
    build = builder(StaticConfig(snapshot(TENANT, lookback_days=30)), tuning, clock or Clock(0))
    return build(None)


def test_clicks_and_dedup_ids_expire_by_event_time_inside_on_item() -> None:
    tuning = Tuning(allowed_lateness_ms=days(1) // MS)
    state_logic = logic(tuning)
    for n in range(1000):
        state_logic.on_item(event(click(TENANT, click_id(n), at=T0, visitor=f"v{n % 50}")))
    assert len(state_logic.state.clicks) == 1000

    # 30 days lookback + 1 day lateness later, the old clicks can no longer count for any order.
    just_inside = T0 + days(31) - timedelta(minutes=1)
    state_logic.on_item(event(click(TENANT, click_id("a"), at=just_inside)))
    assert len(state_logic.state.clicks) == 1001
    just_outside = T0 + days(31) + timedelta(seconds=1)
    state_logic.on_item(event(click(TENANT, click_id("b"), at=just_outside)))

    state = state_logic.state
    assert set(state.clicks) == {click_id("a"), click_id("b")}
    assert state.clicks.visitor_count() == 0
    assert len(state.clicks) == 2
    assert state.seen == {}  # clicks are deduplicated by the click index, not by event id


def test_live_click_state_is_compact() -> None:
    state_logic = logic()
    base = len(pickle.dumps(state_logic.state))
    clicks = 10_000
    for n in range(clicks):
        state_logic.on_item(event(click(TENANT, click_id(n), at=T0, visitor=f"v{n}")))
    per_click = (len(state_logic.snapshot()) - base) / clicks
    # click tuple + heap entry + visitor index + dedup id; printed figure is in the report
    assert per_click < 400, per_click


def test_held_order_is_released_by_the_processing_time_backstop() -> None:
    clock = Clock(1_000_000)
    tuning = Tuning(order_wait_wall_ms=60_000)
    state_logic = logic(tuning, clock)
    out, _ = state_logic.on_item(event(order(TENANT, 1001, at=T0, cites=click_id(9))))
    assert list(out) == []
    notify = state_logic.notify_at()
    assert notify is not None
    assert int(notify.timestamp() * 1000) == 1_060_000

    clock.now_ms = 1_060_000
    released, _ = state_logic.on_notify()
    assert kinds(released) == ["conversion"]
    assert state_logic.notify_at() is None
    assert state_logic.state.pending == {}


def test_snapshot_resumes_to_the_same_decisions() -> None:
    first = logic()
    first.on_item(event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1))))
    resumed = builder(StaticConfig(snapshot(TENANT)), None, Clock(0))(first.snapshot())

    out, _ = resumed.on_item(event(click(TENANT, click_id(1), at=T0)))
    tags = kinds(out)
    assert tags == ["conversion", "entry", "entry"]


def test_runs_without_snapshots_cannot_be_resumed_by_mistake() -> None:
    no_snapshots = Tuning(snapshots=False)
    first = logic(no_snapshots)
    first.on_item(event(click(TENANT, click_id(1), at=T0)))
    snapshot_bytes = first.snapshot()
    assert len(snapshot_bytes) < 10  # not the tenant's state

    build = builder(StaticConfig(snapshot(TENANT)), no_snapshots, Clock(0))
    with pytest.raises(RuntimeError, match="snapshots=False"):
        build(snapshot_bytes)


def test_a_run_without_snapshots_keeps_books_unpickled_with_the_same_outputs() -> None:
    """Replays (no snapshots) keep order books as objects instead of pickling them on every
    change; what they emit must not differ from a snapshotting run's."""
    events = [
        event(click(TENANT, click_id(1), at=T0)),
        event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1))),
        event(refund(TENANT, 1001, 77, [(1, 1)], at=T0 + days(2))),
        event(order(TENANT, 1001, at=T0 + days(3), cites=click_id(1), topic="orders/cancelled")),
        event(refund(TENANT, 1001, 77, [(1, 1)], at=T0 + days(2), event_id="again")),
    ]
    outputs = []
    for tuning in (Tuning(), Tuning(snapshots=False)):
        run = logic(tuning)
        outputs.append([out for e in events for out in run.on_item(e)[0]])
        stored = run.stored_books()["1001"]
        assert isinstance(stored, bytes) is tuning.snapshots
    with_snapshots, without = outputs
    assert kinds(with_snapshots).count("entry") >= 4  # accruals and reversals
    assert without == with_snapshots


def test_a_snapshot_written_with_one_click_dict_resumes_into_the_click_store() -> None:
    from dataflows.attribution.clicks import ClickStore
    from dataflows.stages.tenant import TenantState

    old = TenantState(tenant_id=TENANT)
    cid = click_id(1)
    old.clicks = {cid: (T0_MS, "agt_ana", "prg_main", "link", "v1", False, False)}  # type: ignore[assignment]
    old.visitors, old.click_heap = {"v1": [cid]}, [(T0_MS, cid)]
    resumed = builder(StaticConfig(snapshot(TENANT)), None, Clock(0))(pickle.dumps(old))
    assert isinstance(resumed.state.clicks, ClickStore)
    assert resumed.state.clicks.visitor_clicks("v1") == [cid]
    assert (resumed.state.visitors, resumed.state.click_heap) == ({}, [])
    out, _ = resumed.on_item(event(order(TENANT, 1001, at=T0 + days(1), cites=cid)))
    assert kinds(out) == ["conversion", "entry", "entry"]


def test_a_snapshot_written_when_the_tenant_stage_was_attribution_state_resumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Until 2026-12-08 the tenant stage was `dataflows.attribution.state`: its snapshots name
    their classes there, and resume into `dataflows.stages.tenant`."""
    import sys
    import types

    import dataflows.stages.tenant as tenant_module

    first = logic()
    first.on_item(event(click(TENANT, click_id(1), at=T0)))
    placed = event(order(TENANT, 1001, at=T0 + days(1), cites=click_id(1)))
    first.on_item(placed)
    # Pickled as the module of that name pickled it: its classes found under the former name.
    former = types.ModuleType("dataflows.attribution.state")
    for name in ("TenantState", "Pending"):
        cls = getattr(tenant_module, name)
        setattr(former, name, cls)
        monkeypatch.setattr(cls, "__module__", former.__name__)
    monkeypatch.setitem(sys.modules, former.__name__, former)
    written = pickle.dumps(first.state, protocol=pickle.HIGHEST_PROTOCOL)
    assert b"dataflows.attribution.state" in written
    monkeypatch.undo()
    assert "dataflows.attribution.state" not in sys.modules

    resumed = builder(StaticConfig(snapshot(TENANT)), None, Clock(0))(written)
    assert isinstance(resumed.state, tenant_module.TenantState)
    assert resumed.on_item(placed)[0] == []  # its seen ids came along: still a duplicate
