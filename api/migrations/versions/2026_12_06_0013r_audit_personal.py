"""Personal values of audit entries, outside the hash chain (issue #17): entries written from
now on refer to them (`pd:<random>`) instead of holding them, so erasing a person deletes rows
here and never touches a hashed entry. Entries written before keep their values inline (they
cannot change without breaking the chain).

Revision ID: 0013r_audit_personal
Revises: 0012r_redactions
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0013r_audit_personal"
down_revision = "0012r_redactions"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE audit_personal (
    tenant_id  text NOT NULL REFERENCES tenants(id),
    ref        text NOT NULL CHECK (ref ~ '^pd:[0-9a-f]{32}$'),
    value      text NOT NULL,
    PRIMARY KEY (tenant_id, ref)
);
CREATE INDEX audit_personal_value ON audit_personal (tenant_id, lower(value));
"""

DOWNGRADE = """
DROP TABLE audit_personal;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
