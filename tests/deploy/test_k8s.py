"""deploy/k8s: valid for Kubernetes (strict schemas of kubernetes-validate, offline) and consistent
with what it runs: the CLI, the apps, bytewax's cluster arguments, Settings and the Dockerfile."""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bytewax.run
import kubernetes_validate
import pytest
import typer
import yaml

from api.app import create_app as create_api
from deploy.cli import app as refstream_app
from ingest.app import create_app as create_ingest
from schemas.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# A Kubernetes release still widely run, and the newest whose schemas the package ships.
KUBERNETES_VERSIONS = ("1.31", "1.37")
SECRET = "refstream-secrets"
SECRET_KEYS = {"jwt-secret", "postgres-url", "clickhouse-url", "redis-url", "click-ip-salt"}
# Read by `python -m bytewax.run` itself (proved by test_bytewax_reads_each_pods_process_id…).
BYTEWAX_VARIABLES = {"BYTEWAX_POD_NAME", "BYTEWAX_STATEFULSET_NAME", "BYTEWAX_ADDRESSES"}

Manifest = dict[str, Any]


def load_manifests() -> list[Manifest]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    documents: list[Manifest] = []
    for name in kustomization["resources"]:
        documents += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return documents


MANIFESTS = load_manifests()


def one(kind: str, name: str | None = None) -> Manifest:
    found = [
        m
        for m in MANIFESTS
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod_specs() -> Iterator[tuple[str, Manifest]]:
    for m in MANIFESTS:
        if m["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield m["metadata"]["name"], m["spec"]["template"]["spec"]
        elif m["kind"] == "CronJob":
            yield m["metadata"]["name"], m["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def containers() -> Iterator[tuple[str, Manifest]]:
    """Every container and init container, named `workload/container`."""
    for workload, spec in pod_specs():
        for container in spec["containers"] + spec.get("initContainers", []):
            yield f"{workload}/{container['name']}", container


def env_names(container: Manifest) -> set[str]:
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        names |= set(one("ConfigMap", source["configMapRef"]["name"])["data"])
    return names


def dataflow() -> tuple[Manifest, Manifest]:
    """The StatefulSet and its main container."""
    statefulset = one("StatefulSet")
    return statefulset, statefulset["spec"]["template"]["spec"]["containers"][0]


def env_value(container: Manifest, name: str) -> str:
    value: str = next(e for e in container["env"] if e["name"] == name)["value"]
    return value


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    assert [i["name"] for i in kustomization["images"]] == ["refstream"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_for_kubernetes(version: str) -> None:
    for manifest in MANIFESTS:
        kubernetes_validate.validate(manifest, version, strict=True)


def test_the_validator_rejects_broken_manifests() -> None:
    statefulset, _ = dataflow()
    unknown_field = copy.deepcopy(statefulset)
    unknown_field["spec"]["replica"] = 2
    wrong_type = copy.deepcopy(statefulset)
    wrong_type["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "2101"
    for broken in (unknown_field, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_dataflow_peers_are_the_pods_of_a_headless_service() -> None:
    statefulset, container = dataflow()
    service = one("Service", statefulset["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    # Peers resolve each other before they are ready; and they start together.
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    port = service["spec"]["ports"][0]
    assert [p["containerPort"] for p in container["ports"] if p["name"] == port["targetPort"]] == [
        port["port"]
    ]
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    assert replicas >= 2
    expected = [f"{name}-{i}.{service['metadata']['name']}:{port['port']}" for i in range(replicas)]
    assert env_value(container, "BYTEWAX_ADDRESSES").split(";") == expected


def test_bytewax_reads_each_pods_process_id_and_peers(monkeypatch: pytest.MonkeyPatch) -> None:
    statefulset, container = dataflow()
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    assert container["command"] == ["python", "-m", "bytewax.run"]
    for ordinal in range(replicas):
        for variable in container["env"]:
            if variable["name"].startswith("BYTEWAX_"):
                field = variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                value = f"{name}-{ordinal}" if field == "metadata.name" else variable["value"]
                monkeypatch.setenv(variable["name"], value)
        monkeypatch.setattr(sys, "argv", ["bytewax.run", *container["args"]])
        args = bytewax.run._parse_args()  # type: ignore[attr-defined]
        assert args.process_id == ordinal
        assert args.addresses == env_value(container, "BYTEWAX_ADDRESSES")
        assert args.workers_per_process == 1
        assert args.snapshot_interval is not None
        assert args.backup_interval is not None
    module, _, factory = args.import_str.partition(":")
    assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(args.recovery_directory).parent == Path(mounts["recovery"])


def run_partition_init(script: str, env: dict[str, str], pod: str, directory: Path) -> None:
    variables = {**env, "POD_NAME": pod, "RECOVERY_DIR": str(directory)}
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    subprocess.run(["sh", "-ec", script], env={"PATH": path, **variables}, check=True, timeout=60)


def test_recovery_partitions_are_split_across_the_first_pods_once(tmp_path: Path) -> None:
    statefulset, _ = dataflow()
    pod = statefulset["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    replicas, partitions = statefulset["spec"]["replicas"], int(env["RECOVERY_PARTITIONS"])
    assert int(env["RECOVERY_FIRST_PROCESSES"]) == replicas
    assert partitions >= replicas
    assert [m["mountPath"] for m in init["volumeMounts"]] == [env["RECOVERY_DIR"]]
    assert [c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]] == [
        "recovery"
    ]
    name = statefulset["metadata"]["name"]
    found: dict[int, set[str]] = {}
    for ordinal in range(replicas + 1):  # one pod more: a scale-up gets no partition
        volume = tmp_path / f"pod-{ordinal}"
        volume.mkdir()
        run_partition_init(init["command"][2], env, f"{name}-{ordinal}", volume)
        found[ordinal] = {p.name for p in (volume / "parts").iterdir()}
        assert not (volume / ".parts-new").exists()
    assert found[replicas] == set()
    everything = [part for ordinal in range(replicas) for part in sorted(found[ordinal])]
    assert sorted(everything) == sorted(f"part-{i}.sqlite3" for i in range(partitions))
    # A restarted pod keeps what it has (a second init would fail on existing partitions).
    kept = tmp_path / "pod-0" / "parts" / "part-0.sqlite3"
    kept.write_bytes(b"state")
    run_partition_init(init["command"][2], env, f"{name}-0", tmp_path / "pod-0")
    assert kept.read_bytes() == b"state"
    assert {p.name for p in kept.parent.iterdir()} == found[0]


# A stand-in for the attribution flow (which needs Kafka): a running total per key, read from a
# file whose read position, like Kafka offsets, lives in the recovery snapshots.
TOTALS_FLOW = """
import bytewax.operators as op
from bytewax.connectors.files import FileSource
from bytewax.connectors.stdio import StdOutSink
from bytewax.dataflow import Dataflow


def add(total, line):
    total = (total or 0) + int(line.split()[1])
    return total, total


flow = Dataflow("k8s_layout")
lines = op.input("lines", flow, FileSource({path!r}))
keyed = op.key_on("key", lines, lambda line: line.split()[0])
op.output("out", op.stateful_map("total", keyed, add), StdOutSink())
"""


def run_cluster(
    work: Path, volumes: list[Path], container: Manifest, name: str
) -> list[subprocess.CompletedProcess[str]]:
    """Run the dataflow container's bytewax command as one local process per pod `volumes[i]`:
    its arguments with the stand-in flow and the pod's recovery directory, its BYTEWAX_*
    variables with local peer addresses."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in volumes)
    args = list(container["args"])
    args[0] = "totals_flow:flow"
    recovery = args.index("-r") + 1
    started = []
    for ordinal, volume in enumerate(volumes):
        args[recovery] = str(volume / "parts")
        env = {
            **os.environ,
            "PYTHONPATH": str(work),
            "BYTEWAX_POD_NAME": f"{name}-{ordinal}",
            "BYTEWAX_STATEFULSET_NAME": env_value(container, "BYTEWAX_STATEFULSET_NAME"),
            "BYTEWAX_ADDRESSES": addresses,
        }
        started.append(
            subprocess.Popen(
                [sys.executable, *container["command"][1:], *args],
                env=env,
                cwd=work,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    finished = []
    for process in started:
        stdout, stderr = process.communicate(timeout=120)
        finished.append(
            subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        )
    return finished


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_partition_layout_resumes_on_more_processes_and_refuses_fewer(tmp_path: Path) -> None:
    statefulset, container = dataflow()
    (init,) = statefulset["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e["value"] for e in init["env"] if "value" in e}
    name, replicas = statefulset["metadata"]["name"], statefulset["spec"]["replicas"]
    volumes = [tmp_path / f"pod-{ordinal}" for ordinal in range(replicas + 1)]
    for ordinal, volume in enumerate(volumes):
        volume.mkdir()
        run_partition_init(init["command"][2], env, f"{name}-{ordinal}", volume)
    lines = tmp_path / "lines.txt"
    lines.write_text("a 1\nb 2\n")
    (tmp_path / "totals_flow.py").write_text(TOTALS_FLOW.format(path=str(lines)))

    def outputs(runs: list[subprocess.CompletedProcess[str]]) -> set[str]:
        assert [r.returncode for r in runs] == [0] * len(runs), [r.stderr[-2000:] for r in runs]
        # timely also prints its connection retries on stdout
        return {line for r in runs for line in r.stdout.splitlines() if line.startswith("(")}

    assert outputs(run_cluster(tmp_path, volumes[:replicas], container, name)) == {
        "('a', 1)",
        "('b', 2)",
    }
    # One process more (its volume has no partition): the totals go on from the snapshots.
    with lines.open("a") as more:
        more.write("a 10\nb 20\n")
    assert outputs(run_cluster(tmp_path, volumes, container, name)) == {"('a', 11)", "('b', 22)"}
    # Fewer processes than RECOVERY_FIRST_PROCESSES: the missing partitions stop the resume.
    (refused,) = run_cluster(tmp_path, volumes[:1], container, name)
    assert refused.returncode != 0
    assert "MissingPartitionsError" in refused.stderr


def test_every_refstream_variable_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"REFSTREAM_{name.upper()}" for name in Settings.model_fields}
    for where, container in containers():
        for variable in env_names(container):
            if variable.startswith("REFSTREAM_"):
                assert variable in fields, (where, variable)
            elif where.endswith("/dataflow"):
                assert variable in BYTEWAX_VARIABLES, (where, variable)
            else:  # an init script's own variable: it must read it
                assert re.search(rf"\${{?{variable}\b", container["command"][-1]), variable
    config = one("ConfigMap")["data"]
    for key, value in config.items():
        monkeypatch.setenv(key, value)
    settings = Settings()  # the values parse
    assert settings.topic_partitions == int(config["REFSTREAM_TOPIC_PARTITIONS"])


def test_secrets_are_referenced_never_shipped() -> None:
    assert not [m for m in MANIFESTS if m["kind"] == "Secret"]
    referenced = set()
    for where, container in containers():
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref is not None:
                assert ref["name"] == SECRET, where
                referenced.add(ref["key"])
            else:
                assert "SECRET" not in variable["name"], where
    assert referenced == SECRET_KEYS
    documented = (K8S / "configmap.yaml").read_text()
    assert all(key in documented for key in SECRET_KEYS)
    _, api = next(c for c in containers() if c[0].endswith("/api"))
    assert "REFSTREAM_JWT_SECRET" in env_names(api)  # every API pod must accept the same tokens


def cli_command(args: list[str]) -> Any:
    """The command of `refstream ARGS` (typer builds click groups; a leaf has no subcommands);
    the options after the command words must parse (click raises otherwise)."""
    command = typer.main.get_command(refstream_app)
    words = list(args)
    while words and not words[0].startswith("-"):
        assert hasattr(command, "commands"), args
        command = command.commands[words.pop(0)]
    assert not hasattr(command, "commands"), args
    command.make_context("refstream", words)
    return command


def test_commands_are_the_images_cli_and_apps() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for where, container in containers():
        assert container["image"] == "refstream", where
        program, *args = container["command"]
        if program == "refstream":
            assert scripts["refstream"] == "deploy.cli:main"
            cli_command(args)
        elif program == "uvicorn":
            module, _, factory = args[0].partition(":")
            assert "--factory" in args
            assert callable(getattr(importlib.import_module(module), factory))
            port = int(args[args.index("--port") + 1])
            assert [p["containerPort"] for p in container["ports"]] == [port], where
        elif program == "python":
            assert args[0] == "-m"
            assert importlib.util.find_spec(args[1]) is not None
        else:
            assert program == "sh", where
            assert where.endswith("/recovery-partitions"), where


def test_probes_hit_the_apps_health_routes() -> None:
    settings = Settings()
    routes = {
        "refstream-api": {getattr(r, "path", None) for r in create_api(settings).routes},
        "refstream-ingest": {getattr(r, "path", None) for r in create_ingest(settings).routes},
    }
    config = one("ConfigMap")["data"]
    for workload, paths in routes.items():
        deployment = one("Deployment", workload)
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert {"/readyz", "/healthz"} <= paths
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert one("Service", workload)["spec"]["selector"].items() <= labels.items()
    _, ingest = next(c for c in containers() if c[0].endswith("/ingest"))
    assert ingest["ports"][0]["containerPort"] == int(config["REFSTREAM_INGEST_PORT"])
    assert config["REFSTREAM_INGEST_HOST"] == "0.0.0.0"


def test_pods_run_as_the_images_user_with_limits() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    uid = int(re.search(r"useradd .*--uid (\d+)", dockerfile).group(1))  # type: ignore[union-attr]
    assert "ENV PATH=/opt/refstream/bin:" in dockerfile  # refstream, uvicorn, python
    for workload, spec in pod_specs():
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True, workload
        assert context["runAsUser"] == uid, workload
    for where, container in containers():
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
        assert {"cpu", "memory"} <= container["resources"]["requests"].keys(), where
        assert {"cpu", "memory"} <= container["resources"]["limits"].keys(), where


def test_the_rollup_builder_runs_the_builders_loop_against_clickhouse() -> None:
    """The rollups Deployment runs `refstream analytics build` as a loop (not `--once`: a pod
    that exits is restarted in a crash loop) with the ClickHouse URL, in one or two replicas
    (two are safe: a build registers its gen only once written, they only duplicate work)."""
    deployment = one("Deployment", "refstream-rollups")
    assert deployment["spec"]["replicas"] in {1, 2}
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    program, *args = container["command"]
    assert (program, args[:2]) == ("refstream", ["analytics", "build"])
    assert "--once" not in args
    command = cli_command(args)
    interval = command.make_context("refstream", args[2:]).params["interval"]
    assert 0 < interval <= 60
    assert "REFSTREAM_CLICKHOUSE_URL" in env_names(container)
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
