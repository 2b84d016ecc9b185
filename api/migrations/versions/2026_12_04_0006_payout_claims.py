"""Payout claims: the database guarantees that an entry sits in at most one payout that is not
cancelled. `payout_items` stay append-only facts (an entry may appear in several payouts once
cancelled ones released it), so the guarantee lives in a table of live claims: one row per
entry held by a created or paid payout, keyed by the entry; cancelling a payout deletes its
claims. Until now only the service's per-agent row lock stood between two payouts and one entry.

Revision ID: 0006_payout_claims
Revises: 0005_ledger_replays
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0006_payout_claims"
down_revision = "0005_ledger_replays"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE payout_claims (
    entry_id    text PRIMARY KEY REFERENCES ledger_entries(entry_id),
    payout_id   text NOT NULL REFERENCES payouts(id)
);
CREATE INDEX payout_claims_payout_idx ON payout_claims (payout_id);
INSERT INTO payout_claims (entry_id, payout_id)
SELECT i.entry_id, i.payout_id
FROM payout_items i JOIN payouts p ON p.id = i.payout_id
WHERE p.status <> 'cancelled';
"""

DOWNGRADE = """
DROP TABLE payout_claims;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
