"""Crash recovery: the dataflow as its own process (`python -m bytewax.run` with a recovery
directory), SIGKILLed mid-stream and restarted; the ledger and ClickHouse totals must equal
what the input implies, exactly as without the crash (at-least-once replay + idempotent sinks)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from decimal import Decimal
from pathlib import Path

import psycopg

from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from tests.dataflows.builders import T0, click, click_id, days, order, refund
from tests.dataflows.conftest import Tenant, Topics, clickhouse_totals, ledger_totals, produce

ORDERS = 3000
REFUNDED = range(0, ORDERS, 4)  # every 4th order is refunded in full


def scenario(t: Tenant, topics: Topics) -> list[tuple[str, EventEnvelope | bytes]]:
    items: list[tuple[str, EventEnvelope | bytes]] = []
    for n in range(ORDERS):
        cid = click_id(f"{t.tenant_id}-{n}")
        at = T0 + days(n / ORDERS)
        items.append(
            (topics.clicks, click(t.tenant_id, cid, at=at, agent=t.ana, program=t.program))
        )
        items.append((topics.orders, order(t.tenant_id, 10_000 + n, at=at, cites=cid)))
        if n in REFUNDED:
            items.append((topics.refunds, refund(t.tenant_id, 10_000 + n, n + 1, [(1, 1)], at=at)))
    return items


def start(
    settings: Settings, topics: Topics, recovery: Path, *, tail: bool, vault: Path | None = None
) -> subprocess.Popen[bytes]:
    factory = (
        f"dataflows.attribution.flow:build(tail={tail!r}, input_topics={topics.inputs!r}, "
        f"deadletter_topic={topics.deadletter!r}, batch_max_size=200)"
    )
    env = {
        **os.environ,
        "REFSTREAM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "REFSTREAM_POSTGRES_URL": settings.postgres_url,
        "REFSTREAM_CLICKHOUSE_URL": settings.clickhouse_url,
    }
    env.pop("REFSTREAM_SEGMENT_DIR", None)
    if vault is not None:
        env["REFSTREAM_SEGMENT_DIR"] = str(vault)
    command = [
        sys.executable,
        "-m",
        "bytewax.run",
        factory,
        "-r",
        str(recovery),
        "-s",
        "1",
        "-b",
        "1",
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def snapshots(recovery: Path) -> int:
    """Snapshots committed to the recovery partitions (0: a resume would start from scratch)."""
    total = 0
    for part in recovery.glob("part-*.sqlite3"):
        with closing(sqlite3.connect(part)) as db:
            total += db.execute("SELECT count(*) FROM snaps").fetchone()[0]
    return total


def ledger_rows(settings: Settings, tenant_id: str) -> int:
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM ledger_entries WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
    return int(row[0]) if row else 0


def assert_scenario_totals(settings: Settings, t: Tenant) -> None:
    """The ledger and ClickHouse hold exactly what `scenario` implies, each event once."""
    kept = ORDERS - len(REFUNDED)
    assert ledger_totals(settings, t.tenant_id) == {
        t.ana: Decimal("10.00") * kept,
        t.boss: Decimal("0.50") * kept,
        "#rows": Decimal(2 * ORDERS + 2 * len(REFUNDED)),  # accruals, overrides, reversals
    }
    analytics = clickhouse_totals(settings, t.tenant_id)
    assert analytics["commission"] == [
        (t.ana, Decimal("10.00") * kept, ORDERS + len(REFUNDED)),
        (t.boss, Decimal("0.50") * kept, ORDERS + len(REFUNDED)),
    ]
    assert len(analytics["conversions"]) == ORDERS  # type: ignore[arg-type]
    assert (analytics["raw_events"], analytics["clicks"]) == (
        2 * ORDERS + len(REFUNDED),
        ORDERS,
    )


def test_sigkill_mid_stream_then_resume_gives_the_same_totals(
    stack_settings: Settings, tenant: Tenant, topics: Topics, tmp_path: Path
) -> None:
    t = tenant
    items = scenario(t, topics)
    # The second half is produced only after the crash: the kill is mid-stream by construction,
    # whatever the machine's speed.
    first_half, second_half = items[: len(items) // 2], items[len(items) // 2 :]
    produce(stack_settings, first_half)
    expected_rows = 2 * ORDERS + 2 * len(REFUNDED)  # accrual + override, and their reversals
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "2"], check=True)

    # With the segment vault, as `refstream dataflow run --recovery-dir` runs it: full
    # segments (seen ids, decided orders, order books) are written once and named by the
    # snapshots.
    vault = recovery / "segments"
    first = start(stack_settings, topics, recovery, tail=True, vault=vault)
    deadline = time.monotonic() + 60
    # Kill once a snapshot is committed (so the restart resumes, not starts over) and some
    # ledger rows are written.
    while not (snapshots(recovery) and ledger_rows(stack_settings, t.tenant_id)):
        assert time.monotonic() < deadline, "no snapshot and ledger rows within 60 s"
        assert first.poll() is None, first.stderr.read() if first.stderr else b""
        time.sleep(0.02)
    written = ledger_rows(stack_settings, t.tenant_id)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert 0 < written < expected_rows, "the crash must happen mid-stream"

    produce(stack_settings, second_half)
    named_before_the_crash = {p.name.split(".")[0] for p in vault.iterdir()}
    assert named_before_the_crash, "the snapshots named no segment file: the vault was not used"
    second = start(stack_settings, topics, recovery, tail=False, vault=vault)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 0, stderr.decode()[-2000:]

    assert_scenario_totals(stack_settings, t)


def test_refstream_dataflow_run_backfills_and_creates_its_recovery_dir(
    stack_settings: Settings, tmp_path: Path
) -> None:
    recovery = tmp_path / "new" / "recovery"
    env = {
        **os.environ,
        "REFSTREAM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "REFSTREAM_POSTGRES_URL": stack_settings.postgres_url,
        "REFSTREAM_CLICKHOUSE_URL": stack_settings.clickhouse_url,
    }
    command = [sys.executable, "-m", "deploy.cli", "dataflow", "run", "--backfill"]
    command += ["--recovery-dir", str(recovery), "--recovery-partitions", "2"]
    command += ["--snapshot-seconds", "1"]
    done = subprocess.run(command, env=env, capture_output=True, timeout=120, check=False)

    assert done.returncode == 0, done.stderr.decode()[-2000:]
    # the recovery partitions, and the segment vault beside them (empty: a small backfill
    # fills no segment)
    assert sorted(p.name for p in recovery.iterdir() if p.name != "segments") == [
        "part-0.sqlite3",
        "part-1.sqlite3",
    ]
