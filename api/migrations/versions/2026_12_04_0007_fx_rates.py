"""Exchange rates: units of the company's reporting currency (`tenants.currency`) per 1 unit of a
shop currency, each valid from `valid_from` until the next rate of the same currency. The
dataflow fixes the rate valid at an order's event time on its conversion and ledger entries.
Append-only like the ledger: a correction is a new rate, so what an entry was booked at can
always be explained.

Revision ID: 0007_fx_rates
Revises: 0006_payout_claims
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0007_fx_rates"
down_revision = "0006_payout_claims"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE fx_rates (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    rate            numeric(18, 8) NOT NULL CHECK (rate > 0),
    valid_from      timestamptz NOT NULL,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, currency, valid_from)
);

CREATE TRIGGER fx_rates_append_only BEFORE UPDATE OR DELETE ON fx_rates
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
"""

DOWNGRADE = """
DROP TABLE fx_rates;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
