"""Schema management against the real stores: idempotent, complete, append-only where it must be."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import clickhouse_connect
import psycopg
import pytest
from alembic.script import ScriptDirectory
from confluent_kafka.admin import AdminClient

from deploy import migrations
from schemas.settings import Settings
from schemas.topics import TOPIC_SPECS

EXPECTED_PG_TABLES = {
    "tenants", "units", "users", "memberships", "agents", "programs", "links", "coupon_codes",
    "shops", "erp_endpoints", "commission_rules", "ledger_entries", "ledger_status_events",
    "audit_log", "payout_claims",
}  # fmt: skip


def head_revision(settings: Settings) -> str:
    """The single newest revision of `api/migrations` (two heads would fail here)."""
    head = ScriptDirectory.from_config(migrations.alembic_config(settings)).get_heads()
    assert len(head) == 1, f"migrations have several heads: {head}"
    return head[0]


def test_postgres_migrations_are_idempotent_and_reversible(empty_pg_url: str) -> None:
    settings = Settings(postgres_url=empty_pg_url)
    head = head_revision(settings)
    assert migrations.migrate_postgres(settings) == head
    assert migrations.migrate_postgres(settings) == head
    with psycopg.connect(empty_pg_url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert tables >= EXPECTED_PG_TABLES
    assert migrations.downgrade_postgres(settings, "base") == "base"
    assert migrations.migrate_postgres(settings) == head


def test_audit_log_rejects_update_and_delete(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t_audit', 'A', 'audit')")
        conn.execute(
            "INSERT INTO audit_log (tenant_id, seq, actor, action, entity_type, entity_id,"
            " prev_hash, hash) VALUES ('t_audit', 1, 'u', 'agent.create', 'agent', 'a1', '', 'h')"
        )
        conn.commit()
        for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
            conn.rollback()
        assert conn.execute("SELECT count(*) FROM audit_log").fetchone() == (1,)


def test_ledger_entries_reject_update(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t_ledger', 'L', 'ledger')")
        conn.execute(
            "INSERT INTO ledger_entries (entry_id, tenant_id, agent_id, conversion_id, order_id,"
            " kind, amount, currency, occurred_at, source_event_id)"
            " VALUES ('le_1', 't_ledger', 'a', 'cv', 'o', 'accrual', 12.3400, 'USD', now(), 'e')"
        )
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger_entries SET amount = 0")


def test_clickhouse_ddl_is_versioned_and_idempotent(stack_settings: Settings) -> None:
    # stack_settings already applied every version once.
    assert migrations.migrate_clickhouse(stack_settings) == 0
    target = stack_settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
    assert tables >= {"raw_events", "clicks", "conversions", "commission_events"}
    versions = client.query(
        "SELECT version FROM schema_migrations FINAL ORDER BY version"
    ).result_rows
    assert [v for (v,) in versions] == [v for v, _, _ in migrations.clickhouse_ddl_files()]
    engine = client.command(
        "SELECT engine FROM system.tables WHERE database = {db:String} AND name = 'conversions'",
        parameters={"db": target.database},
    )
    assert engine == "ReplacingMergeTree"
    client.close()


def test_replayed_rows_collapse_in_clickhouse(stack_settings: Settings) -> None:
    target = stack_settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    row = [
        "t_r", "le_replay", "agent", None, "cv", "o1", None, "accrual", "pending", 0,
        Decimal("12.3400"), "USD", Decimal(1), None, None, datetime(2026, 1, 1, tzinfo=UTC),
        "evt", 1,
    ]  # fmt: skip
    columns = [
        "tenant_id", "entry_id", "agent_id", "program_id", "conversion_id", "order_id",
        "line_item_id", "kind", "status", "level", "amount", "currency", "fx_rate", "rule_id",
        "rule_version", "occurred_at", "source_event_id", "version",
    ]  # fmt: skip
    for _ in range(3):
        client.insert("commission_events", [row], column_names=columns)
    total = client.command(
        "SELECT sum(amount) FROM commission_events FINAL WHERE tenant_id = 't_r'"
    )
    assert Decimal(str(total)) == Decimal("12.34")
    client.close()


def test_topics_are_created_once_with_the_configured_partitions(stack_settings: Settings) -> None:
    assert migrations.create_topics(stack_settings) == 0
    admin = AdminClient({"bootstrap.servers": stack_settings.kafka_bootstrap})
    topics = admin.list_topics(timeout=10).topics
    for spec in TOPIC_SPECS:
        assert str(spec.topic) in topics
        assert len(topics[str(spec.topic)].partitions) == stack_settings.topic_partitions


def test_ddl_statement_splitting_ignores_comments() -> None:
    text = "-- a comment; with a semicolon\nCREATE TABLE a (x Int8) ENGINE = Memory;\n\nSELECT 1;\n"
    assert migrations.split_statements(text) == [
        "CREATE TABLE a (x Int8) ENGINE = Memory",
        "SELECT 1",
    ]
