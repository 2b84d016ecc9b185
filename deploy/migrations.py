"""Schema management for every store: PostgreSQL (Alembic), ClickHouse (versioned DDL files)
and Kafka (topics). Each function is idempotent and safe to run on every `refstream up`."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

import clickhouse_connect
import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from clickhouse_connect.driver.client import Client
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
from psycopg import sql
from sqlalchemy import create_engine

from deploy import roles
from schemas.settings import Settings
from schemas.topics import TOPIC_SPECS

_DDL_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


# --- PostgreSQL -----------------------------------------------------------------------------


def alembic_config(settings: Settings) -> Config:
    cfg = Config()
    script_location = Path(__file__).resolve().parent.parent / "api" / "migrations"
    cfg.set_main_option("script_location", str(script_location))
    cfg.set_main_option("sqlalchemy.url", settings.postgres_owner_sync_url.replace("%", "%%"))
    return cfg


def ensure_database(settings: Settings) -> bool:
    """Create the configured database as the owner role if it does not exist (no admin URL:
    the owner needs CREATEDB); True if it was created."""
    parts = urlsplit(settings.postgres_owner_url)
    name = parts.path.lstrip("/")
    if not name:
        raise ValueError("the PostgreSQL URL must name a database")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True


def migrate_postgres(settings: Settings, revision: str = "head") -> str:
    """Create the roles and the database if needed (`deploy.roles.provision`), upgrade it to
    `revision` as the owner and grant the service role its privileges; returns the current
    revision."""
    roles.check_same_database(settings)
    if settings.postgres_admin_url is not None:
        roles.provision(settings)
    else:
        ensure_database(settings)
    command.upgrade(alembic_config(settings), revision)
    roles.grant_service(settings)
    return postgres_revision(settings) or "base"


def downgrade_postgres(settings: Settings, revision: str) -> str:
    """Downgrade to `revision` (`base` = empty schema); returns the current revision."""
    command.downgrade(alembic_config(settings), revision)
    return postgres_revision(settings) or "base"


def postgres_revision(settings: Settings) -> str | None:
    engine = create_engine(settings.postgres_owner_sync_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


# --- ClickHouse -----------------------------------------------------------------------------


def clickhouse_ddl_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every DDL file under deploy/clickhouse, in version order."""
    folder = resources.files("deploy") / "clickhouse"
    found = []
    for entry in folder.iterdir():
        match = _DDL_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.name, entry.read_text()))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate ClickHouse DDL versions: {versions}")
    return found


def split_statements(text: str) -> list[str]:
    """Split a DDL file on `;` at line ends; `--` comment lines are dropped."""
    lines = [ln for ln in text.splitlines() if not ln.strip().startswith("--")]
    parts = re.split(r";\s*$", "\n".join(lines), flags=re.MULTILINE)
    return [p.strip() for p in parts if p.strip()]


def migrate_clickhouse(settings: Settings, up_to: int | None = None) -> int:
    """Apply DDL versions not yet recorded in `schema_migrations` (only those <= `up_to`, if
    given); returns how many were applied."""
    target = settings.clickhouse
    admin = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username,
        password=target.password, secure=target.secure,
    )  # fmt: skip
    try:
        admin.command(f"CREATE DATABASE IF NOT EXISTS `{target.database}`")
    finally:
        admin.close()
    # Data-filling statements (e.g. 0004 on a populated table: 83 s for 10M conversions on the
    # shared 2-core machine) must not hit the client's default 300 s read timeout.
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username,
        password=target.password, secure=target.secure, database=target.database,
        send_receive_timeout=3600,
    )  # fmt: skip
    try:
        client.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version UInt32, name String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
            "ENGINE = ReplacingMergeTree ORDER BY version"
        )
        done = {row[0] for row in client.query("SELECT version FROM schema_migrations").result_rows}
        applied = 0
        for version, name, text in clickhouse_ddl_files():
            if version in done or (up_to is not None and version > up_to):
                continue
            for statement in split_statements(text):
                client.command(statement)
            client.insert("schema_migrations", [[version, name]], column_names=["version", "name"])
            applied += 1
        apply_retention(client, settings)
        return applied
    finally:
        client.close()


# Table -> the time column its rows expire by (`0008_retention.sql`).
RETENTION_COLUMNS = {"raw_events": "received_at", "clicks": "occurred_at"}
_TTL_DAYS = re.compile(r"\bTTL\s+toDateTime\((\w+)\)\s*\+\s*toIntervalDay\((\d+)\)")


def retention_days(settings: Settings) -> dict[str, int]:
    """Days each table keeps its rows, from the settings (0 = forever)."""
    return {
        "raw_events": settings.raw_events_retention_days,
        "clicks": settings.clicks_retention_days,
    }


def current_retention(client: Client) -> dict[str, int]:
    """The days of each retained table's TTL as the server has it (0 = no TTL)."""
    rows = client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = currentDatabase() "
        "AND name IN {names:Array(String)}",
        parameters={"names": sorted(RETENTION_COLUMNS)},
    ).result_rows
    found = {}
    for name, engine in rows:
        match = _TTL_DAYS.search(engine)
        found[name] = int(match[2]) if match else 0
    return found


def apply_retention(client: Client, settings: Settings) -> dict[str, int]:
    """Set each table's TTL to its retention setting where it differs; returns the tables
    changed and their new days. On a populated table ClickHouse then drops the expired rows in
    the background (the TTL is materialized as a mutation)."""
    want = retention_days(settings)
    have = current_retention(client)
    changed = {}
    for table, days in want.items():
        if have.get(table) == days:
            continue
        if days == 0:
            client.command(f"ALTER TABLE {table} REMOVE TTL")
        else:
            column = RETENTION_COLUMNS[table]
            client.command(
                f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + toIntervalDay({days})"
            )
        changed[table] = days
    return changed


# --- Kafka ----------------------------------------------------------------------------------


def create_topics(settings: Settings, timeout: float = 15) -> int:
    """Create every topic of the Kafka contract that is missing; returns how many were created.

    Topics are created explicitly (never auto-created) with the configured partition count;
    partitions are never added later, so choose the count for the largest expected parallelism.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap, "log_level": 0})
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(
            str(spec.topic),
            num_partitions=settings.topic_partitions,
            replication_factor=settings.topic_replication,
        )
        for spec in TOPIC_SPECS
        if str(spec.topic) not in existing
    ]
    if not wanted:
        return 0
    created = 0
    for _topic, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created += 1
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
