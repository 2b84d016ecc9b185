"""Ledger operations: notes on agents, payouts and their items, idempotency keys, and the indexes
the ledger and CRUD listings filter by.

Revision ID: 0003_ledger_ops
Revises: 0002_auth
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003_ledger_ops"
down_revision = "0002_auth"
branch_labels = None
depends_on = None

UPGRADE = """
-- Free-text CRM notes on an agent (scoped like the agent).
CREATE TABLE agent_notes (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    agent_id        text NOT NULL REFERENCES agents(id),
    body            text NOT NULL,
    author          text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_notes_agent_idx ON agent_notes (tenant_id, agent_id);

-- A payout pays one agent the approved, unpaid entries of one currency (and optional period).
-- Created -> paid; paying appends 'paid' status events to every item's entry.
CREATE TABLE payouts (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    agent_id        text NOT NULL REFERENCES agents(id),
    currency        char(3) NOT NULL,
    amount          numeric(18, 4) NOT NULL CHECK (amount > 0),
    entry_count     integer NOT NULL CHECK (entry_count > 0),
    period_start    timestamptz,
    period_end      timestamptz,
    status          text NOT NULL DEFAULT 'created' CHECK (status IN ('created', 'paid')),
    reference       text NOT NULL DEFAULT '',
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    paid_by         text,
    paid_at         timestamptz
);
CREATE INDEX payouts_agent_idx ON payouts (tenant_id, agent_id, created_at);

-- An entry is paid by at most one payout (UNIQUE entry_id); items are facts, never changed.
CREATE TABLE payout_items (
    payout_id       text NOT NULL REFERENCES payouts(id),
    entry_id        text NOT NULL UNIQUE REFERENCES ledger_entries(entry_id),
    amount          numeric(18, 4) NOT NULL,
    PRIMARY KEY (payout_id, entry_id)
);
CREATE TRIGGER payout_items_append_only BEFORE UPDATE OR DELETE ON payout_items
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();

-- Idempotency-Key of money-moving POSTs: the first response is stored and replayed for the same
-- key and request; the same key with another request is refused.
CREATE TABLE idempotency_keys (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    key             text NOT NULL,
    fingerprint     text NOT NULL,
    status_code     integer,
    response        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key)
);

-- The current status of an entry is its newest status event.
CREATE INDEX ledger_status_events_entry_idx ON ledger_status_events (entry_id, id DESC);
CREATE INDEX links_agent_idx ON links (tenant_id, agent_id);
CREATE INDEX coupon_codes_agent_idx ON coupon_codes (tenant_id, agent_id);
CREATE INDEX commission_rules_program_idx ON commission_rules (tenant_id, program_id, version);
"""

DOWNGRADE = """
DROP INDEX commission_rules_program_idx;
DROP INDEX coupon_codes_agent_idx;
DROP INDEX links_agent_idx;
DROP INDEX ledger_status_events_entry_idx;
DROP TABLE idempotency_keys, payout_items, payouts, agent_notes;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
