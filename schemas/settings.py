"""The one place refstream reads its environment.

Every process (ingress, dataflow, API, CLI, tests) builds a `Settings` and passes it down; no
other module touches `os.environ`. Variables use the prefix `REFSTREAM_`, e.g.
`REFSTREAM_KAFKA_BOOTSTRAP`.
"""

from __future__ import annotations

import ipaddress
import secrets
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Public (it is in this file): production refuses it (`schemas.production`).
DEV_CLICK_IP_SALT = "refstream-dev-salt"


class Settings(BaseSettings):
    """Connection URLs and ports of every component, with local-stack defaults."""

    model_config = SettingsConfigDict(env_prefix="REFSTREAM_", env_file=None, extra="ignore")

    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092", description="Kafka bootstrap servers, comma-separated."
    )
    clickhouse_url: str = Field(
        default="http://default:@127.0.0.1:8123/refstream",
        description="ClickHouse HTTP interface; the path is the database.",
    )
    postgres_url: str = Field(
        default="postgresql://refstream_app@127.0.0.1:5432/refstream",
        description="PostgreSQL DSN of the services' restricted role (plain libpq form; drivers "
        "are added where needed). Migrations use `postgres_owner_url`.",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0")
    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8001, ge=1, le=65535)
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    state_dir: Path = Field(
        default=Path(".refstream"), description="Local stack state, data and logs."
    )
    segment_dir: Path | None = Field(
        default=None,
        description="The dataflow's segment vault: snapshots name unchanged state segments "
        "written once here (`dataflows.vault`); `refstream dataflow run --recovery-dir D` "
        "defaults it to `D/segments`. Unset: snapshots copy every segment.",
    )
    clickhouse_compression: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="LZ4 compression of the dataflow's ClickHouse inserts: `auto` compresses "
        "unless the server is on the loopback interface (where it only costs CPU on both ends); "
        "`on` for a loopback address that is really a tunnel or proxy to another machine.",
    )
    kafka_fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=500,
        description="The dataflow's Kafka consumers' `fetch.wait.max.ms`: how long a fetch may "
        "wait at the broker for data. Apache Kafka answers a waiting fetch as soon as data "
        "arrives, so this only sets how often an idle consumer asks; a broker that holds the "
        "fetch to its end (tansu, the local stack's) adds up to this much to every event's "
        "latency. librdkafka's default is 500.",
    )
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication: int = Field(default=1, ge=1)
    log_level: str = "INFO"
    jwt_secret: SecretStr = Field(
        default_factory=lambda: SecretStr(secrets.token_urlsafe(48)),
        description="HS256 key for API access tokens. The default is random per process, so "
        "set it wherever more than one API process must accept the same tokens.",
    )
    jwt_issuer: str = "refstream"
    access_token_ttl_seconds: int = Field(default=900, ge=1)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=1)
    login_rate_limit: int = Field(
        default=10, ge=1, description="Login attempts per company, email and client IP per window."
    )
    login_rate_window_seconds: int = Field(default=60, ge=1)
    open_signup: bool = Field(
        default=True, description="Whether POST /v1/companies accepts anonymous sign-ups."
    )
    manager_approval_limit: Decimal = Field(
        default=Decimal("1000"),
        ge=0,
        description="Largest ledger amount (absolute, in the company's reporting currency) a "
        "manager may approve or adjust; owners have no limit.",
    )

    # --- hardening (issue 13): proxies and login limits ---
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated IPs or CIDR networks of the reverse proxies in front of the "
        "API and the ingress. Only a peer in this list may set the client address with "
        "X-Forwarded-For (the rightmost address not in the list wins). Empty: never trusted.",
    )
    login_rate_limit_per_ip: int = Field(
        default=100, ge=1, description="Login attempts per client IP (any company or email)."
    )
    login_failure_limit_per_email: int = Field(
        default=50, ge=1, description="Failed logins per company and email, from any IP."
    )
    login_failure_limit_per_company: int = Field(
        default=200, ge=1, description="Failed logins per company, any email and IP."
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [p.strip() for p in value.split(",") if p.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: list[str]) -> list[str]:
        for proxy in value:
            ipaddress.ip_network(proxy, strict=False)  # ValueError names the bad entry
        return value

    # --- ingress ---
    ingest_workers: int = Field(default=2, ge=1, description="uvicorn worker processes.")
    ingest_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    ingest_rate_limit_per_shop: int = Field(
        default=1000, ge=1, description="Authentic webhooks per shop per second before 429."
    )
    ingest_dedup_ttl_seconds: int = Field(
        default=72 * 3600, ge=60, description="Longer than Shopify's retry period (4 h)."
    )
    ingest_produce_timeout_seconds: float = Field(
        default=3.0, gt=0, description="Broker ack wait before answering 503 (Shopify: 5 s)."
    )
    ingest_registry_refresh_seconds: float = Field(default=30.0, gt=0)
    ingest_unknown_shop_ttl_seconds: float = Field(
        default=5.0, gt=0,
        description="How long a shop domain found in no registration is answered 401 without "
        "asking PostgreSQL again (a shop created meanwhile is accepted after that at most).",
    )  # fmt: skip
    shopify_token: SecretStr | None = Field(
        default=None,
        description="Shopify Admin API access token of the shop `refstream shopify reconcile` "
        "reads (`X-Shopify-Access-Token`); unset: the token stored when the app was installed "
        "on the shop through OAuth.",
    )
    # --- the Shopify app: OAuth installs (api/shopify) and custom-app shop claims ---
    shopify_api_key: str | None = Field(
        default=None,
        description="The app's client id (Partner Dashboard); unset: OAuth installs are off.",
    )
    shopify_api_secret: SecretStr | None = Field(
        default=None,
        description="The app's client secret: signs Shopify's OAuth redirects and the webhooks "
        "of every shop installed through OAuth.",
    )
    shopify_scopes: str = Field(
        default="read_orders,read_products,read_customers",
        description="Access scopes an OAuth install asks for (comma-separated).",
    )
    shopify_token_key: SecretStr | None = Field(
        default=None,
        description="AES-256-GCM key of the stored Admin API access tokens: 32 bytes, "
        "url-safe base64 (`python -c 'import os,base64;print(base64.urlsafe_b64encode("
        "os.urandom(32)).decode())'`). Needed for OAuth installs; keep it out of the database.",
    )
    shopify_admin_url: str | None = Field(
        default=None,
        description="Base URL of every shop's admin for OAuth and the Admin API (a proxy or a "
        "local stand-in); default `https://{shop}`.",
    )
    api_public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The API's public base URL: OAuth's `redirect_uri` is "
        "`{api_public_url}/v1/shopify/callback` (whitelisted in the app's settings).",
    )
    ingest_public_url: str = Field(
        default="http://127.0.0.1:8001",
        description="The ingress's public base URL: the webhook subscriptions of an installed "
        "shop point at `{ingest_public_url}/webhooks/shopify`.",
    )
    shopify_install_ttl_seconds: int = Field(
        default=600, ge=10, description="How long an OAuth `state` nonce stays usable."
    )
    shop_claim_ttl_hours: int = Field(
        default=72,
        ge=1,
        description="How long a custom-app shop claim waits for its first signed webhook.",
    )
    ingest_metrics_dir: Path | None = Field(
        default=None, description="Prometheus multiprocess directory when running workers."
    )
    click_ip_salt: str = Field(
        default=DEV_CLICK_IP_SALT, min_length=8, description="Salt of click IP hashes."
    )
    click_duplicate_window_seconds: int = Field(default=30, ge=1)
    click_cookie_max_age_days: int = Field(default=90, ge=1)

    # --- PostgreSQL roles, the audit anchor and production safety ---
    postgres_owner_url: str = Field(
        default="postgresql://refstream_owner@127.0.0.1:5432/refstream",
        description="DSN of the role that owns the schema and runs migrations; same database "
        "as `postgres_url`. The services never use it.",
    )
    postgres_admin_url: str | None = Field(
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        description="A superuser DSN used only by `refstream migrate`/`up` to create the owner "
        "and service roles and the database when missing; unset (empty) where a DBA did that.",
    )
    environment: Literal["development", "production"] = Field(
        default="development",
        description="`production` refuses to start with development secrets or a database "
        "role that may rewrite the append-only tables.",
    )
    audit_anchor_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the audit anchor (`refstream audit verify`); keep it away "
        "from the database and its backups.",
    )
    redaction_key: SecretStr | None = Field(
        default=None,
        description="HMAC key of the customer references recorded by `refstream redact run` "
        "(who holds it can tell whether a given customer was redacted; the record alone "
        "cannot). Unset: the JWT secret is used, under its own domain prefix.",
    )
    raw_events_retention_days: int = Field(
        default=730,
        ge=0,
        description="Days the raw-event archive (ClickHouse `raw_events`) keeps an event after "
        "it was received; 0 keeps it forever. Replays rebuild only from what is kept. Applied "
        "as a ClickHouse TTL by `refstream migrate`/`up`.",
    )
    clicks_retention_days: int = Field(
        default=400,
        ge=0,
        description="Days ClickHouse `clicks` keeps a click (IP hash, user agent, visitor id); "
        "0 keeps it forever. Applied as a ClickHouse TTL by `refstream migrate`/`up`.",
    )
    redaction_interval_seconds: int = Field(
        default=3600,
        ge=60,
        description="How often `refstream up` runs the redaction job (Shopify allows 30 days).",
    )
    audit_anchor_path: Path | None = Field(
        default=None,
        description="File of the signed audit chain heads (default: "
        "`<state_dir>/audit-anchor.json`); keep it off the database server.",
    )

    @field_validator(
        "postgres_admin_url",
        "audit_anchor_key",
        "audit_anchor_path",
        "redaction_key",
        "shopify_token",
        "shopify_api_key",
        "shopify_api_secret",
        "shopify_token_key",
        "shopify_admin_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def anchor_path(self) -> Path:
        return self.audit_anchor_path or self.state_dir / "audit-anchor.json"

    @property
    def postgres_owner_sync_url(self) -> str:
        """SQLAlchemy URL (psycopg v3) of the owner role, used by Alembic."""
        return _with_driver(self.postgres_owner_url, "postgresql+psycopg")

    @cached_property
    def clickhouse(self) -> ClickHouseTarget:
        """The ClickHouse URL split into what clickhouse-connect takes."""
        return ClickHouseTarget.parse(self.clickhouse_url)

    @property
    def postgres_async_url(self) -> str:
        """SQLAlchemy URL for the asyncpg driver."""
        return _with_driver(self.postgres_url, "postgresql+asyncpg")

    @property
    def postgres_sync_url(self) -> str:
        """SQLAlchemy URL for the psycopg (v3) driver, used by Alembic and the CLI."""
        return _with_driver(self.postgres_url, "postgresql+psycopg")


class ClickHouseTarget:
    """Host, port, credentials and database of a ClickHouse HTTP endpoint."""

    __slots__ = ("database", "host", "password", "port", "secure", "username")

    def __init__(
        self, *, host: str, port: int, username: str, password: str, database: str, secure: bool
    ) -> None:
        self.host = host
        self.port = port
        self.username = username
        self.password = password
        self.database = database
        self.secure = secure

    @classmethod
    def parse(cls, url: str) -> ClickHouseTarget:
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"}:
            raise ValueError(f"ClickHouse URL must be http(s)://, got {url!r}")
        secure = parts.scheme == "https"
        return cls(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8443 if secure else 8123),
            username=parts.username or "default",
            password=parts.password or "",
            database=parts.path.strip("/") or "default",
            secure=secure,
        )


def _with_driver(dsn: str, scheme: str) -> str:
    _, sep, rest = dsn.partition("://")
    if not sep:
        raise ValueError(f"not a URL: {dsn!r}")
    return f"{scheme}://{rest}"
