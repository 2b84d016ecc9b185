"""One private stack (`refstream up`: every component its own process) for the end-to-end and
chaos tests of a session; each test works in a tenant of its own."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.harness import E2EStack
from tests.fixtures.postgres import drop_database, new_target


@pytest.fixture(scope="session")
def e2e_stack(
    tmp_path_factory: pytest.TempPathFactory, postgres_server: str, redis_url: str
) -> Iterator[E2EStack]:
    database = new_target(postgres_server)
    e2e = E2EStack(tmp_path_factory.mktemp("e2e") / "state", redis_url, database)
    try:
        e2e.up()
        yield e2e
    finally:
        e2e.down()
        drop_database(database)
