"""Redaction reaches the exceptions inbox (issue #17): a dead letter keeps the event it could not
process, with the customer's personal data in it. The inbox stays resolve-only, except that a
transaction which declares itself a redaction (`SET LOCAL refstream.redaction = 'on'`, as
`refstream redact run` does) may rewrite a letter's `event` and `raw`, and nothing else.

Revision ID: 0014r_exceptions_redaction
Revises: 0013r_audit_personal
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0014r_exceptions_redaction"
down_revision = "0013r_audit_personal"
branch_labels = None
depends_on = None

_KEPT = """(NEW.id, NEW.tenant_id, NEW.reason, NEW.stage, NEW.source, NEW.kind, NEW.event_id,
        NEW.entity_id, NEW.shop, NEW.occurred_at, NEW.failed_at, NEW.recorded_at{new}) IS
        DISTINCT FROM
       (OLD.id, OLD.tenant_id, OLD.reason, OLD.stage, OLD.source, OLD.kind, OLD.event_id,
        OLD.entity_id, OLD.shop, OLD.occurred_at, OLD.failed_at, OLD.recorded_at{old})"""


def _function(redaction: bool) -> str:
    resolve_only = _KEPT.format(new=", NEW.event, NEW.raw", old=", OLD.event, OLD.raw")
    redacting = ""
    if redaction:
        kept = _KEPT.format(
            new=", NEW.resolved_at, NEW.resolved_by, NEW.resolution",
            old=", OLD.resolved_at, OLD.resolved_by, OLD.resolution",
        )
        redacting = f"""
    IF coalesce(current_setting('refstream.redaction', true), '') = 'on' THEN
        IF {kept} THEN
            RAISE EXCEPTION 'a redaction changes only the event and raw of an exception';
        END IF;
        RETURN NEW;
    END IF;"""
    return f"""
CREATE OR REPLACE FUNCTION refstream_exception_resolve_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        RAISE EXCEPTION 'exceptions are never deleted';
    END IF;{redacting}
    IF OLD.resolved_at IS NOT NULL THEN
        RAISE EXCEPTION 'exception % is already resolved', OLD.id;
    END IF;
    IF {resolve_only} THEN
        RAISE EXCEPTION 'only the resolution of an exception changes';
    END IF;
    RETURN NEW;
END $$;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(_function(redaction=True))


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(_function(redaction=False))
