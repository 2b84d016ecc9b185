"""Exchange rates in the configuration: `TenantConfig.fx_rate` (pure) and the rates and reporting
currency read from the real PostgreSQL with the rest of the snapshot."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import psycopg

from dataflows.config import TenantConfig, load_snapshot
from schemas.settings import Settings
from tests.dataflows.builders import snapshot
from tests.dataflows.conftest import Tenant

OCT = datetime(2026, 10, 1, tzinfo=UTC)
NOV = datetime(2026, 11, 1, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def eur_config() -> TenantConfig:
    return snapshot(
        "t_fx", fx_rates=[("EUR", "1.10", NOV), ("EUR", "1.08", OCT), ("GBP", "1.27", OCT)]
    ).tenant("t_fx")


def test_a_rate_applies_from_its_valid_from_until_the_next_one() -> None:
    config = eur_config()
    assert config.fx_rate("EUR", OCT) == Decimal("1.08")
    assert config.fx_rate("EUR", NOV - SECOND) == Decimal("1.08")
    assert config.fx_rate("EUR", NOV) == Decimal("1.10")
    assert config.fx_rate("EUR", NOV + timedelta(days=400)) == Decimal("1.10")
    assert config.fx_rate("GBP", NOV) == Decimal("1.27")


def test_the_same_instant_in_another_zone_finds_the_same_rate() -> None:
    paris = datetime(2026, 11, 1, 1, 0, tzinfo=timezone(timedelta(hours=1)))
    assert paris == NOV
    assert eur_config().fx_rate("EUR", paris) == Decimal("1.10")


def test_no_rate_before_the_first_one_or_for_an_unknown_currency() -> None:
    config = eur_config()
    assert config.fx_rate("EUR", OCT - SECOND) is None
    assert config.fx_rate("CHF", NOV) is None


def test_the_reporting_currency_is_always_one() -> None:
    assert eur_config().fx_rate("USD", OCT - timedelta(days=9999)) == Decimal(1)
    reporting_eur = snapshot("t_fx", reporting_currency="EUR").tenant("t_fx")
    assert reporting_eur.fx_rate("EUR", NOV) == Decimal(1)
    assert reporting_eur.fx_rate("USD", NOV) is None


def test_an_unknown_tenant_has_no_rate_at_all() -> None:
    """Without its reporting currency nothing can be converted, not even at 1."""
    assert TenantConfig(tenant_id="t_nobody").fx_rate("USD", NOV) is None


def test_snapshot_reads_reporting_currency_and_rates_and_versions_them(
    stack_settings: Settings, tenant: Tenant
) -> None:
    url = stack_settings.postgres_url
    with psycopg.connect(stack_settings.postgres_owner_url) as conn:  # no service changes it
        conn.execute("UPDATE tenants SET currency = 'EUR' WHERE id = %s", (tenant.tenant_id,))
    with psycopg.connect(url) as conn:
        for currency, rate, valid_from in (("USD", "0.92", NOV), ("USD", "0.95", OCT)):
            conn.execute(
                "INSERT INTO fx_rates (tenant_id, currency, rate, valid_from, created_by)"
                " VALUES (%s, %s, %s, %s, 'test')",
                (tenant.tenant_id, currency, Decimal(rate), valid_from),
            )
    before = load_snapshot(url)
    config = before.tenant(tenant.tenant_id)
    assert config.reporting_currency == "EUR"  # char(3) comes back without padding issues
    assert config.fx_rate("EUR", NOV) == Decimal(1)
    assert config.fx_rate("USD", OCT + SECOND) == Decimal("0.95")
    assert config.fx_rate("USD", NOV) == Decimal("0.92")
    assert config.fx_rate("USD", OCT - SECOND) is None
    assert load_snapshot(url).version == before.version  # same rows, same version

    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO fx_rates (tenant_id, currency, rate, valid_from, created_by)"
            " VALUES (%s, 'GBP', 1.15, %s, 'test')",
            (tenant.tenant_id, NOV),
        )
    after = load_snapshot(url)
    assert after.version != before.version  # a new rate is a new configuration version
    assert after.tenant(tenant.tenant_id).fx_rate("GBP", NOV) == Decimal("1.15")
