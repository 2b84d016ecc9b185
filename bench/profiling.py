"""Where a dataflow process's time goes: py-spy's raw (collapsed) stacks summed by the flow's
stages, for `bench.dataflow --profile`.

Each sample is given to the deepest frame of the project's own code that it passes through
(the stage doing the work, with the libraries it calls: a ClickHouse insert counts for the
ClickHouse sink, a pydantic validation for the step that asked for it); a sample with no project
frame goes to the library at its leaf (bytewax's own Python, the Kafka client, imports at
start-up; a sample whose last Python frame is bytewax's entry point is its Rust core at work).
py-spy samples only running threads, so the figures are shares of the process's CPU
time, not of the wall time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

FRAME_RE = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

# (substring of a frame's file, stage): the first match of a frame names its stage.
PROJECT_STAGES: tuple[tuple[str, str], ...] = (
    ("dataflows/sinks/clickhouse.py", "ClickHouse sink (rows → inserts)"),
    ("dataflows/sinks/postgres.py", "ledger sink (PostgreSQL)"),
    ("dataflows/sinks/live.py", "live fan-out (Redis)"),
    ("dataflows/sinks/", "other sinks (dead letters, catalog)"),
    ("dataflows/batching.py", "sink batching"),
    ("dataflows/commission/", "commission (accrue, refunds, holds)"),
    ("dataflows/attribution/logic.py", "attribution decision"),
    ("dataflows/stages/tenant.py", "tenant state (bookkeeping)"),
    ("dataflows/stages/books.py", "order books (bookkeeping)"),
    ("dataflows/attribution/segments.py", "tenant state (bookkeeping)"),
    ("dataflows/stages/clicks.py", "click shards"),
    ("dataflows/attribution/clicks.py", "click shards"),
    ("dataflows/stages/clock.py", "clock and routing"),
    ("dataflows/attribution/routing.py", "clock and routing"),
    ("dataflows/attribution/events.py", "parse (envelopes, bodies)"),
    ("dataflows/attribution/wire.py", "parse (envelopes, bodies)"),
    ("dataflows/attribution/flow.py", "flow steps (parse, rows)"),
    ("dataflows/config.py", "configuration"),
    ("schemas/", "models (schemas/, incl. pickling)"),
    ("dataflows/", "other dataflows/ code"),
)

# py-spy names a library's files from its package directory (`connectors/kafka/__init__.py`).
LIBRARIES: tuple[tuple[str, str], ...] = (
    ("connectors/kafka", "Kafka source/sink (bytewax connector)"),
    ("confluent_kafka", "Kafka client"),
    ("operators/__init__.py", "bytewax operators (Python shims)"),
    ("clickhouse_connect", "clickhouse-connect (outside the sink)"),
    ("pickle", "pickle"),
)
RUNTIME = "bytewax runtime (Rust: scheduling, exchange, snapshots)"


def _file(frame: str) -> str:
    match = FRAME_RE.match(frame)
    return match["file"] if match else ""


def stage_of(frames: list[str]) -> str:
    """The stage a sample's stack (root first) is charged to (see the module docstring)."""
    if any("importlib" in _file(frame) for frame in frames):
        return "imports (start-up, incl. lazy ones)"
    for frame in reversed(frames):
        path = _file(frame)
        for marker, stage in PROJECT_STAGES:
            if marker in path:
                return stage
    if not frames:
        return "native threads (no Python frame)"
    if frames[-1].startswith("<module> (") and _file(frames[-1]).endswith("run.py"):
        return RUNTIME  # py-spy shows the last Python frame: below it, bytewax's Rust core
    for frame in reversed(frames):
        path = _file(frame)
        for marker, name in LIBRARIES:
            if marker in path:
                return name
    return "other (stdlib)"


def summarize(raw: Path) -> list[tuple[str, float]]:
    """(stage, share of samples) from py-spy's raw output, largest first."""
    stages: Counter[str] = Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        stages[stage_of(frames)] += int(count)
    total = sum(stages.values())
    return [(stage, n / total) for stage, n in stages.most_common()] if total else []


def py_spy_command() -> list[str]:
    """`py-spy record` into raw stacks (the output path goes last), installed into the venv if
    missing; [] when it cannot be had."""
    binary = Path(sys.executable).with_name("py-spy")
    if not binary.exists():
        print("  py-spy missing: installing it into the venv")
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "py-spy"], check=False)
    if not binary.exists():
        return []
    return [str(binary), "record", "--rate", "100", "--format", "raw", "--nonblocking", "-o"]
