"""`refstream shop …`, `refstream odoo …` and `refstream ingest serve`."""

from __future__ import annotations

import os
import secrets
import shutil
from typing import Annotated

import psycopg
import redis
import typer
import uvicorn
from rich.console import Console

from schemas.registry import REGISTRY_CHANGED_CHANNEL, erp_token_hash
from schemas.settings import Settings

shop_app = typer.Typer(no_args_is_help=True, help="Shopify shops and their webhook secrets.")
odoo_app = typer.Typer(no_args_is_help=True, help="Odoo webhook endpoints.")
ingest_app = typer.Typer(no_args_is_help=True, help="The ingress service.")
console = Console()


def ensure_tenant(conn: psycopg.Connection, tenant_id: str) -> None:
    """Register a bare tenant if it does not exist yet (the API manages its details)."""
    conn.execute(
        "INSERT INTO tenants (id, name, slug) VALUES (%s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (tenant_id, tenant_id, tenant_id),
    )


def announce_change(settings: Settings) -> None:
    """Tell running ingress workers to reload registrations now."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        client.publish(REGISTRY_CHANGED_CHANNEL, b"changed")
    finally:
        client.close()


def register_shop(
    settings: Settings, domain: str, tenant: str, secret: str, previous_secret: str | None
) -> str:
    """Insert or update a shop and announce the change; returns the normalised domain."""
    domain = domain.strip().lower()
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO shops (domain, tenant_id, secret, previous_secret) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (domain) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,"
            " secret = EXCLUDED.secret, previous_secret = EXCLUDED.previous_secret,"
            " active = true, updated_at = now()",
            (domain, tenant, secret, previous_secret),
        )
    announce_change(settings)
    return domain


def create_erp_endpoint(settings: Settings, tenant: str) -> str:
    """A new Odoo webhook token for `tenant` (stored hashed); returns the token."""
    token = secrets.token_urlsafe(32)
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO erp_endpoints (token_hash, tenant_id) VALUES (%s, %s)",
            (erp_token_hash(token), tenant),
        )
    announce_change(settings)
    return token


@shop_app.command("add")
def shop_add(
    domain: Annotated[str, typer.Argument(help="e.g. acme.myshopify.com")],
    secret: Annotated[str, typer.Option(help="The app's client secret (signs webhooks).")],
    tenant: Annotated[str, typer.Option(help="Tenant id the shop belongs to.")],
    previous_secret: Annotated[
        str | None, typer.Option(help="The previous secret, accepted during rotation.")
    ] = None,
) -> None:
    """Register a shop, or rotate its secret (the old one stays valid as `previous`)."""
    domain = register_shop(Settings(), domain, tenant, secret, previous_secret)
    console.print(f"shop {domain} registered for tenant {tenant}")


@shop_app.command("list")
def shop_list() -> None:
    """Registered shops (secrets are not shown)."""
    with psycopg.connect(Settings().postgres_url) as conn:
        rows = conn.execute(
            "SELECT domain, tenant_id, previous_secret IS NOT NULL, active FROM shops ORDER BY 1"
        ).fetchall()
    for domain, tenant, rotating, active in rows:
        flags = ", ".join(f for f, on in (("rotating", rotating), ("inactive", not active)) if on)
        console.print(f"{domain}  tenant={tenant}  {flags}")


@odoo_app.command("add-endpoint")
def odoo_add_endpoint(
    tenant: Annotated[str, typer.Option(help="Tenant id the Odoo database belongs to.")],
) -> None:
    """Create a webhook URL token for a tenant's Odoo; printed once, stored hashed."""
    token = create_erp_endpoint(Settings(), tenant)
    console.print(f"/webhooks/odoo/{token}", soft_wrap=True)


@ingest_app.command("serve")
def serve(
    workers: Annotated[int | None, typer.Option(help="Default: REFSTREAM_INGEST_WORKERS.")] = None,
) -> None:
    """Run the ingress under uvicorn with several worker processes."""
    settings = Settings()
    count = workers or settings.ingest_workers
    if count > 1:
        metrics_dir = settings.ingest_metrics_dir or settings.state_dir / "metrics" / "ingest"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True, exist_ok=True)
        # Workers inherit these: prometheus_client's multiprocess mode and our Settings.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        os.environ["REFSTREAM_INGEST_METRICS_DIR"] = str(metrics_dir)
    elif "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # uvicorn serves one worker in this process, whose metrics already keep their values
        # in memory (prometheus_client chose when this module imported it): expose those.
        os.environ.pop("REFSTREAM_INGEST_METRICS_DIR", None)
    uvicorn.run(
        "ingest.app:create_app",
        factory=True,
        host=settings.ingest_host,
        port=settings.ingest_port,
        workers=count,
        log_level="warning",
        access_log=False,
        # X-Forwarded-For is the app's business (REFSTREAM_TRUSTED_PROXIES): uvicorn's default
        # would trust it from any local peer.
        proxy_headers=False,
        http="httptools",
        loop="uvloop",
    )
