"""Shops installed through Shopify's OAuth, and custom-app shop claims that wait for proof.

`shops` gains how the shop came (`install`: `custom` with its own webhook secret, `oauth` with
the app's client secret), its Admin API access token **encrypted** (`access_token`, AES-256-GCM
with a key from settings, never the plaintext; `schemas/secretbox.py`), the scopes granted,
when it was proven (`verified_at`) and when the app was uninstalled (`uninstalled_at`: the
token is deleted then and the ingress refuses the shop's webhooks). `secret` is NULL for OAuth
shops: their webhooks are signed with the app's client secret from settings. Shops registered
before this revision were registered by their company's owner or the operator: they count as
verified at their creation.

`shop_claims` holds what `POST /v1/shops` and `refstream shop add` record: a company's claim
of a domain with a webhook secret, per company (several companies may claim one domain and
none learns of the others), until the ingress receives a webhook for the domain signed with
that secret; the claim then becomes the shop, if no company owns the domain yet.

Revision ID: 0011b_shop_oauth
Revises: 0011a_reconcile
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0011b_shop_oauth"
down_revision = "0011a_reconcile"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE shops
    ALTER COLUMN secret DROP NOT NULL,
    ADD COLUMN install text NOT NULL DEFAULT 'custom' CHECK (install IN ('custom', 'oauth')),
    ADD COLUMN access_token bytea,
    ADD COLUMN token_scopes text,
    ADD COLUMN verified_at timestamptz,
    ADD COLUMN installed_by text,
    ADD COLUMN uninstalled_at timestamptz,
    ADD CONSTRAINT shops_secret_by_install CHECK (install = 'oauth' OR secret IS NOT NULL);
UPDATE shops SET verified_at = created_at;
ALTER TABLE shops ALTER COLUMN verified_at SET DEFAULT now(),
    ALTER COLUMN verified_at SET NOT NULL;
CREATE TABLE shop_claims (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    domain          text NOT NULL,
    secret          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, domain)
);
CREATE INDEX shop_claims_domain ON shop_claims (domain);
"""

DOWNGRADE = """
DROP TABLE shop_claims;
DELETE FROM shopify_reconcile_watermarks
    WHERE shop IN (SELECT domain FROM shops WHERE install = 'oauth');
DELETE FROM shops WHERE install = 'oauth';
ALTER TABLE shops
    DROP CONSTRAINT shops_secret_by_install,
    DROP COLUMN uninstalled_at,
    DROP COLUMN installed_by,
    DROP COLUMN verified_at,
    DROP COLUMN token_scopes,
    DROP COLUMN access_token,
    DROP COLUMN install,
    ALTER COLUMN secret SET NOT NULL;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
