"""PostgreSQL roles: an owner that migrates, a service role that may do only what the code does.

- The **owner** (`Settings.postgres_owner_url`) owns the database and every table; Alembic runs
  as it. No service connects with it.
- The **service** role (`Settings.postgres_url`) is what the API, the ingress, the dataflow and
  replays use. `SERVICE_GRANTS` lists, table by table, the statements the code issues, and
  `grant_service` makes the database match it exactly after every migration (a table missing
  from the list fails `grant_service`, so a new migration must decide). The append-only tables
  get INSERT and SELECT only; `ledger_entries` also gets UPDATE on its key column alone, because
  `SELECT … FOR UPDATE` (the lock that serialises status changes of an entry) requires some
  UPDATE privilege; its row trigger rejects every actual UPDATE.
- An optional **admin** (`Settings.postgres_admin_url`, a superuser) creates both login roles
  and the database when missing (`refstream up`, docker-compose's `migrate`, the tests).
"""

from __future__ import annotations

import contextlib
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

from schemas.production import APPEND_ONLY_TABLES
from schemas.settings import Settings

_CRUD = "SELECT, INSERT, UPDATE, DELETE"
_APPEND = "SELECT, INSERT"

# Tables whose rows are facts: never updated, deleted or truncated (triggers in the migrations).
APPEND_ONLY = frozenset(APPEND_ONLY_TABLES)

# What the services do, per table (grep INSERT/UPDATE/DELETE in api/, dataflows/, ingest/, deploy/).
SERVICE_GRANTS: dict[str, str] = {
    "tenants": _APPEND,  # sign-up; `refstream shop add` registers a bare tenant
    "units": _APPEND,
    "users": "SELECT, INSERT, UPDATE",  # password and profile changes
    "memberships": _CRUD,  # role changes, removal
    "agents": "SELECT, INSERT, UPDATE",  # payouts lock the agent row (FOR UPDATE)
    "programs": _CRUD,  # generated CRUD (api/kit/crud.py)
    "links": _CRUD,
    "coupon_codes": _CRUD,
    "shops": _CRUD,
    "agent_notes": _CRUD,
    "erp_endpoints": _APPEND,
    "commission_rules": "SELECT, INSERT, UPDATE",  # review sets status
    "refresh_tokens": "SELECT, INSERT, UPDATE",  # rotation, revocation
    "api_keys": "SELECT, INSERT, UPDATE",  # revocation
    "idempotency_keys": "SELECT, INSERT, UPDATE",  # the stored response
    "payouts": "SELECT, INSERT, UPDATE",  # paid / cancelled
    "payout_claims": "SELECT, INSERT, DELETE",  # a cancelled payout releases its entries
    "ledger_replays": "SELECT, INSERT, UPDATE",  # status and counts when a replay ends
    "ledger_shadow_entries": _APPEND,
    "ledger_replay_orders": _APPEND,
    "audit_log": _APPEND,
    "audit_personal": "SELECT, INSERT, DELETE",  # erasing a person deletes their values
    "ledger_entries": "SELECT, INSERT, UPDATE (entry_id)",  # FOR UPDATE only, see above
    "ledger_status_events": _APPEND,
    "payout_items": _APPEND,
    "fx_rates": _APPEND,
    "ledger_replay_promotions": _APPEND,
    "ledger_replay_adjustments": _APPEND,
    "agent_status_changes": _APPEND,
    # Membership replaced, deleted flag (webhooks); DELETE: an OAuth install that takes a shop
    # over from another company removes that company's collections of it (api/shopify).
    "shop_collections": _CRUD,
    "exceptions": "SELECT, INSERT, UPDATE",  # resolution only (a trigger rejects the rest)
    "shopify_reconcile_watermarks": "SELECT, INSERT, UPDATE",  # advanced after each run
    "redactions": _APPEND,  # a GDPR redaction carried out (`refstream redact run`)
    "shop_claims": _CRUD,  # filed, re-filed, removed when proven (the ingress) or withdrawn
    "alembic_version": "",  # the owner's business
}


class RoleError(RuntimeError):
    """The roles or grants cannot be set up as configured."""


def role_name(url: str) -> str:
    """The user name a libpq URL logs in as."""
    user = urlsplit(url).username
    if not user:
        raise RoleError(f"the PostgreSQL URL names no user: {_redacted(url)}")
    return unquote(user)


def database_name(url: str) -> str:
    name = urlsplit(url).path.lstrip("/")
    if not name:
        raise RoleError(f"the PostgreSQL URL names no database: {_redacted(url)}")
    return unquote(name)


def check_same_database(settings: Settings) -> None:
    """The owner and service URLs must point at one server and database."""
    owner, service = urlsplit(settings.postgres_owner_url), urlsplit(settings.postgres_url)
    if (owner.hostname, owner.port, owner.path) != (service.hostname, service.port, service.path):
        raise RoleError(
            "REFSTREAM_POSTGRES_OWNER_URL and REFSTREAM_POSTGRES_URL must name the same server "
            f"and database ({_redacted(settings.postgres_owner_url)} vs "
            f"{_redacted(settings.postgres_url)})"
        )


def provision(settings: Settings) -> None:
    """As the admin: create the owner and service login roles (or reset their passwords to the
    URLs'), and the database owned by the owner. A database created earlier under another owner
    is handed to the owner with the objects of its `public` schema. No-op without an admin URL."""
    if settings.postgres_admin_url is None:
        return
    check_same_database(settings)
    owner, service = role_name(settings.postgres_owner_url), role_name(settings.postgres_url)
    database = database_name(settings.postgres_url)
    with psycopg.connect(settings.postgres_admin_url, autocommit=True, connect_timeout=5) as conn:
        for url, name in ((settings.postgres_owner_url, owner), (settings.postgres_url, service)):
            _ensure_login_role(conn, name, urlsplit(url).password)
        found = conn.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if found is None:
            conn.execute(
                sql.SQL("CREATE DATABASE {} OWNER {}").format(
                    sql.Identifier(database), sql.Identifier(owner)
                )
            )
            return
        if found[0] != owner:
            _hand_over(settings.postgres_admin_url, database, owner)


def _ensure_login_role(conn: psycopg.Connection, name: str, password: str | None) -> None:
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
    verb = "ALTER" if exists else "CREATE"
    statement = sql.SQL(verb + " ROLE {} LOGIN").format(sql.Identifier(name))
    if password is not None:
        statement += sql.SQL(" PASSWORD {}").format(sql.Literal(unquote(password)))
    with contextlib.suppress(psycopg.errors.DuplicateObject):  # another migrate run was first
        conn.execute(statement)


def _hand_over(admin_url: str, database: str, owner: str) -> None:
    """Make `owner` the owner of the database and of everything in its `public` schema."""
    target = urlsplit(admin_url)._replace(path=f"/{database}").geturl()
    with psycopg.connect(target, autocommit=True, connect_timeout=5) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                sql.Identifier(database), sql.Identifier(owner)
            )
        )
        objects = conn.execute(
            "SELECT 'TABLE', c.relname FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm')"
            " UNION ALL SELECT 'FUNCTION', p.proname FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public'"
        ).fetchall()
        for kind, name in objects:
            conn.execute(
                sql.SQL("ALTER {} {} OWNER TO {}").format(
                    sql.SQL(kind), sql.Identifier(name), sql.Identifier(owner)
                )
            )


def grant_service(settings: Settings) -> None:
    """As the owner: give the service role exactly `SERVICE_GRANTS` on every table of `public`
    (and the sequences behind its serial ids); revoke everything else. Skipped when the service
    and owner are one role (development without roles)."""
    check_same_database(settings)
    service, owner = role_name(settings.postgres_url), role_name(settings.postgres_owner_url)
    if service == owner:
        return
    with psycopg.connect(settings.postgres_owner_url, connect_timeout=5) as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        unknown = sorted(set(tables) - set(SERVICE_GRANTS))
        if unknown:
            raise RoleError(f"tables without an entry in deploy.roles.SERVICE_GRANTS: {unknown}")
        role = sql.Identifier(service)
        conn.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(database_name(settings.postgres_url)), role
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {}").format(role))
        conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {}").format(role))
        for table in tables:
            privileges = SERVICE_GRANTS[table]
            if privileges:
                conn.execute(
                    sql.SQL("GRANT " + privileges + " ON {} TO {}").format(
                        sql.Identifier(table), role
                    )
                )
        for (sequence,) in conn.execute(
            "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'"
        ).fetchall():
            conn.execute(
                sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(sequence), role)
            )


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()
