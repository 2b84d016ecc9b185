"""Sinks wait out an outage of their store (`dataflows.sinks.retry`); the chaos suite proves it
against real stopped servers, these pin the policy itself."""

from __future__ import annotations

import pytest

from dataflows.sinks.retry import with_retries


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_a_transient_error_is_retried_with_backoff_until_the_write_succeeds() -> None:
    clock, attempts, recovered = Clock(), [], []

    def write() -> str:
        attempts.append(clock.now)
        if len(attempts) < 6:
            raise ConnectionError("refused")
        return "written"

    result = with_retries(write, lambda e: isinstance(e, ConnectionError), store="x",
                          recover=lambda: recovered.append(1), sleep=clock.sleep,
                          clock=lambda: clock.now)  # fmt: skip
    assert result == "written"
    assert clock.sleeps == [0.2, 0.4, 0.8, 1.6, 3.2]
    assert len(recovered) == 5


def test_other_errors_and_outages_longer_than_the_limit_propagate() -> None:
    clock = Clock()

    def content() -> None:
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        with_retries(content, lambda e: isinstance(e, ConnectionError), store="x",
                     sleep=clock.sleep, clock=lambda: clock.now)  # fmt: skip
    assert clock.sleeps == []

    def down() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        with_retries(down, lambda e: isinstance(e, ConnectionError), store="x", max_wait_s=30,
                     sleep=clock.sleep, clock=lambda: clock.now)  # fmt: skip
    assert 30 <= sum(clock.sleeps) < 36
    assert max(clock.sleeps) == 5.0
