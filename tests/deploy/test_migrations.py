"""Schema management against the real stores: idempotent, complete, append-only where it must be."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import clickhouse_connect
import psycopg
import pytest
from alembic.script import ScriptDirectory
from clickhouse_connect.driver.client import Client
from confluent_kafka.admin import AdminClient

from dataflows.sinks.clickhouse import COLUMNS
from deploy import migrations, roles
from schemas.settings import Settings
from schemas.topics import TOPIC_SPECS
from tests.fixtures.clickhouse import ClickHouseServer
from tests.fixtures.postgres import PgTarget, drop_database, new_target

EXPECTED_PG_TABLES = {
    "tenants", "units", "users", "memberships", "agents", "programs", "links", "coupon_codes",
    "shops", "erp_endpoints", "commission_rules", "ledger_entries", "ledger_status_events",
    "audit_log", "payout_claims", "fx_rates",
}  # fmt: skip


def head_revision(settings: Settings) -> str:
    """The single newest revision of `api/migrations` (two heads would fail here)."""
    head = ScriptDirectory.from_config(migrations.alembic_config(settings)).get_heads()
    assert len(head) == 1, f"migrations have several heads: {head}"
    return head[0]


def test_postgres_migrations_are_idempotent_and_reversible(empty_pg_target: PgTarget) -> None:
    settings = empty_pg_target.settings()
    head = head_revision(settings)
    assert migrations.migrate_postgres(settings) == head
    assert migrations.migrate_postgres(settings) == head
    with psycopg.connect(empty_pg_target.url) as conn:
        tables = {
            row[0]
            for row in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
    assert tables >= EXPECTED_PG_TABLES
    assert migrations.downgrade_postgres(settings, "base") == "base"
    assert migrations.migrate_postgres(settings) == head


def test_audit_log_rejects_update_and_delete(pg_target: PgTarget) -> None:
    with psycopg.connect(pg_target.owner_url) as conn:
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
        # This test's tenant only: other tests of the session (the API's) write audit rows too.
        assert conn.execute(
            "SELECT count(*) FROM audit_log WHERE tenant_id = 't_audit'"
        ).fetchone() == (1,)


def test_ledger_entries_reject_update(pg_target: PgTarget) -> None:
    with psycopg.connect(pg_target.owner_url) as conn:
        conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t_ledger', 'L', 'ledger')")
        conn.execute(
            "INSERT INTO ledger_entries (entry_id, tenant_id, agent_id, conversion_id, order_id,"
            " kind, amount, currency, occurred_at, source_event_id)"
            " VALUES ('le_1', 't_ledger', 'a', 'cv', 'o', 'accrual', 12.3400, 'USD', now(), 'e')"
        )
        conn.commit()
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE ledger_entries SET amount = 0")


def test_fx_rates_reject_update_and_delete(pg_target: PgTarget) -> None:
    with psycopg.connect(pg_target.owner_url) as conn:
        conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t_fx_rates', 'F', 'fx-rates')")
        conn.execute(
            "INSERT INTO fx_rates (tenant_id, currency, rate, valid_from, created_by)"
            " VALUES ('t_fx_rates', 'EUR', 1.08, '2026-11-01T00:00:00Z', 'u')"
        )
        conn.commit()
        for statement in ("UPDATE fx_rates SET rate = 2", "DELETE FROM fx_rates"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                conn.execute(statement)
            conn.rollback()
        rates = conn.execute("SELECT rate FROM fx_rates WHERE tenant_id = 't_fx_rates'")
        assert rates.fetchall() == [(Decimal("1.08000000"),)]


def _entry_and_audit_row(conn: psycopg.Connection[Any], tenant: str) -> None:
    conn.execute("INSERT INTO tenants (id, name, slug) VALUES (%s, %s, %s)", (tenant,) * 3)
    conn.execute(
        "INSERT INTO ledger_entries (entry_id, tenant_id, agent_id, conversion_id, order_id,"
        " kind, amount, currency, occurred_at, source_event_id)"
        " VALUES (%s, %s, 'a', 'cv', 'o', 'accrual', 1, 'USD', now(), 'e')",
        (f"le_{tenant}", tenant),
    )
    conn.execute(
        "INSERT INTO audit_log (tenant_id, seq, actor, action, entity_type, entity_id,"
        " prev_hash, hash) VALUES (%s, 1, 'u', 'agent.create', 'agent', 'a1', '', 'h')",
        (tenant,),
    )
    conn.commit()


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE audit_log",
        "TRUNCATE ledger_entries CASCADE",
        "UPDATE audit_log SET actor = 'x'",
        "UPDATE ledger_entries SET amount = 0",
        "UPDATE ledger_entries SET entry_id = entry_id || 'x'",
        "DELETE FROM audit_log",
        "DELETE FROM ledger_entries",
    ],
)
def test_the_service_role_cannot_rewrite_the_ledger_or_the_audit_log(
    pg_target: PgTarget, statement: str
) -> None:
    tenant = f"t_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_target.url) as conn:
        _entry_and_audit_row(conn, tenant)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()
        for table in ("audit_log", "ledger_entries"):
            count = conn.execute(f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (tenant,))
            assert count.fetchone() == (1,)


@pytest.mark.parametrize("table", sorted(roles.APPEND_ONLY))
def test_truncate_is_stopped_by_a_trigger_even_for_the_owner(
    pg_target: PgTarget, table: str
) -> None:
    with psycopg.connect(pg_target.owner_url) as conn:
        _entry_and_audit_row(conn, f"t_{uuid.uuid4().hex[:8]}")
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only: TRUNCATE"):
            conn.execute(f"TRUNCATE {table} CASCADE")


def test_the_service_role_has_exactly_the_declared_grants(pg_target: PgTarget) -> None:
    with psycopg.connect(pg_target.url) as conn:
        privileges = dict(
            conn.execute(
                "SELECT t.tablename, array_agg(p.name ORDER BY p.name) FILTER (WHERE"
                " has_table_privilege(current_user, quote_ident(t.tablename), p.name))"
                " FROM pg_tables t CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE',"
                " 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p (name)"
                " WHERE t.schemaname = 'public' GROUP BY t.tablename"
            ).fetchall()
        )
        superuser = conn.execute("SELECT current_setting('is_superuser')").fetchone()
    assert superuser == ("off",)
    for table, granted in privileges.items():
        # Table-level privileges only: `UPDATE (entry_id)` is a column grant.
        declared = {p.strip() for p in roles.SERVICE_GRANTS[table].split(",") if "(" not in p}
        assert set(granted or []) == declared - {""}, table
        if table in roles.APPEND_ONLY:
            assert not set(granted or []) & {"UPDATE", "DELETE", "TRUNCATE"}, table


def test_a_table_without_declared_grants_fails_the_migration(
    empty_pg_target: PgTarget,
) -> None:
    settings = empty_pg_target.settings()
    migrations.migrate_postgres(settings)
    with psycopg.connect(empty_pg_target.owner_url) as conn:
        conn.execute("CREATE TABLE undeclared (id int)")
    with pytest.raises(roles.RoleError, match="undeclared"):
        migrations.migrate_postgres(settings)


def test_a_database_of_the_superuser_era_is_handed_to_the_owner(postgres_server: str) -> None:
    target = new_target(postgres_server)
    # Before the roles: one superuser created the database and owns every table.
    single = Settings(
        postgres_url=target.superuser_url,
        postgres_owner_url=target.superuser_url,
        postgres_admin_url=None,
    )
    try:
        migrations.migrate_postgres(single, "0007_fx_rates")
        migrations.migrate_postgres(target.settings())
        with psycopg.connect(target.url) as conn:
            owners = conn.execute(
                "SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"
            ).fetchall()
            conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t', 't', 't')")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("TRUNCATE audit_log")
        assert owners == [(f"{target.name}_owner",)]
    finally:
        drop_database(target)


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


def _insert(client: Client, table: str, rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    client.insert(table, [[row[c] for c in columns] for row in rows], column_names=columns)


def _conversion(order: str, click: str | None, *, version: int = 1) -> dict[str, Any]:
    """A `conversions` row as the dataflow wrote it before ClickHouse 0004 (no link_code)."""
    when = datetime(2026, 10, 5, tzinfo=UTC)
    row = dict.fromkeys(COLUMNS["conversions"])
    for later in ("link_code", "explanation", "rejected"):  # 0004, 0006
        del row[later]
    return row | {
        "tenant_id": "t_mig", "conversion_id": f"cv_{order}", "order_id": order,
        "occurred_at": when, "attributed_at": when + timedelta(seconds=version),
        "rule": "last_click" if click else "coupon", "agent_id": "agt_1", "click_id": click,
        "coupon_code": None if click else "CODE1", "is_new_customer": False, "currency": "EUR",
        "revenue": Decimal(version * 10), "fx_rate": Decimal(1), "source_event_id": f"ev_{order}",
        "version": version,
    }  # fmt: skip


def test_clickhouse_0004_and_0005_keep_a_populated_database_right(
    clickhouse_server: ClickHouseServer,
) -> None:
    database = f"mig_{uuid.uuid4().hex[:12]}"
    url = f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{database}"
    settings = Settings(clickhouse_url=url)
    assert migrations.migrate_clickhouse(settings, up_to=3) == 3
    client = clickhouse_server.client(database=database)
    when = datetime(2026, 10, 4, tzinfo=UTC)
    _insert(client, "clicks", [
        {"tenant_id": "t_mig", "click_id": click, "link_code": link, "agent_id": "agt_1",
         "occurred_at": when, "is_bot": False, "is_duplicate": False, "version": 1}
        for click, link in (("c1", "l_one"), ("c2", "l_two"))
    ])  # fmt: skip
    # o1 on c1 (written twice: a replay), o2 on c2 edited (version 2), o3 by coupon (no click),
    # o4 citing a click ClickHouse never got.
    _insert(client, "conversions", [
        _conversion("o1", "c1"), _conversion("o1", "c1"), _conversion("o2", "c2"),
        _conversion("o2", "c2", version=2), _conversion("o3", None), _conversion("o4", "c9"),
    ])  # fmt: skip

    assert migrations.migrate_clickhouse(settings, up_to=5) == 2  # 0004 (link), 0005 (encoding)
    assert migrations.migrate_clickhouse(settings, up_to=5) == 0

    def rows(table: str) -> list[tuple[Any, ...]]:
        return client.query(
            f"SELECT order_id, link_code, version FROM {table} FINAL ORDER BY order_id"
        ).result_rows

    expected = [("o1", "l_one", 1), ("o2", "l_two", 2), ("o3", None, 1), ("o4", None, 1)]
    assert rows("conversions") == expected
    assert rows("conversion_orders") == expected
    revenue = client.command("SELECT sum(revenue) FROM conversions FINAL")
    assert Decimal(str(revenue)) == Decimal(10 + 20 + 10 + 10)  # the edit's 20, nothing twice
    clicks = client.query(
        "SELECT click_id, link_code, agent_id FROM clicks FINAL ORDER BY click_id"
    ).result_rows
    assert clicks == [("c1", "l_one", "agt_1"), ("c2", "l_two", "agt_1")]
    agent_type = client.command(
        "SELECT type FROM system.columns WHERE database = currentDatabase()"
        " AND table = 'conversions' AND name = 'agent_id'"
    )
    assert agent_type == "LowCardinality(Nullable(String))"
    # Rows written after the migration keep their link in the order lookup too.
    _insert(client, "conversions", [_conversion("o5", "c5") | {"link_code": "l_five"}])
    assert rows("conversion_orders")[-1] == ("o5", "l_five", 1)
    client.close()
    clickhouse_server.client().command(f"DROP DATABASE {database} SYNC")


def test_clickhouse_0006_keeps_old_rows_and_stores_and_finds_decisions(
    clickhouse_server: ClickHouseServer,
) -> None:
    """Rows written before 0006 read an empty explanation and no rejected candidates, and are
    found by order id and name through `conversion_refs` (backfilled); rows written after carry
    their decision, and the view indexes them too."""
    database = f"mig_{uuid.uuid4().hex[:12]}"
    url = f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{database}"
    settings = Settings(clickhouse_url=url)
    assert migrations.migrate_clickhouse(settings, up_to=5) == 5
    client = clickhouse_server.client(database=database)
    before = _conversion("o1", "c1") | {"link_code": "l1", "order_name": "#1001"}
    _insert(client, "conversions", [before, before])  # and a replay of it
    assert migrations.migrate_clickhouse(settings, up_to=6) == 1

    old = client.query("SELECT order_id, explanation, rejected FROM conversions FINAL").result_rows
    assert old == [("o1", "", [])]
    when = datetime(2026, 10, 6, tzinfo=UTC)
    after = _conversion("o2", None) | {
        "link_code": None, "order_name": None, "explanation": "coupon CODE1 owned by agent agt_1",
        "rejected": [("click", "c9", "agt_2", None, "l9", when, "coupon_wins",
                      "coupon CODE1 wins (coupon_beats_cookie)")],
    }  # fmt: skip
    _insert(client, "conversions", [after])
    (stored,) = client.query(
        "SELECT rejected FROM conversions FINAL WHERE order_id = 'o2'"
    ).result_rows[0]
    assert [tuple(e.values()) if isinstance(e, dict) else tuple(e) for e in stored] == [
        ("click", "c9", "agt_2", None, "l9", when.replace(tzinfo=None), "coupon_wins",
         "coupon CODE1 wins (coupon_beats_cookie)"),
    ]  # fmt: skip
    refs = client.query(
        "SELECT ref, conversion_id FROM conversion_refs FINAL ORDER BY ref"
    ).result_rows
    assert refs == [("#1001", "cv_o1"), ("o1", "cv_o1"), ("o2", "cv_o2")]


def test_clickhouse_0007_backfills_entries_and_marks_every_hour_with_rows_stale(
    clickhouse_server: ClickHouseServer,
) -> None:
    database = f"mig_{uuid.uuid4().hex[:12]}"
    url = f"http://default:@{clickhouse_server.host}:{clickhouse_server.port}/{database}"
    settings = Settings(clickhouse_url=url)
    migrations.migrate_clickhouse(settings, up_to=6)
    client = clickhouse_server.client(database=database)
    when = datetime(2026, 10, 4, 9, 30, tzinfo=UTC)
    _insert(client, "clicks", [
        {"tenant_id": "t_mig", "click_id": "c1", "link_code": "l_one", "agent_id": "agt_1",
         "occurred_at": when, "is_bot": False, "is_duplicate": False, "version": 1}
    ])  # fmt: skip
    # o1 on c1 (its row written before 0004: no link_code), o3 by coupon; o2 not decided yet.
    _insert(client, "conversions", [
        _conversion("o1", "c1") | {"shop": "s1"}, _conversion("o3", None) | {"shop": "s1"},
    ])  # fmt: skip
    entries = [
        {"tenant_id": "t_mig", "entry_id": f"le_{order}", "agent_id": "agt_1",
         "conversion_id": f"cv_{order}", "order_id": order, "kind": "accrual",
         "status": "pending", "level": 0, "amount": Decimal(1), "currency": "EUR",
         "fx_rate": Decimal(1), "occurred_at": when, "source_event_id": f"ev_{order}",
         "version": 1}
        for order in ("o1", "o3")
    ]  # fmt: skip
    _insert(client, "commission_events", entries)
    refund = {"tenant_id": "t_mig", "refund_id": "r2", "order_id": "o2", "amount": Decimal(5),
              "occurred_at": when + timedelta(days=2), "line_count": 1,
              "source_event_id": "ev_r2", "version": 1}  # fmt: skip
    _insert(client, "refunds", [refund])

    migrations.migrate_clickhouse(settings)

    backfilled = client.query(
        "SELECT order_id, shop, link_code, coupon_code FROM commission_events FINAL"
        " ORDER BY order_id"
    ).result_rows
    assert backfilled == [("o1", "s1", "l_one", None), ("o3", "s1", None, "CODE1")]
    touched = client.query("SELECT hour FROM rollup_touches FINAL ORDER BY hour").result_rows
    hours = [
        datetime(2026, 10, 4, 9, tzinfo=UTC),
        datetime(2026, 10, 5, tzinfo=UTC),
        datetime(2026, 10, 6, 9, tzinfo=UTC),
    ]  # entries and click, orders, refund
    assert [h.replace(tzinfo=UTC) for (h,) in touched] == hours
    # The refund's order decided after the migration: its refund's hour is touched again.
    touch = (
        "SELECT toUnixTimestamp64Milli(touched_at) FROM rollup_touches FINAL"
        " WHERE hour = {h:DateTime}"
    )
    before = client.command(touch, parameters={"h": hours[2]})
    _insert(client, "conversions", [_conversion("o2", None)])
    after = client.command(touch, parameters={"h": hours[2]})
    assert int(after) > int(before)  # type: ignore[arg-type]
    client.close()
    clickhouse_server.client().command(f"DROP DATABASE {database} SYNC")


def test_existing_agents_get_a_status_history(empty_pg_target: PgTarget) -> None:
    settings = empty_pg_target.settings()
    migrations.migrate_postgres(settings, "0008_truncate_wall")
    with psycopg.connect(empty_pg_target.owner_url) as conn:
        conn.execute("INSERT INTO tenants (id, name, slug) VALUES ('t_st', 'S', 'st')")
        for agent, status in (("a_on", "active"), ("a_off", "terminated")):
            conn.execute(
                "INSERT INTO agents (id, tenant_id, name, status, created_at)"
                " VALUES (%s, 't_st', %s, %s, '2026-01-01T00:00:00Z')",
                (agent, agent, status),
            )
    migrations.migrate_postgres(settings)
    with psycopg.connect(empty_pg_target.owner_url) as conn:
        rows = conn.execute(
            "SELECT agent_id, status, effective_at = '2026-01-01T00:00:00Z' FROM"
            " agent_status_changes ORDER BY agent_id, effective_at"
        ).fetchall()
        # Active since creation; the terminated one terminated from the migration (when it
        # stopped is not known).
        assert rows == [
            ("a_off", "active", True), ("a_off", "terminated", False), ("a_on", "active", True),
        ]  # fmt: skip
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            conn.execute("UPDATE agent_status_changes SET status = 'active'")
