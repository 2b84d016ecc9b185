"""Click policies as program settings, read by the ingress with the program's links.

- `click_max_age_hours`: a pixel click whose `occurred_at` is older than this is re-dated to its
  arrival (24 = the ingress's former fixed rule; at most 168, the dataflow's allowed lateness,
  beyond which a click would be dead-lettered as late anyway).
- `bot_user_agents`: case-insensitive substrings that mark a click as a bot; NULL = the built-in
  list (`ingest/clicks.py`).
- `relay_token_hash` / `relay_ips`: a server-side relay authenticated by either may forward the
  shopper's User-Agent and IP (`X-Refstream-Forwarded-User-Agent` / `-For`).

Revision ID: 0009_click_policies
Revises: 0008_truncate_wall
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

revision = "0009_click_policies"
down_revision = "0008_truncate_wall"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE programs
    ADD COLUMN click_max_age_hours integer NOT NULL DEFAULT 24
        CHECK (click_max_age_hours BETWEEN 1 AND 168),
    ADD COLUMN bot_user_agents text[],
    ADD COLUMN relay_token_hash text CHECK (relay_token_hash ~ '^[0-9a-f]{64}$'),
    ADD COLUMN relay_ips text[] NOT NULL DEFAULT '{}';
"""

DOWNGRADE = """
ALTER TABLE programs
    DROP COLUMN click_max_age_hours,
    DROP COLUMN bot_user_agents,
    DROP COLUMN relay_token_hash,
    DROP COLUMN relay_ips;
"""


def upgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute("SET LOCAL lock_timeout = '5s'")
    op.execute(DOWNGRADE)
