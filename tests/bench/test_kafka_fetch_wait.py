"""`bench.kafka_fetch_wait` runs against its own tansu broker and prints a row per wait (the figures
themselves are the bench's to print, not a test's to judge)."""

from __future__ import annotations

import re

import pytest

from bench import kafka_fetch_wait


def test_the_bench_prints_a_row_per_wait(capsys: pytest.CaptureFixture[str]) -> None:
    assert kafka_fetch_wait.main(["--waits", "50", "--events", "20", "--rate", "200",
                                  "--idle-seconds", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert re.search(r"^\s+50\s+\d+\s+\d+\s+\d\.\d{3}\s+\d\.\d{3}$", out, re.MULTILINE), out
    assert "note:" not in out  # every event was consumed
