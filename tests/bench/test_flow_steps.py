"""`bench.flow_steps` runs the live flow's steps in process and decides every order it is given
(a bench that measured a flow deciding nothing would print a meaningless figure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bench import flow_steps
from bench.dataflow import Plan
from tests.dataflows.builders import new_tenant


def test_run_flow_decides_every_order() -> None:
    plan = Plan(new_tenant(), 300, 40, 0.1, datetime(2026, 11, 1, tzinfo=UTC))
    seconds, conversions = flow_steps.run_flow(plan, flow_steps._values(plan))
    assert conversions == 40
    assert seconds > 0


def test_main_prints_both_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert flow_steps.main(["--clicks", "200", "--orders", "20", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "the flow's steps (attribution_steps)" in out
    assert "bare bytewax map, same values" in out
    assert "every order decided in every round: ok" in out
