"""Authentication: rotating refresh tokens (with families for reuse detection) and API keys.

Revision ID: 0002_auth
Revises: 0001_initial
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0002_auth"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

UPGRADE = """
-- Opaque refresh tokens, stored as SHA-256. Every login starts a family; a refresh rotates the
-- token (the old one gets rotated_at). Presenting a rotated token again revokes the family.
CREATE TABLE refresh_tokens (
    id              text PRIMARY KEY,
    token_hash      text NOT NULL UNIQUE,
    family_id       text NOT NULL,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    user_id         text NOT NULL REFERENCES users(id),
    issued_at       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    rotated_at      timestamptz,
    revoked_at      timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);

-- API keys per company, shown once and stored as SHA-256, scoped to one role on one unit subtree.
CREATE TABLE api_keys (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    unit_id         text NOT NULL REFERENCES units(id),
    role            text NOT NULL CHECK (role IN ('owner', 'manager', 'operator', 'observer')),
    name            text NOT NULL,
    key_prefix      text NOT NULL,
    key_hash        text NOT NULL UNIQUE,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    revoked_at      timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id);

CREATE INDEX memberships_unit_idx ON memberships (unit_id);
CREATE INDEX agents_user_idx ON agents (user_id);
"""

DOWNGRADE = """
DROP INDEX agents_user_idx;
DROP INDEX memberships_unit_idx;
DROP TABLE api_keys, refresh_tokens;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
