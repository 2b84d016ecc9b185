"""Initial schema: tenancy, users, agents, programs, links, coupons, shops, commission rules,
the commission ledger and the audit log. Minimal now; later revisions extend it.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_ROLES = "('owner', 'manager', 'operator', 'agent', 'observer')"

UPGRADE = f"""
CREATE TABLE tenants (
    id              text PRIMARY KEY,
    name            text NOT NULL,
    slug            text NOT NULL UNIQUE,
    timezone        text NOT NULL DEFAULT 'UTC',
    currency        char(3) NOT NULL DEFAULT 'USD',
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- A tree of units per tenant (region -> team); `path` is the materialised id path for subtree
-- scoping ('/u_root/u_emea/u_team1/').
CREATE TABLE units (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    parent_id       text REFERENCES units(id),
    name            text NOT NULL,
    path            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, path)
);

CREATE TABLE users (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    email           text NOT NULL,
    display_name    text NOT NULL DEFAULT '',
    password_hash   text,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, email)
);

-- One role per unit subtree.
CREATE TABLE memberships (
    user_id         text NOT NULL REFERENCES users(id),
    unit_id         text NOT NULL REFERENCES units(id),
    role            text NOT NULL CHECK (role IN {_ROLES}),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, unit_id)
);

CREATE TABLE agents (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    unit_id         text REFERENCES units(id),
    user_id         text REFERENCES users(id),
    parent_agent_id text REFERENCES agents(id),
    name            text NOT NULL,
    email           text,
    status          text NOT NULL DEFAULT 'active'
                    CHECK (status IN ('active', 'paused', 'terminated')),
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agents_tenant_idx ON agents (tenant_id);

CREATE TABLE programs (
    id                  text PRIMARY KEY,
    tenant_id           text NOT NULL REFERENCES tenants(id),
    name                text NOT NULL,
    landing_url         text NOT NULL,
    currency            char(3) NOT NULL DEFAULT 'USD',
    lookback_days       integer NOT NULL DEFAULT 30 CHECK (lookback_days > 0),
    attribution_model   text NOT NULL DEFAULT 'last_click'
                        CHECK (attribution_model IN ('last_click', 'first_click')),
    coupon_beats_cookie boolean NOT NULL DEFAULT true,
    binding_months      integer NOT NULL DEFAULT 0 CHECK (binding_months >= 0),
    hold_days           integer NOT NULL DEFAULT 30 CHECK (hold_days >= 0),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE links (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    program_id      text NOT NULL REFERENCES programs(id),
    agent_id        text NOT NULL REFERENCES agents(id),
    code            text NOT NULL UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coupon_codes (
    tenant_id       text NOT NULL REFERENCES tenants(id),
    code            text NOT NULL,
    program_id      text NOT NULL REFERENCES programs(id),
    agent_id        text NOT NULL REFERENCES agents(id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- Shopify shops and their webhook secrets (current + previous during rotation).
CREATE TABLE shops (
    domain          text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    secret          text NOT NULL,
    previous_secret text,
    active          boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Odoo webhooks authenticate by a per-tenant secret token in the URL (Odoo sends no signature).
CREATE TABLE erp_endpoints (
    token_hash      text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- Versioned rules: editing inserts version n+1; old versions stay readable.
CREATE TABLE commission_rules (
    id              text NOT NULL,
    version         integer NOT NULL CHECK (version > 0),
    tenant_id       text NOT NULL REFERENCES tenants(id),
    program_id      text NOT NULL REFERENCES programs(id),
    body            jsonb NOT NULL,
    created_by      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, version)
);

-- The money ledger: append-only, ids derived from the inputs so replays collapse.
CREATE TABLE ledger_entries (
    entry_id        text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    agent_id        text NOT NULL,
    program_id      text,
    conversion_id   text NOT NULL,
    order_id        text NOT NULL,
    line_item_id    text,
    kind            text NOT NULL
                    CHECK (kind IN ('accrual', 'override', 'reversal', 'reprice', 'adjustment')),
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'approved', 'hold', 'rejected', 'paid')),
    level           integer NOT NULL DEFAULT 0 CHECK (level >= 0),
    amount          numeric(18, 4) NOT NULL,
    currency        char(3) NOT NULL,
    fx_rate         numeric(18, 8) NOT NULL DEFAULT 1 CHECK (fx_rate > 0),
    rule_id         text,
    rule_version    integer,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    reason          text NOT NULL DEFAULT '',
    source_event_id text NOT NULL
);
CREATE INDEX ledger_agent_idx ON ledger_entries (tenant_id, agent_id, occurred_at);
CREATE INDEX ledger_order_idx ON ledger_entries (tenant_id, order_id);

-- Status changes of ledger entries are facts too (pending -> approved -> paid).
CREATE TABLE ledger_status_events (
    id              bigserial PRIMARY KEY,
    entry_id        text NOT NULL REFERENCES ledger_entries(entry_id),
    status          text NOT NULL
                    CHECK (status IN ('pending', 'approved', 'hold', 'rejected', 'paid')),
    actor           text NOT NULL,
    reason          text NOT NULL DEFAULT '',
    changed_at      timestamptz NOT NULL DEFAULT now()
);

-- Append-only audit log, hash-chained per tenant (seq, prev_hash -> hash).
CREATE TABLE audit_log (
    id              bigserial PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants(id),
    seq             bigint NOT NULL,
    actor           text NOT NULL,
    action          text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    before          jsonb,
    after           jsonb,
    request_id      text,
    source_ip       text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    prev_hash       text NOT NULL,
    hash            text NOT NULL,
    UNIQUE (tenant_id, seq)
);

CREATE FUNCTION refstream_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % rejected', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
CREATE TRIGGER ledger_status_events_append_only BEFORE UPDATE OR DELETE ON ledger_status_events
    FOR EACH ROW EXECUTE FUNCTION refstream_reject_change();
"""

DOWNGRADE = """
DROP TABLE audit_log, ledger_status_events, ledger_entries, commission_rules, erp_endpoints,
    shops, coupon_codes, links, programs, agents, memberships, users, units, tenants;
DROP FUNCTION refstream_reject_change();
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
