from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from schemas.settings import ClickHouseTarget, Settings


def test_defaults_point_at_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL", "INGEST_PORT", "API_PORT"):
        monkeypatch.delenv(f"REFSTREAM_{name}", raising=False)
    settings = Settings()
    assert settings.ingest_port == 8001
    assert settings.api_port == 8000
    assert settings.clickhouse.port == 8123
    assert settings.clickhouse.database == "refstream"


def test_environment_overrides_use_the_refstream_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSTREAM_KAFKA_BOOTSTRAP", "broker:9092")
    monkeypatch.setenv("REFSTREAM_INGEST_PORT", "9001")
    monkeypatch.setenv("REFSTREAM_STATE_DIR", "/tmp/x")
    settings = Settings()
    assert settings.kafka_bootstrap == "broker:9092"
    assert settings.ingest_port == 9001
    assert settings.state_dir == Path("/tmp/x")


def test_invalid_port_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFSTREAM_API_PORT", "70000")
    with pytest.raises(ValidationError, match="api_port"):
        Settings()


def test_postgres_driver_urls() -> None:
    settings = Settings(postgres_url="postgresql://u:p@db:5433/rs")
    assert settings.postgres_async_url == "postgresql+asyncpg://u:p@db:5433/rs"
    assert settings.postgres_sync_url == "postgresql+psycopg://u:p@db:5433/rs"


def test_clickhouse_url_parts() -> None:
    target = ClickHouseTarget.parse("https://reader:s3cret@ch.internal/analytics")
    assert (target.host, target.port, target.secure) == ("ch.internal", 8443, True)
    assert (target.username, target.password, target.database) == ("reader", "s3cret", "analytics")
    with pytest.raises(ValueError, match="http"):
        ClickHouseTarget.parse("tcp://ch:9000/x")
