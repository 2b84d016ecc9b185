"""Replays: shadow ledger versions rebuilt from the raw-event archive, and their promotion.

A replay runs the attribution dataflow's code over a tenant's archived events into
`ledger_shadow_entries` (never into `ledger_entries`). `ledger_replay_orders` is the replay's
scope: every order it decided, so a live entry of such an order that the replay did not produce
counts as missing. Promoting books the differences as new `adjustment` entries in the live
ledger (which stays append-only), each recorded in `ledger_replay_adjustments` with the entry it
corrects; `ledger_replay_promotions` has one row per promoted replay (promoting twice is a no-op).

Revision ID: 0005_ledger_replays
Revises: 0004_rule_review
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0005_ledger_replays"
down_revision = "0004_rule_review"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE ledger_replays (
    replay_id       text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    source          text NOT NULL CHECK (source IN ('archive', 'kafka')),
    filters         jsonb NOT NULL,
    what_if         jsonb,
    config_version  text NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'complete', 'failed')),
    events          bigint NOT NULL DEFAULT 0,
    entries         bigint NOT NULL DEFAULT 0,
    dead_letters    bigint NOT NULL DEFAULT 0,
    ledger_digest   text,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz
);
CREATE INDEX ledger_replays_tenant_idx ON ledger_replays (tenant_id, started_at);

-- Same facts as ledger_entries, per replay; no recorded_at, so two replays of the same input
-- are byte-identical.
CREATE TABLE ledger_shadow_entries (
    replay_id       text NOT NULL REFERENCES ledger_replays(replay_id) ON DELETE CASCADE,
    entry_id        text NOT NULL,
    tenant_id       text NOT NULL,
    agent_id        text NOT NULL,
    program_id      text,
    conversion_id   text NOT NULL,
    order_id        text NOT NULL,
    line_item_id    text,
    kind            text NOT NULL,
    status          text NOT NULL,
    level           integer NOT NULL,
    amount          numeric(18, 4) NOT NULL,
    currency        char(3) NOT NULL,
    fx_rate         numeric(18, 8) NOT NULL,
    rule_id         text,
    rule_version    integer,
    occurred_at     timestamptz NOT NULL,
    reason          text NOT NULL DEFAULT '',
    source_event_id text NOT NULL,
    PRIMARY KEY (replay_id, entry_id)
);

CREATE TABLE ledger_replay_orders (
    replay_id       text NOT NULL REFERENCES ledger_replays(replay_id) ON DELETE CASCADE,
    order_id        text NOT NULL,
    PRIMARY KEY (replay_id, order_id)
);

CREATE TABLE ledger_replay_promotions (
    replay_id       text PRIMARY KEY REFERENCES ledger_replays(replay_id),
    tenant_id       text NOT NULL REFERENCES tenants(id),
    actor           text NOT NULL,
    adjustments     integer NOT NULL,
    audit_seq       bigint NOT NULL,
    promoted_at     timestamptz NOT NULL
);

-- Which entry each promotion adjustment corrects: the live view of an entry is the entry plus
-- its corrections, so a later replay diffs against what promotion made of it.
CREATE TABLE ledger_replay_adjustments (
    entry_id        text PRIMARY KEY REFERENCES ledger_entries(entry_id),
    replay_id       text NOT NULL REFERENCES ledger_replay_promotions(replay_id),
    tenant_id       text NOT NULL,
    target_entry_id text NOT NULL
);
CREATE INDEX ledger_replay_adjustments_target_idx
    ON ledger_replay_adjustments (tenant_id, target_entry_id);

CREATE TRIGGER ledger_replay_promotions_append_only
    BEFORE UPDATE OR DELETE ON ledger_replay_promotions
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
CREATE TRIGGER ledger_replay_adjustments_append_only
    BEFORE UPDATE OR DELETE ON ledger_replay_adjustments
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
"""

DOWNGRADE = """
DROP TABLE ledger_replay_adjustments, ledger_replay_promotions, ledger_replay_orders,
    ledger_shadow_entries, ledger_replays;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
