"""A second wall for the append-only tables: `TRUNCATE` is rejected like UPDATE and DELETE.

Row triggers do not fire on TRUNCATE, so until now `TRUNCATE audit_log` (or
`TRUNCATE ledger_entries CASCADE`) emptied them for any role allowed to truncate. The service role
has no TRUNCATE privilege at all (`deploy/roles.py`); these statement triggers also stop the owner
and superusers, unless they first disable the trigger, which the audit anchor then reveals.

Revision ID: 0008_truncate_wall
Revises: 0007_fx_rates
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0008_truncate_wall"
down_revision = "0007_fx_rates"
branch_labels = None
depends_on = None

APPEND_ONLY = (
    "audit_log", "ledger_entries", "ledger_status_events", "payout_items", "fx_rates",
    "ledger_replay_promotions", "ledger_replay_adjustments",
)  # fmt: skip


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for table in APPEND_ONLY:
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION refstream_reject_change()"
        )


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    for table in APPEND_ONLY:
        op.execute(f"DROP TRIGGER {table}_no_truncate ON {table}")
