"""Production mode (`REFSTREAM_ENVIRONMENT=production`): the services refuse to start with the
development JWT secret, the public click-IP salt, a Shopify app without its secret or token
key, or a PostgreSQL role that may rewrite the
append-only tables (a superuser, the owner). Each problem is one line of the exit message.
In any mode, an API worker among several refuses to start without a shared JWT secret.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import psycopg

from schemas import secretbox
from schemas.settings import DEV_CLICK_IP_SALT, Settings

# Tables whose rows are facts: never updated, deleted or truncated.
APPEND_ONLY_TABLES = (
    "audit_log", "ledger_entries", "ledger_status_events", "payout_items", "fx_rates",
    "ledger_replay_promotions", "ledger_replay_adjustments", "agent_status_changes",
)  # fmt: skip

MIN_SECRET_LENGTH = 32

_ROLE_QUERY = """
SELECT current_user, current_setting('is_superuser') = 'on',
       array(SELECT t FROM unnest(%s::text[]) AS t
             WHERE to_regclass(t) IS NOT NULL
               AND has_table_privilege(t, 'UPDATE, DELETE, TRUNCATE'))
"""


# uvicorn's exit code for a worker that cannot start: its supervisor then stops instead of
# restarting the worker forever.
STARTUP_FAILURE = 3


class UnsafeConfiguration(SystemExit):
    """Exits the process with `STARTUP_FAILURE`; `str()` is one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(STARTUP_FAILURE)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(f"refusing to start: {p}" for p in self.problems)


def _refuse(problems: list[str]) -> NoReturn:
    refusal = UnsafeConfiguration(problems)
    sys.stderr.write(f"{refusal}\n")
    raise refusal


def settings_problems(settings: Settings, *, api_worker: bool = False) -> list[str]:
    """What is unsafe in `settings` themselves (no I/O). `api_worker`: this process is one of
    several API workers, which must share a JWT secret in any mode."""
    unset_secret = "jwt_secret" not in settings.model_fields_set
    if settings.environment != "production":
        if api_worker and unset_secret:
            return [
                "REFSTREAM_JWT_SECRET is not set and this is one of several API workers (each "
                "would reject the others' tokens)"
            ]
        return []
    problems = []
    if unset_secret:
        problems.append(
            "REFSTREAM_JWT_SECRET is not set (the per-process random default makes the API "
            "workers reject each other's tokens)"
        )
    elif len(settings.jwt_secret.get_secret_value()) < MIN_SECRET_LENGTH:
        problems.append(f"REFSTREAM_JWT_SECRET is shorter than {MIN_SECRET_LENGTH} characters")
    if settings.click_ip_salt == DEV_CLICK_IP_SALT:
        problems.append(
            "REFSTREAM_CLICK_IP_SALT is the public development salt (stored click IP hashes "
            "could be reversed)"
        )
    problems += shopify_app_problems(settings)
    return problems


def shopify_app_problems(settings: Settings) -> list[str]:
    """With the Shopify app on (`shopify_api_key` set), its secret and a valid token key are
    needed: installs would fail one by one otherwise, with shops' tokens in the balance."""
    if not settings.shopify_api_key:
        return []
    problems = []
    if settings.shopify_api_secret is None:
        problems.append("REFSTREAM_SHOPIFY_API_KEY is set but REFSTREAM_SHOPIFY_API_SECRET is not")
    if settings.shopify_token_key is None:
        problems.append(
            "REFSTREAM_SHOPIFY_API_KEY is set but REFSTREAM_SHOPIFY_TOKEN_KEY is not (the "
            "installed shops' access tokens are stored encrypted with it)"
        )
    else:
        try:
            secretbox.load_key(settings.shopify_token_key.get_secret_value())
        except secretbox.SecretBoxError as exc:
            problems.append(f"REFSTREAM_SHOPIFY_TOKEN_KEY: {exc}")
    return problems


def role_problems(role: str, superuser: bool, rewritable: list[str]) -> list[str]:
    """What is unsafe about the database role the service connects as."""
    if superuser:
        return [
            f"REFSTREAM_POSTGRES_URL connects as the PostgreSQL superuser {role!r}; use the "
            "restricted service role"
        ]
    if rewritable:
        return [
            f"REFSTREAM_POSTGRES_URL connects as {role!r}, which may UPDATE, DELETE or TRUNCATE "
            f"{', '.join(rewritable)}; use the restricted service role, not the owner"
        ]
    return []


def check_startup(settings: Settings, *, api_worker: bool = False) -> None:
    """Raise `UnsafeConfiguration` listing every problem: in production also the database role,
    checked by connecting to `postgres_url`; in development only `settings_problems`."""
    problems = settings_problems(settings, api_worker=api_worker)
    if settings.environment != "production":
        if problems:
            _refuse(problems)
        return
    with psycopg.connect(settings.postgres_url, connect_timeout=10) as conn:
        row = conn.execute(_ROLE_QUERY, (list(APPEND_ONLY_TABLES),)).fetchone()
    assert row is not None
    problems += role_problems(row[0], row[1], list(row[2]))
    if problems:
        _refuse(problems)
