"""Test harness: real servers for everything that crosses a process boundary.

Session fixtures start tansu (Kafka) and the chDB ClickHouse server on free ports, create a fresh
PostgreSQL database and pick a Redis database index; `stack_settings` points a `Settings` at all
of them. A server that cannot start fails the tests that need it: nothing is skipped.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

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
