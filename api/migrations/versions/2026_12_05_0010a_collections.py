"""Collection membership per shop: which products each Shopify collection holds, so
collection commission rates apply to the order lines they name. One row per (shop, collection):
its title, its product ids (`NULL` while the membership is not known: a collection seen only
through a webhook without collects), where the last change came from, and the source times of
the newest titled change (`changed_at`) and of the newest change of its products
(`products_changed_at`), so reordered webhooks converge. A deleted collection keeps its row
(`deleted`), so a late, older update cannot bring it back.

Revision ID: 0010a_collections
Revises: 0009b_agent_status
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0010a_collections"
down_revision = "0009b_agent_status"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE shop_collections (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    shop            text NOT NULL REFERENCES shops(domain) ON DELETE CASCADE,
    collection_id   text NOT NULL,
    title           text,
    product_ids     text[],
    deleted         boolean NOT NULL DEFAULT false,
    source          text NOT NULL CHECK (source IN ('api', 'webhook')),
    changed_at      timestamptz NOT NULL,
    products_changed_at timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (shop, collection_id)
);
CREATE INDEX shop_collections_tenant_idx ON shop_collections (tenant_id, shop, collection_id);
"""

DOWNGRADE = """
DROP TABLE shop_collections;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
