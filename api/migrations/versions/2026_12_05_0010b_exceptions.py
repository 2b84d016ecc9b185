"""The exceptions inbox: every dead letter (an authenticated event or row that could not be
processed) stored per tenant with its reason, stage, the event and when it failed, so owners and
managers can list them and see which are fixed. Ids are derived from the letter's content (not
its failure time): the same letter delivered twice by Kafka, or rejected again by a retried
batch, is one row. Only the resolution columns ever change (`resolved_at`, `resolved_by`,
`resolution`), once: a trigger rejects any other UPDATE and every DELETE.

Revision ID: 0010b_exceptions
Revises: 0009b_agent_status
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0010b_exceptions"
down_revision = "0010a_collections"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE exceptions (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL,
    reason          text NOT NULL,
    stage           text NOT NULL,
    source          text,
    kind            text,
    event_id        text,
    entity_id       text,
    shop            text,
    occurred_at     timestamptz,
    failed_at       timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    event           jsonb,
    raw             text,
    resolved_at     timestamptz,
    resolved_by     text,
    resolution      text,
    CHECK ((resolved_at IS NULL) = (resolved_by IS NULL))
);
CREATE INDEX exceptions_tenant_failed_idx ON exceptions (tenant_id, failed_at DESC, id DESC);
CREATE INDEX exceptions_open_entity_idx ON exceptions (tenant_id, entity_id)
    WHERE resolved_at IS NULL;

CREATE FUNCTION refstream_exception_resolve_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'exceptions are never deleted';
    END IF;
    IF OLD.resolved_at IS NOT NULL THEN
        RAISE EXCEPTION 'exception % is already resolved', OLD.id;
    END IF;
    IF (NEW.id, NEW.tenant_id, NEW.reason, NEW.stage, NEW.source, NEW.kind, NEW.event_id,
        NEW.entity_id, NEW.shop, NEW.occurred_at, NEW.failed_at, NEW.recorded_at, NEW.event,
        NEW.raw) IS DISTINCT FROM
       (OLD.id, OLD.tenant_id, OLD.reason, OLD.stage, OLD.source, OLD.kind, OLD.event_id,
        OLD.entity_id, OLD.shop, OLD.occurred_at, OLD.failed_at, OLD.recorded_at, OLD.event,
        OLD.raw) THEN
        RAISE EXCEPTION 'only the resolution of an exception changes';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER exceptions_resolve_only BEFORE UPDATE OR DELETE ON exceptions
    FOR EACH ROW EXECUTE FUNCTION refstream_exception_resolve_only();
CREATE TRIGGER exceptions_no_truncate BEFORE TRUNCATE ON exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION refstream_reject_change();
"""

DOWNGRADE = """
DROP TABLE exceptions;
DROP FUNCTION refstream_exception_resolve_only();
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
