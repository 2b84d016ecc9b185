"""GDPR redactions carried out (issue #17): one row per Shopify `customers/redact` or
`shop/redact` request, written by `refstream redact run` once the request's personal data is
gone from the archive and the analytics tables. The row proves it was done and when; it holds
counts and, for a customer, a keyed hash (HMAC-SHA256) of tenant, shop and customer id, never
the data itself. The service role may only read and insert (`deploy.roles`).

Revision ID: 0012r_redactions
Revises: 0011b_shop_oauth
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0012r_redactions"
down_revision = "0011b_shop_oauth"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE redactions (
    tenant_id         text NOT NULL REFERENCES tenants(id),
    request_event_id  text NOT NULL,
    kind              text NOT NULL CHECK (kind IN ('customers/redact', 'shop/redact')),
    shop              text NOT NULL,
    customer_ref      text CHECK (customer_ref ~ '^[0-9a-f]{64}$'),
    requested_at      timestamptz NOT NULL,
    done_at           timestamptz NOT NULL,
    raw_events        integer NOT NULL CHECK (raw_events >= 0),
    clicks            integer NOT NULL CHECK (clicks >= 0),
    exceptions        integer NOT NULL CHECK (exceptions >= 0),
    PRIMARY KEY (tenant_id, request_event_id),
    CHECK ((kind = 'customers/redact') = (customer_ref IS NOT NULL))
);
"""

DOWNGRADE = """
DROP TABLE redactions;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
