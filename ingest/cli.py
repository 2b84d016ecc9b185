"""`refstream shop …`, `refstream odoo …` and `refstream ingest serve`."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from datetime import datetime, timedelta
from typing import Annotated

import psycopg
import redis
import typer
import uvicorn
from rich.console import Console
from rich.markup import escape

from schemas.registry import REGISTRY_CHANGED_CHANNEL, erp_token_hash, valid_shop
from schemas.settings import Settings

shop_app = typer.Typer(no_args_is_help=True, help="Shopify shops and their webhook secrets.")
odoo_app = typer.Typer(no_args_is_help=True, help="Odoo webhook endpoints.")
ingest_app = typer.Typer(no_args_is_help=True, help="The ingress service.")
shopify_app = typer.Typer(no_args_is_help=True, help="Shopify Admin API jobs.")
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
    """Insert or update a custom-app shop **without proof** and announce the change; returns the
    normalised domain.

    The fixture path of tests and benches (and of an operator restoring a registration): it
    skips the claim and its proof (`file_claim`, `ingest.claims`), so nothing a company can
    reach calls it; `refstream shop add` files a claim instead.
    """
    domain = domain.strip().lower()
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO shops (domain, tenant_id, secret, previous_secret) VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (domain) DO UPDATE SET tenant_id = EXCLUDED.tenant_id,"
            " secret = EXCLUDED.secret, previous_secret = EXCLUDED.previous_secret,"
            " install = 'custom', uninstalled_at = NULL, active = true, updated_at = now()",
            (domain, tenant, secret, previous_secret),
        )
    announce_change(settings)
    return domain


def file_claim(settings: Settings, domain: str, tenant: str, secret: str) -> str:
    """File (or renew) `tenant`'s claim of `domain` with a custom app's webhook `secret`: the
    first webhook for the domain signed with it makes it the tenant's shop (`ingest.claims`).
    Returns the normalised domain."""
    domain = domain.strip().lower()
    with psycopg.connect(settings.postgres_url) as conn:
        ensure_tenant(conn, tenant)
        conn.execute(
            "INSERT INTO shop_claims (tenant_id, domain, secret, expires_at)"
            " VALUES (%s, %s, %s, now() + make_interval(hours => %s))"
            " ON CONFLICT (tenant_id, domain) DO UPDATE SET secret = EXCLUDED.secret,"
            " created_at = now(), expires_at = EXCLUDED.expires_at",
            (tenant, domain, secret, settings.shop_claim_ttl_hours),
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
    secret: Annotated[str, typer.Option(help="The custom app's client secret (signs webhooks).")],
    tenant: Annotated[str, typer.Option(help="Tenant id the shop belongs to.")],
) -> None:
    """Connect a shop through its custom app: files a claim that becomes the shop with the first
    webhook the ingress receives for it signed with SECRET (send a test notification from the
    shop's admin). Rotate the secret of a shop you have with PATCH /v1/shops/{domain}."""
    domain = domain.strip().lower()
    if not valid_shop(domain):
        console.print(f"[red]{escape(domain)} is not a *.myshopify.com domain[/red]")
        raise typer.Exit(code=1)
    if len(secret) < 16:
        console.print("[red]--secret must be at least 16 characters[/red]")
        raise typer.Exit(code=1)
    domain = file_claim(Settings(), domain, tenant, secret)
    console.print(
        f"claim of {domain} filed for tenant {tenant}: unverified until the first webhook "
        "signed with this secret reaches the ingress",
        soft_wrap=True,
    )


@shop_app.command("list")
def shop_list() -> None:
    """Registered shops (secrets are not shown)."""
    with psycopg.connect(Settings().postgres_url) as conn:
        rows = conn.execute(
            "SELECT domain, tenant_id, previous_secret IS NOT NULL, active, install,"
            " uninstalled_at IS NOT NULL FROM shops ORDER BY 1"
        ).fetchall()
        claims = conn.execute(
            "SELECT domain, tenant_id FROM shop_claims WHERE expires_at > now() ORDER BY 1, 2"
        ).fetchall()
    for domain, tenant, rotating, active, install, uninstalled in rows:
        flags = ", ".join(
            f
            for f, on in (
                ("rotating", rotating),
                ("inactive", not active),
                ("uninstalled", uninstalled),
            )
            if on
        )
        console.print(f"{domain}  tenant={tenant}  {install}  {flags}")
    for domain, tenant in claims:
        console.print(f"{domain}  tenant={tenant}  claim (unverified)")


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
    server: Annotated[
        str, typer.Option(help="HTTP server: uvicorn (httptools, uvloop) or granian.")
    ] = "uvicorn",
) -> None:
    """Run the ingress with several worker processes."""
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
    if server == "granian":
        serve_granian(settings, count)
        return
    if server != "uvicorn":
        raise typer.BadParameter("--server must be uvicorn or granian")
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
        # httptools, with an answer's headers and body written in one system call
        http="ingest.serving:OneWriteHttpToolsProtocol",
        loop="uvloop",
        server_header=False,  # "server: uvicorn" tells a client nothing it needs
    )


def serve_granian(settings: Settings, workers: int) -> None:
    """The same app under granian (Rust HTTP/1.1 server, ASGI interface): `bench.ingress
    --server granian` compares the two."""
    try:
        from granian import Granian  # optional: `pip install granian`
        from granian.constants import Interfaces, Loops
    except ImportError as exc:
        raise typer.BadParameter("granian is not installed: pip install granian") from exc

    Granian(
        "ingest.app:create_app",
        address=settings.ingest_host,
        port=settings.ingest_port,
        interface=Interfaces.ASGI,
        workers=workers,
        loop=Loops.uvloop,
        factory=True,
        log_enabled=False,
    ).serve()


@shopify_app.command("reconcile")
def shopify_reconcile(
    shop: Annotated[str, typer.Option(help="The shop's domain, e.g. acme.myshopify.com.")],
    since: Annotated[
        str | None,
        typer.Option(
            help="ISO 8601 time with offset to start from (orders updated at or after it); "
            "default: the shop's stored watermark (required on the first run)."
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            help="Admin API access token; default: REFSTREAM_SHOPIFY_TOKEN, else the token "
            "stored when the app was installed on the shop."
        ),
    ] = None,
    admin_url: Annotated[
        str | None,
        typer.Option(help="Admin API base URL; default https://<shop> (a proxy or stand-in)."),
    ] = None,
    page_size: Annotated[int, typer.Option(min=1, max=250, help="Orders per page.")] = 250,
    overlap_seconds: Annotated[
        int,
        typer.Option(min=0, help="The next run starts this long before this run's start."),
    ] = 300,
) -> None:
    """Send the shop's orders and refunds updated since the watermark through the webhook path
    (same topics and event ids, so what webhooks delivered is not counted twice); then move the
    watermark. Exit 1, watermark unchanged, if anything failed."""
    from ingest import reconcile

    settings = Settings()
    configured = settings.shopify_token
    secret = token or (configured.get_secret_value() if configured is not None else None)
    try:
        secret = secret or reconcile.stored_token(settings, shop)
    except reconcile.ReconcileError as exc:
        console.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(code=1) from exc
    if not secret:
        console.print(
            "[red]no Admin API token: --token, REFSTREAM_SHOPIFY_TOKEN, or install the app on "
            "the shop (OAuth) so its token is stored[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(code=1)
    try:
        start = datetime.fromisoformat(since) if since else None
    except ValueError:
        console.print(f"[red]--since is not an ISO 8601 time: {escape(since or '')}[/red]")
        raise typer.Exit(code=1) from None
    try:
        result = asyncio.run(
            reconcile.reconcile(
                settings,
                shop,
                token=secret,
                since=start,
                base_url=admin_url,
                page_size=page_size,
                overlap=timedelta(seconds=overlap_seconds),
            )
        )
    except reconcile.ReconcileError as exc:
        console.print(
            f"[red]reconcile {escape(shop)}: {escape(str(exc))}[/red] (watermark unchanged)",
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from exc
    calls = result.calls
    console.print(
        f"{result.shop}: {result.orders} orders, {result.refunds} refunds sent"
        f" ({result.dead_lettered} dead-lettered) since {result.since.isoformat()};"
        f" {calls.pages} pages, {calls.requests} calls, {calls.throttled} throttled (429),"
        f" {calls.slowdowns} slowdowns, {calls.waited_seconds:.1f}s waited;"
        f" watermark {result.watermark.isoformat()}",
        soft_wrap=True,
    )
