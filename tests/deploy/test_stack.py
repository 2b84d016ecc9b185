"""`refstream up | status | demo | down` as a user runs them: real processes on free ports."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest.mock import ANY

import httpx
import pytest

from deploy import stack
from deploy.demo_company import AGENTS
from tests.deploy.cli_output import PrintedLogin, printed_login, table_row
from tests.fixtures.postgres import drop_database, new_target

ROOT = Path(__file__).resolve().parents[2]


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
        cwd=ROOT,
    )


@contextmanager
def api(env: dict[str, str], login: PrintedLogin) -> Iterator[httpx.Client]:
    """An API client logged in with `login` (as a person would, with the printed values)."""
    url = f"http://127.0.0.1:{env['REFSTREAM_API_PORT']}"
    with httpx.Client(base_url=url, timeout=30) as client:
        response = client.post("/v1/auth/login", json={
            "company": login.company, "email": login.email, "password": login.password,
        })  # fmt: skip
        assert response.status_code == 200, response.text
        client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield client


def audit_actions(client: httpx.Client) -> Counter[str]:
    """How often each action but logins (`auth.*`) is in the company's audit log
    (`GET /v1/audit`, every page)."""
    actions: Counter[str] = Counter()
    params: dict[str, str | int] = {"limit": 200}
    while True:
        page = client.get("/v1/audit", params=params)
        assert page.status_code == 200, page.text
        items = page.json()["items"]
        actions.update(e["action"] for e in items if not e["action"].startswith("auth."))
        if page.json()["next_cursor"] is None:
            return actions
        params["cursor"] = page.json()["next_cursor"]


def ledger_entries(client: httpx.Client) -> int:
    totals = client.get("/v1/ledger", params={"limit": 1}).json()["totals"]
    return sum(int(t["count"]) for t in totals)


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
    workers = ("ingest", "api", "dataflow", "exceptions", "rollups", "redact")
    for component in ("kafka", "clickhouse", "redis", *workers):
        assert table_row(status.stdout, component)[2:] == ["up", ANY, "started by refstream"]
    assert table_row(status.stdout, "postgres")[2:] == ["up", "-", "reused"]

    demo = refstream(stack_env, "demo", "--clicks", "40", "--orders", "10")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert table_row(demo.stdout, "clicks")[1:] == ["40", "40", "40"], demo.stdout
    assert table_row(demo.stdout, "orders")[1:] == ["10", "10", "10"], demo.stdout
    assert table_row(demo.stdout, "refunds")[1:] == ["1", "1", "1"], demo.stdout
    assert table_row(demo.stdout, "erp")[1:] == ["6", "6", "6"], demo.stdout
    # The dataflow attributed the sample: some agents earned commission (coupon 10 % rule).
    # Every demo agent has a row, by name.
    earners = [table_row(demo.stdout, name) for _, name, _ in AGENTS]
    assert sum(float(row[2]) for row in earners) > 0
    # Three referred orders' Odoo invoices are paid: their commission is approved (the dataflow
    # found each order through its ERP sale order), the others stay pending.
    assert sum(float(row[3]) for row in earners) > 0, demo.stdout

    # The setup went through the API: the company's audit log lists it, read with the printed
    # owner login; the printed manager login sees the agents of their team.
    owner = printed_login(demo.stdout, "owner")
    with api(stack_env, owner) as as_owner:
        setup = {"company.create": 1, "unit.create": 3, "user.create": 2, "program.create": 1,
                 "commission_rule.create": 1, "agent.create": 4, "link.create": 4,
                 "coupon.create": 4, "shop_claim.create": 1}  # fmt: skip
        assert audit_actions(as_owner) == setup
    with api(stack_env, printed_login(demo.stdout, "manager")) as as_manager:
        team = {a["name"] for a in as_manager.get("/v1/agents").json()["items"]}
        assert team == {name for _, name, t in AGENTS if t == 0}

    # A second demo on the running stack reuses the company (same login, nothing created twice;
    # the shop's write-only secret is rotated) and brings new traffic: nothing is a re-send.
    again_demo = refstream(stack_env, "demo", "--clicks", "40", "--orders", "10")
    assert again_demo.returncode == 0, again_demo.stdout + again_demo.stderr
    for stream, count in (("clicks", "40"), ("orders", "10"), ("refunds", "1"), ("erp", "6")):
        assert table_row(again_demo.stdout, stream)[1:] == [count] * 3, again_demo.stdout
    assert printed_login(again_demo.stdout, "owner") == owner
    with api(stack_env, owner) as as_owner:
        assert audit_actions(as_owner) == {**setup, "shop.update": 1}
        live_demo(stack_env, as_owner)

    # A second `up` reuses everything and changes nothing.
    again = refstream(stack_env, "up")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 new DDL version(s)" in again.stdout
    assert "0 topic(s) created" in again.stdout

    stopped = refstream(stack_env, "down")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    after = refstream(stack_env, "status")
    assert after.returncode == 1
    workers = ("ingest", "api", "dataflow", "exceptions", "rollups", "redact")
    for component in ("kafka", "clickhouse", "redis", *workers):
        assert table_row(after.stdout, component)[2] == "down", after.stdout


def live_demo(env: dict[str, str], as_owner: httpx.Client) -> None:
    """`refstream demo --live` sends until SIGINT, then prints its summary and exits 0."""
    before = ledger_entries(as_owner)
    live = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "demo", "--clicks", "0", "--orders", "0", "--live",
         "--rate", "20"], env={**env, "PYTHONUNBUFFERED": "1"}, cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert live.stdout is not None
        output = ""
        while "live: about" not in output:  # the trickle started (Ctrl-C is handled from here)
            line = live.stdout.readline()
            assert line, f"exit {live.wait()} before the live trickle:\n{output}"
            output += line
        # The trickle's orders reach the ledger (as the dashboard's tiles would show).
        deadline = time.monotonic() + 60
        while ledger_entries(as_owner) == before and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ledger_entries(as_owner) > before
        live.send_signal(signal.SIGINT)
        rest, _ = live.communicate(timeout=60)
    finally:
        if live.poll() is None:
            live.kill()
    assert live.returncode == 0, output + rest
    summary = re.search(r"live: stopped after .*: sent (\d+) events .* acknowledged (\d+)", rest)
    assert summary is not None, rest
    assert int(summary[1]) == int(summary[2]) > 0, rest


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
