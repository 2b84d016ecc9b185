"""Rule review and payout cancellation: a commission rule version is proposed, then activated or
rejected by an owner (only active versions are live for the dataflow); an unpaid payout can be
cancelled, which releases its entries for another payout.

Revision ID: 0004_rule_review
Revises: 0003_ledger_ops
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0004_rule_review"
down_revision = "0003_ledger_ops"
branch_labels = None
depends_on = None

UPGRADE = """
-- Existing versions were live when stored, so they are active; the default keeps writers that
-- predate the review (the dataflow's fixtures, replays) storing live versions.
ALTER TABLE commission_rules
    ADD COLUMN status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('proposed', 'active', 'rejected')),
    ADD COLUMN reviewed_by text,
    ADD COLUMN reviewed_at timestamptz;

-- created -> paid, or created -> cancelled. Items stay as facts; a cancelled payout's entries
-- are free again, so an entry may now appear in several payouts (at most one not cancelled,
-- enforced by the service, which serialises payouts per agent on the agent's row).
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts
    ADD CONSTRAINT payouts_status_check CHECK (status IN ('created', 'paid', 'cancelled')),
    ADD COLUMN cancelled_by text,
    ADD COLUMN cancelled_at timestamptz;
ALTER TABLE payout_items DROP CONSTRAINT payout_items_entry_id_key;
CREATE INDEX payout_items_entry_idx ON payout_items (entry_id);
"""

DOWNGRADE = """
DROP INDEX payout_items_entry_idx;
ALTER TABLE payout_items ADD CONSTRAINT payout_items_entry_id_key UNIQUE (entry_id);
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts
    DROP COLUMN cancelled_at,
    DROP COLUMN cancelled_by,
    ADD CONSTRAINT payouts_status_check CHECK (status IN ('created', 'paid'));
ALTER TABLE commission_rules DROP COLUMN reviewed_at, DROP COLUMN reviewed_by, DROP COLUMN status;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
