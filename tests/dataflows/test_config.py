"""The configuration snapshot read from the real PostgreSQL: newest rule version per program,
agent chains, coupon normalisation, and periodic reloads."""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from dataflows.config import PostgresConfig, load_snapshot
from schemas.settings import Settings
from tests.dataflows.builders import rules_body
from tests.dataflows.conftest import Tenant


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_snapshot_holds_programs_coupons_chains_and_newest_rules(
    stack_settings: Settings, tenant: Tenant
) -> None:
    config = load_snapshot(stack_settings.postgres_url).tenant(tenant.tenant_id)

    assert config.policy().lookback_days == 30
    assert config.coupons[tenant.coupon.upper()].agent_id == tenant.bob  # stored lower-case
    assert config.agent_chain(tenant.ana) == (tenant.ana, tenant.boss)
    rules = config.rules_for(tenant.program)
    assert rules is not None
    assert (rules.rule_id, rules.version) == (f"rule_{tenant.program}", 1)
    assert load_snapshot(stack_settings.postgres_url).tenant("t_nobody").rules == {}


def test_new_rule_versions_are_picked_up_on_the_next_refresh(
    stack_settings: Settings, tenant: Tenant
) -> None:
    clock = Clock()
    provider = PostgresConfig(stack_settings.postgres_url, refresh_seconds=30, clock=clock)
    assert provider.tenant(tenant.tenant_id).rules[tenant.program].version == 1

    body = rules_body(tenant.program, percent="12", version=2)
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body)"
            " VALUES (%s, 2, %s, %s, %s)",
            (body["rule_id"], tenant.tenant_id, tenant.program, Jsonb(body)),
        )
    clock.now = 29
    assert provider.tenant(tenant.tenant_id).rules[tenant.program].version == 1  # cached
    clock.now = 30
    config = provider.tenant(tenant.tenant_id)
    assert config.rules[tenant.program].version == 2
    # Older versions stay available: an edit reprices with the version the order accrued under.
    assert set(config.rule_versions) == {(body["rule_id"], 1), (body["rule_id"], 2)}


def test_a_proposed_rule_version_is_not_live_until_activated(
    stack_settings: Settings, tenant: Tenant
) -> None:
    body = rules_body(tenant.program, percent="15", version=2)
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO commission_rules (id, version, tenant_id, program_id, body, status)"
            " VALUES (%s, 2, %s, %s, %s, 'proposed')",
            (body["rule_id"], tenant.tenant_id, tenant.program, Jsonb(body)),
        )
    assert (
        load_snapshot(stack_settings.postgres_url)
        .tenant(tenant.tenant_id)
        .rules[tenant.program]
        .version
        == 1
    )

    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "UPDATE commission_rules SET status = 'active' WHERE program_id = %s AND version = 2",
            (tenant.program,),
        )
    config = load_snapshot(stack_settings.postgres_url).tenant(tenant.tenant_id)
    assert config.rules[tenant.program].version == 2


def test_a_tenant_registered_after_the_load_is_found_without_waiting(
    stack_settings: Settings, tenant: Tenant
) -> None:
    clock = Clock()
    provider = PostgresConfig(stack_settings.postgres_url, refresh_seconds=30, clock=clock)
    provider.tenant(tenant.tenant_id)
    latecomer = f"{tenant.tenant_id}_late"
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute(
            "INSERT INTO tenants (id, name, slug) VALUES (%s, %s, %s)",
            (latecomer, latecomer, latecomer),
        )
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url) VALUES (%s, %s, 'P', 'x')",
            (f"prg_{latecomer}", latecomer),
        )
    assert provider.tenant(latecomer).programs == {}  # within a second of the load: cached
    clock.now = 1.0
    assert f"prg_{latecomer}" in provider.tenant(latecomer).programs
