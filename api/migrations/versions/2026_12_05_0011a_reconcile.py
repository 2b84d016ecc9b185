"""Shopify reconciliation watermarks: per shop, the `updated_at_min` the next
`refstream shopify reconcile` run asks the Admin API for. Written only after every event the
run found was acknowledged by Kafka, so a failed run is repeated from the same point (its
events are deduplicated downstream by their content-derived ids).

Revision ID: 0011a_reconcile
Revises: 0010b_exceptions
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0011a_reconcile"
down_revision = "0010b_exceptions"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE shopify_reconcile_watermarks (
    shop            text PRIMARY KEY REFERENCES shops(domain),
    watermark       timestamptz NOT NULL,
    last_run_at     timestamptz NOT NULL,
    last_orders     integer NOT NULL CHECK (last_orders >= 0),
    last_refunds    integer NOT NULL CHECK (last_refunds >= 0)
);
"""

DOWNGRADE = """
DROP TABLE shopify_reconcile_watermarks;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
