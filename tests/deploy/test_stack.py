"""`refstream up | status | demo | down` as a user runs them: real processes on free ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import pytest

from deploy import stack
from tests.fixtures.postgres import drop_database, new_target


def refstream(
    env: dict[str, str], *args: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is `first_cell`."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


@pytest.fixture
def stack_env(tmp_path: Path, postgres_server: str) -> Iterator[dict[str, str]]:
    """Environment for a private stack: own ports, own state dir, own database and Redis."""
    database = new_target(postgres_server)
    env = {
        **os.environ,
        "COLUMNS": "200",
        "REFSTREAM_STATE_DIR": str(tmp_path / "state"),
        "REFSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.free_port()}",
        "REFSTREAM_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{stack.free_port()}/refstream",
        **database.env(),
        # A Redis port nobody serves: `up` must start one there (and `down` stop it).
        "REFSTREAM_REDIS_URL": f"redis://127.0.0.1:{stack.free_port()}/0",
        "REFSTREAM_INGEST_PORT": str(stack.free_port()),
        "REFSTREAM_API_PORT": str(stack.free_port()),
        "REFSTREAM_INGEST_WORKERS": "1",
    }
    yield env
    refstream(env, "down")
    drop_database(database)


def test_up_status_demo_down(stack_env: dict[str, str]) -> None:
    started = refstream(stack_env, "up")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "stack up" in started.stdout

    status = refstream(stack_env, "status")
    assert status.returncode == 0, status.stdout
    for component in ("kafka", "clickhouse", "redis", "ingest", "api", "dataflow"):
        assert table_row(status.stdout, component)[2:] == ["up", ANY, "started by refstream"]
    assert table_row(status.stdout, "postgres")[2:] == ["up", "-", "reused"]

    demo = refstream(stack_env, "demo", "--clicks", "40", "--orders", "10")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert table_row(demo.stdout, "clicks")[1:] == ["40", "40", "40"], demo.stdout
    assert table_row(demo.stdout, "orders")[1:] == ["10", "10", "10"], demo.stdout
    assert table_row(demo.stdout, "refunds")[1:] == ["1", "1", "1"], demo.stdout
    assert table_row(demo.stdout, "erp")[1:] == ["6", "6", "6"], demo.stdout
    # The dataflow attributed the sample: some agents earned commission (coupon 10 % rule).
    earners = [
        row for line in demo.stdout.splitlines()
        if (row := [c.strip() for c in line.split("│")[1:-1]]) and row[0].startswith("agt_")
    ]  # fmt: skip
    assert earners, demo.stdout
    assert sum(float(row[2]) for row in earners) > 0
    # Three referred orders' Odoo invoices are paid: their commission is approved (the dataflow
    # found each order through its ERP sale order), the others stay pending.
    assert sum(float(row[3]) for row in earners) > 0, demo.stdout

    # A second demo on the running stack brings new traffic: nothing counts as a re-send.
    again_demo = refstream(stack_env, "demo", "--clicks", "40", "--orders", "10")
    assert again_demo.returncode == 0, again_demo.stdout + again_demo.stderr
    for stream, count in (("clicks", "40"), ("orders", "10"), ("refunds", "1"), ("erp", "6")):
        assert table_row(again_demo.stdout, stream)[1:] == [count] * 3, again_demo.stdout

    # A second `up` reuses everything and changes nothing.
    again = refstream(stack_env, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 new DDL version(s)" in again.stdout
    assert "0 topic(s) created" in again.stdout

    stopped = refstream(stack_env, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    after = refstream(stack_env, "status")
    assert after.returncode == 1
    for component in ("kafka", "clickhouse", "redis", "ingest", "api", "dataflow"):
        assert table_row(after.stdout, component)[2] == "down", after.stdout


def test_up_names_the_component_that_failed(stack_env: dict[str, str]) -> None:
    # Occupy the Kafka port with a listener that never answers: tansu cannot bind and exits.
    host, port = stack_env["REFSTREAM_KAFKA_BOOTSTRAP"].split(":")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((host, int(port)))
        squatter.listen()
        result = refstream(stack_env, "up")
    assert result.returncode == 1
    assert "✗ kafka" in result.stdout, result.stdout


def test_down_leaves_reused_servers_running(stack_env: dict[str, str]) -> None:
    stack_env["REFSTREAM_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    assert refstream(stack_env, "up").returncode == 0
    assert refstream(stack_env, "down").returncode == 0
    assert stack.check_redis("redis://127.0.0.1:6379/0") is None
    assert stack.check_postgres("postgresql://postgres@127.0.0.1:5432/postgres") is None
