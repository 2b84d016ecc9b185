"""Test harness: real servers for everything that crosses a process boundary.

Session fixtures start tansu (Kafka) and the chDB ClickHouse server on free ports, create a fresh
PostgreSQL database and pick a Redis database index; `stack_settings` points a `Settings` at all
of them. A server that cannot start fails the tests that need it: nothing is skipped.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from argon2 import PasswordHasher

from api.auth import passwords
from deploy import migrations
from schemas.settings import Settings
from tests.fixtures import DATA

if TYPE_CHECKING:  # imported for real by pytest_plugins, which rewrites their asserts
    from tests.fixtures.clickhouse import ClickHouseServer
    from tests.fixtures.kafka import KafkaBroker
    from tests.fixtures.postgres import PgTarget

pytest_plugins = [
    "tests.fixtures.clickhouse",
    "tests.fixtures.kafka",
    "tests.fixtures.postgres",
    "tests.fixtures.redis",
    "tests.fixtures.shopify_admin",
]


# `make test` runs the suite on two xdist workers (`--dist loadgroup`), each a session of its own
# (its own tansu, ClickHouse front, PostgreSQL databases and Redis index). Tests go to whichever
# worker is free, except the modules whose module-scoped fixtures start a stack or run a whole
# pipeline: each of those stays on one worker, so its fixture is built once.
ONE_WORKER = {
    "tests/browser/": "browser",  # `stack`: `refstream up` per module
    "tests/e2e/": "e2e",  # `e2e_stack` (session) and test_scenario's `sent`
    "tests/dataflows/test_replay.py": "replay",  # `archived`: one live run of the dataflow
    # Each test starts a multi-process ingress (`ingest serve --workers 2`): one at a time.
    "tests/ingest/test_server.py": "ingest-server",
}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = config.rootpath
    for item in items:
        where = item.path.relative_to(root).as_posix()
        for prefix, group in ONE_WORKER.items():
            if where.startswith(prefix):
                item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    """`tests/fixtures/data`: real Shopify and Odoo payloads. Missing is an error, not a skip."""
    if not DATA.is_dir():
        pytest.fail(f"webhook fixtures not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def stack_settings(
    kafka_broker: KafkaBroker,
    clickhouse_server: ClickHouseServer,
    pg_target: PgTarget,
    redis_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    """Settings for the whole test stack, with every store migrated and every topic created."""
    database = f"refstream_test_{uuid.uuid4().hex[:8]}"
    settings = pg_target.settings(
        kafka_bootstrap=kafka_broker.bootstrap,
        clickhouse_url=f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{database}",
        redis_url=redis_url,
        state_dir=tmp_path_factory.mktemp("state"),
    )
    migrations.migrate_clickhouse(settings)
    migrations.create_topics(settings)
    return settings


# argon2id at its cheapest cost (1 pass over 1 MiB, one lane): about 3 ms a hash instead of about
# 100 ms quiet (1 s on a loaded 2-core runner) for the production profile.
TEST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def production_hasher() -> Iterator[PasswordHasher]:
    """The in-process API hashes and verifies passwords with `TEST_HASHER`: the same argon2id code
    path (`api.auth.passwords`), at a cost that keeps the API tests (every `build_world` hashes
    and verifies ten passwords) from spending most of their time in argon2. The production
    profile is what this fixture yields: tests/api/test_passwords.py checks it, and every stack
    the tests start as processes (`refstream up`, uvicorn) hashes with it."""
    production = passwords._hasher
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(passwords, "_hasher", TEST_HASHER)
        patch.setattr(passwords, "_DUMMY_HASH", TEST_HASHER.hash("refstream-dummy-password"))
        yield production
