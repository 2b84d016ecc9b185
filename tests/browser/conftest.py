"""The browser tests' harness: Debian's Chromium driven by playwright-core (installed from the
committed lock file), and the whole stack as processes (`refstream up`). Missing chromium or node
is a failure, never a skip."""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.stack import free_port
from schemas.settings import Settings
from tests.fixtures.postgres import drop_database, new_target

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")


def _playwright_loads(node: str) -> bool:
    """`playwright-core` resolves from this directory (a stamp alone can outlive a broken tree)."""
    probe = subprocess.run(
        [node, "--input-type=module", "-e", 'import "playwright-core";'], cwd=HERE,
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.fixture(scope="session")
def playwright_ready() -> Path:
    """`node` and Chromium present, `playwright-core` installed from the committed lock file.

    Each xdist worker is a session of its own: the install runs under an exclusive file lock, so a
    second process waits for the first's install instead of running `npm ci` over it (npm removes
    `node_modules` first: a concurrent one fails with ENOTEMPTY, or a reader finds no module)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node/npm not found: install Node.js (.ci/run does on CI)")
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (.ci/run does on CI)")
    lock = HERE / "package-lock.json"
    modules = HERE / "node_modules"
    stamp = modules / ".lock-sha256"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    with open(HERE / ".npm-install.lock", "w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            if stamp.is_file() and stamp.read_text() == digest and _playwright_loads(node):
                return Path(node)
            failures = []
            for _ in range(2):  # the second time from an empty directory
                result = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True,
                    text=True, timeout=300, check=False,
                )  # fmt: skip
                if result.returncode == 0 and _playwright_loads(node):
                    stamp.write_text(digest)
                    return Path(node)
                failures.append(f"{result.stdout}\n{result.stderr}")
                shutil.rmtree(modules, ignore_errors=True)
            pytest.fail("npm ci failed:\n" + "\n---\n".join(failures))
        finally:
            fcntl.flock(guard, fcntl.LOCK_UN)


def refstream(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], env=env, capture_output=True, text=True,
        timeout=180, check=False, cwd=ROOT,
    )  # fmt: skip


@dataclass(frozen=True)
class Stack:
    settings: Settings
    env: dict[str, str]  # what `refstream` run against this stack needs


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_url: str
) -> Iterator[Stack]:
    """The whole stack as processes on free ports, with a database of its own."""
    database = new_target(postgres_server)
    env = {
        **os.environ,
        "COLUMNS": "200",
        "REFSTREAM_STATE_DIR": str(tmp_path_factory.mktemp("stack") / "state"),
        "REFSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}",
        "REFSTREAM_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{free_port()}/refstream",
        **database.env(),
        "REFSTREAM_REDIS_URL": redis_url,
        "REFSTREAM_INGEST_PORT": str(free_port()),
        "REFSTREAM_API_PORT": str(free_port()),
        "REFSTREAM_INGEST_WORKERS": "1",
    }
    started = refstream(env, "up")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield Stack(
            database.settings(
                kafka_bootstrap=env["REFSTREAM_KAFKA_BOOTSTRAP"],
                clickhouse_url=env["REFSTREAM_CLICKHOUSE_URL"],
                redis_url=redis_url,
                ingest_port=int(env["REFSTREAM_INGEST_PORT"]),
                api_port=int(env["REFSTREAM_API_PORT"]),
            ),
            env,
        )
    finally:
        refstream(env, "down")
        drop_database(database)
