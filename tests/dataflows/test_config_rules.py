"""Pure rules of the configuration snapshot (built from rows, no database): cross rates, agents'
status histories and the override chain at an instant."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

from dataflows.attribution.logic import AgentStatus, StatusHistory
from dataflows.config import build_snapshot
from tests.dataflows.builders import T0, days, snapshot

OCT = datetime(2026, 10, 1, tzinfo=UTC)


def test_cross_rates_go_through_the_reporting_currency_at_the_given_instant() -> None:
    config = snapshot(
        "t1", reporting_currency="USD",
        fx_rates=[("EUR", "1.08", OCT), ("EUR", "1.10", T0), ("GBP", "1.25", OCT)],
    ).tenant("t1")  # fmt: skip
    # Units of the target per 1 of the source: USD rules on an EUR order.
    assert config.cross_rate("USD", "EUR", T0 - days(1)) == Fraction(100, 108)
    assert config.cross_rate("USD", "EUR", T0) == Fraction(100, 110)
    assert config.cross_rate("GBP", "EUR", T0) == Fraction(125, 110)
    assert config.cross_rate("EUR", "EUR", T0) == 1
    assert config.cross_rate("USD", "EUR", OCT - days(1)) is None  # no rate yet
    assert config.cross_rate("USD", "CHF", T0) is None
    assert config.fx_rate("EUR", T0) == Decimal("1.10")


def test_status_changes_load_into_histories_and_shorten_the_override_chain() -> None:
    agents = [
        ("t1", "ana", "mid", None, "active"),
        ("t1", "mid", "top", None, "terminated"),
        ("t1", "top", None, None, "active"),
        ("t1", "old", "top", None, "paused"),  # no history rows: paused at all times
    ]
    changes = [("t1", "mid", "active", T0 - days(30)), ("t1", "mid", "terminated", T0)]
    config = build_snapshot([], [], agents, [], agent_statuses=changes).tenant("t1")

    assert config.agents["mid"].statuses == StatusHistory(
        ((T0 - days(30), AgentStatus.ACTIVE), (T0, AgentStatus.TERMINATED))
    )
    assert config.agents["old"].statuses == StatusHistory(initial=AgentStatus.PAUSED)
    assert config.agents["ana"].statuses == StatusHistory()
    assert config.agent_chain("ana") == ("ana", "mid", "top")  # every agent, whatever its status
    assert config.agent_chain("ana", at=T0 - days(1)) == ("ana", "mid", "top")
    assert config.agent_chain("ana", at=T0) == ("ana", "top")  # top takes mid's level
    assert set(config.statuses({"mid", "ana", "nobody"})) == {"mid", "ana"}
    # Status changes are part of the configuration's version.
    other = build_snapshot([], [], agents, [], agent_statuses=changes[:1])
    same = build_snapshot([], [], agents, [], agent_statuses=list(changes))
    assert other.version != same.version
    assert same.version == build_snapshot([], [], agents, [], agent_statuses=changes).version
