"""Production mode: each unsafe setting is refused with one line, checked against the real
PostgreSQL roles; a real API process exits with those lines."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.production import (
    STARTUP_FAILURE,
    UnsafeConfiguration,
    check_startup,
    settings_problems,
)
from tests.fixtures.postgres import PgTarget

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s" * 48
SALT = "a-salt-only-this-deployment-knows"


def production(target: PgTarget, url: str, **values: object) -> list[str]:
    """The problems `check_startup` raises for the service URL `url` (none: it returns)."""
    settings = target.settings(environment="production", postgres_url=url, **values)
    try:
        check_startup(settings)
    except UnsafeConfiguration as exc:
        prefix = "refusing to start: "
        return [line.removeprefix(prefix) for line in str(exc).split("\n")]
    return []


def test_the_restricted_role_with_real_secrets_starts(pg_target: PgTarget) -> None:
    assert production(pg_target, pg_target.url, jwt_secret=SECRET, click_ip_salt=SALT) == []


def test_development_secrets_are_refused_one_line_each(pg_target: PgTarget) -> None:
    problems = production(pg_target, pg_target.url)
    assert len(problems) == 2
    assert problems[0].startswith("REFSTREAM_JWT_SECRET is not set")
    assert problems[1].startswith("REFSTREAM_CLICK_IP_SALT is the public development salt")
    short = production(pg_target, pg_target.url, jwt_secret="short", click_ip_salt=SALT)
    assert short == ["REFSTREAM_JWT_SECRET is shorter than 32 characters"]


def test_a_superuser_or_owner_connection_is_refused(pg_target: PgTarget) -> None:
    values: dict[str, object] = {"jwt_secret": SECRET, "click_ip_salt": SALT}
    [superuser] = production(pg_target, pg_target.superuser_url, **values)
    assert "superuser 'postgres'" in superuser
    [owner] = production(pg_target, pg_target.owner_url, **values)
    assert "may UPDATE, DELETE or TRUNCATE audit_log, ledger_entries" in owner


def test_the_shopify_app_needs_its_secret_and_a_valid_token_key(pg_target: PgTarget) -> None:
    values: dict[str, object] = {"jwt_secret": SECRET, "click_ip_salt": SALT}
    assert production(pg_target, pg_target.url, shopify_api_key="id", **values) == [
        "REFSTREAM_SHOPIFY_API_KEY is set but REFSTREAM_SHOPIFY_API_SECRET is not",
        "REFSTREAM_SHOPIFY_API_KEY is set but REFSTREAM_SHOPIFY_TOKEN_KEY is not (the installed "
        "shops' access tokens are stored encrypted with it)",
    ]
    [short] = production(pg_target, pg_target.url, shopify_api_key="id",
                         shopify_api_secret="s", shopify_token_key="c2hvcnQ", **values)  # fmt: skip
    assert short == "REFSTREAM_SHOPIFY_TOKEN_KEY: the key must be 32 bytes, not 5"
    key = "q2hZ4Jr1l5m7yN0dVbXpC8kLwE3sTgUaOiRfHjKmNnQ="
    assert production(pg_target, pg_target.url, shopify_api_key="id", shopify_api_secret="s",
                      shopify_token_key=key, **values) == []  # fmt: skip


def test_development_mode_checks_nothing(pg_target: PgTarget) -> None:
    assert settings_problems(pg_target.settings()) == []
    check_startup(pg_target.settings(postgres_url=pg_target.superuser_url))


def run_api(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REFSTREAM_")}
    return subprocess.run(
        [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--port", "0", *args],
        env=clean | env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def refusals(stderr: str) -> list[str]:
    """The variable each `refusing to start` line names."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("refusing to start: ")]
    return [ln.removeprefix("refusing to start: ").split(" ")[0] for ln in lines]


def test_the_api_process_exits_with_the_problems(pg_target: PgTarget) -> None:
    env = pg_target.env() | {"REFSTREAM_ENVIRONMENT": "production"}
    result = run_api(env | {"REFSTREAM_POSTGRES_URL": pg_target.superuser_url})
    assert result.returncode == STARTUP_FAILURE
    assert refusals(result.stderr) == [
        "REFSTREAM_JWT_SECRET",
        "REFSTREAM_CLICK_IP_SALT",
        "REFSTREAM_POSTGRES_URL",
    ]


def test_several_api_workers_without_a_shared_secret_do_not_start(pg_target: PgTarget) -> None:
    result = run_api(pg_target.env(), "--workers", "2")
    # uvicorn's supervisor stops (exit 0) when a worker exits with STARTUP_FAILURE.
    assert "failed to start, stopping the parent process" in result.stderr
    assert set(refusals(result.stderr)) == {"REFSTREAM_JWT_SECRET"}
    assert "one of several API workers" in result.stderr


@pytest.mark.parametrize("value", ["production", "development"])
def test_the_environment_is_read_from_refstream_environment(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from schemas.settings import Settings

    monkeypatch.setenv("REFSTREAM_ENVIRONMENT", value)
    assert Settings().environment == value
