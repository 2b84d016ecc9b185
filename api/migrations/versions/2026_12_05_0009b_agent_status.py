"""Agent status history: every status change (`active`, `paused`, `terminated`) with the instant
it takes effect, append-only. The dataflow judges an agent's referrals and overrides by the
status at the order's event time, so a change backdated to when an agent really left applies
to the orders after it. `agents.status` stays the status in effect now.

Existing agents get their history: `active` from their creation, and their current status, if
another, from this migration's time (when they stopped is not known).

Revision ID: 0009b_agent_status
Revises: 0009_click_policies
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009b_agent_status"
down_revision = "0009_click_policies"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE agent_status_changes (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    agent_id        text NOT NULL REFERENCES agents(id),
    status          text NOT NULL CHECK (status IN ('active', 'paused', 'terminated')),
    effective_at    timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    recorded_by     text NOT NULL
);
CREATE INDEX agent_status_changes_agent_idx
    ON agent_status_changes (agent_id, effective_at, recorded_at, id);

CREATE TRIGGER agent_status_changes_append_only BEFORE UPDATE OR DELETE ON agent_status_changes
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
CREATE TRIGGER agent_status_changes_no_truncate BEFORE TRUNCATE ON agent_status_changes
    FOR EACH STATEMENT EXECUTE FUNCTION refstream_reject_change();

INSERT INTO agent_status_changes (tenant_id, agent_id, status, effective_at, recorded_by)
SELECT tenant_id, id, 'active', created_at, 'migration:0009b' FROM agents ORDER BY id;
INSERT INTO agent_status_changes (tenant_id, agent_id, status, effective_at, recorded_by)
SELECT tenant_id, id, status, now(), 'migration:0009b' FROM agents
WHERE status <> 'active' ORDER BY id;
"""

DOWNGRADE = """
DROP TABLE agent_status_changes;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
