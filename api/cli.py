"""`refstream audit …` and `refstream shop collections …`: operator commands of the business
core."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console

from api.audit import anchor
from api.audit.chain import AuditFields, StoredEntry, verify_chain
from api.collections import backfill
from schemas.settings import Settings

audit_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
collections_app = typer.Typer(
    no_args_is_help=True, help="A shop's collection membership (for collection commission rates)."
)
console = Console()

_COLUMNS = (
    "tenant_id, seq, actor, action, entity_type, entity_id, before, after, request_id, "
    "source_ip, created_at, prev_hash, hash"
)


def load_entries(postgres_url: str, tenant: str | None) -> list[StoredEntry]:
    query = f"SELECT {_COLUMNS} FROM audit_log"
    params: tuple[str, ...] = ()
    if tenant is not None:
        query += " WHERE tenant_id = %s"
        params = (tenant,)
    with psycopg.connect(postgres_url) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query + " ORDER BY tenant_id, seq", params).fetchall()
    return [
        StoredEntry(
            fields=AuditFields(**{k: v for k, v in row.items() if k != "hash"}),
            hash=row["hash"],
        )
        for row in rows
    ]


@audit_app.command()
def verify(
    tenant: Annotated[
        str | None, typer.Option(help="Company (tenant) id; all companies when omitted.")
    ] = None,
) -> None:
    """Recompute every audit hash chain and compare it with the signed anchor of the last run
    (REFSTREAM_AUDIT_ANCHOR_KEY); exit 1 naming the first broken entry, else move the anchor to
    the current heads."""
    settings = Settings()
    entries = load_entries(settings.postgres_url, tenant)
    problems = verify_chain(entries)
    key = settings.audit_anchor_key
    path = settings.anchor_path
    previous = None
    if key is not None:
        try:
            previous = read_anchor(path, key.get_secret_value().encode())
        except anchor.AnchorError as exc:
            console.print(f"[bold red]✗ audit anchor refused[/bold red] ({path}): {exc}")
            raise typer.Exit(code=1) from exc
        if previous is not None:
            problems += anchor.anchor_problems(previous, entries, tenant)
    if problems:
        first = problems[0]
        console.print(f"[bold red]✗ audit chain broken[/bold red]: {first}")
        for problem in problems[1:]:
            console.print(f"  also: {problem}")
        raise typer.Exit(code=1)
    tenants = len({e.fields.tenant_id for e in entries})
    summary = f"{len(entries)} entries, {tenants} companies"
    console.print(f"[bold green]✓ audit chain intact[/bold green]: {summary}")
    if key is None:
        console.print(
            "no REFSTREAM_AUDIT_ANCHOR_KEY: a chain recomputed after a change cannot be detected"
        )
        return
    heads = anchor.chain_heads(entries, datetime.now(UTC))
    write_anchor(path, anchor.advance(previous, heads), key.get_secret_value().encode())
    what = "matches the anchor, moved to" if previous else "first anchor written:"
    console.print(f"{what} {len(heads)} chain heads in {path}")


@audit_app.command()
def erase(
    value: Annotated[str, typer.Argument(help="The personal value (email, phone, name, IP).")],
    tenant: Annotated[str, typer.Option(help="Company (tenant) id.")],
) -> None:
    """Erase a personal value from the company's audit log: the entries keep their references
    (so every hash and the chain stay intact) and read `null` where the value was. Matches
    emails and names case-insensitively; entries written before references existed keep their
    inline values."""
    settings = Settings()
    with psycopg.connect(settings.postgres_url) as conn:
        erased = conn.execute(
            "DELETE FROM audit_personal WHERE tenant_id = %s AND lower(value) = lower(%s)",
            (tenant, value),
        ).rowcount
    console.print(f"{erased} audit reference(s) erased")


def read_anchor(path: Path, key: bytes) -> anchor.Anchor | None:
    """The anchor stored at `path`, or None when there is none yet."""
    try:
        document = path.read_bytes()
    except FileNotFoundError:
        return None
    return anchor.load(document, key)


def write_anchor(path: Path, value: anchor.Anchor, key: bytes) -> None:
    """Replace the anchor atomically (a crash leaves the old or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(anchor.dump(value, key))
    os.replace(partial, path)


@collections_app.command("import")
def import_collections(
    path: Annotated[Path, typer.Argument(help="JSON: the API's bulk body or Shopify's collects.")],
    shop: Annotated[str, typer.Option(help="Shop domain, e.g. acme.myshopify.com.")],
    api: Annotated[str, typer.Option(help="Base URL of the business API.")] = (
        "http://127.0.0.1:8000"
    ),
    token: Annotated[
        str,
        typer.Option(
            envvar="REFSTREAM_API_TOKEN", help="An owner's access token or API key (rsk_…)."
        ),
    ] = "",
) -> None:
    """Replace the membership of every collection in PATH through the API (`shops.write` on
    the company; audited as `shop_collection.import`)."""
    try:
        body = backfill.import_body(orjson.loads(path.read_bytes()))
    except (OSError, orjson.JSONDecodeError, backfill.BackfillError) as exc:
        console.print(f"[red]cannot import {path}: {exc}[/red]")
        raise typer.Exit(code=2) from exc

    async def run() -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(base_url=api, headers=headers, timeout=60) as client:
            return await backfill.send(client, shop, body)

    response = asyncio.run(run())
    if response.is_error:
        console.print(f"[red]{response.status_code}: {response.text[:2000]}[/red]")
        raise typer.Exit(code=1)
    counts = [len(c["product_ids"] or []) for c in response.json()["items"]]
    console.print(f"{len(counts)} collection(s) of {shop} replaced, {sum(counts)} product(s)")


exceptions_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="The exceptions inbox (dead letters)."
)


@exceptions_app.command("consume")
def consume_exceptions() -> None:
    """Store the dead-letter topic's letters per tenant in PostgreSQL (runs until stopped)."""
    from api.exceptions.consumer import consume  # Kafka client only for this command

    consume(Settings())


analytics_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Analytics rollups (pre-aggregated hours)."
)


@analytics_app.command("build")
def build_rollups(
    interval: Annotated[float, typer.Option(help="Seconds between passes.", min=0.0)] = 10.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
) -> None:
    """Rebuild the stale closed hours of the analytics rollups (runs until stopped, or one pass
    with --once); without a builder every analytics query reads raw rows (correct but slow)."""
    import logging

    from api.analytics.builder import run  # ClickHouse client only for this command

    logging.basicConfig(level=logging.INFO)
    run(Settings(), interval=interval, once=once)


redact_app = typer.Typer(
    no_args_is_help=True, add_completion=False, help="GDPR redaction (Shopify compliance)."
)


@redact_app.command("run")
def run_redactions(
    every: Annotated[
        int | None,
        typer.Option(help="Repeat every N seconds until stopped (`refstream up` uses this)."),
    ] = None,
) -> None:
    """Carry out the archived `customers/redact` and `shop/redact` requests not yet done: mask
    the personal data in `raw_events`, `clicks` and the exceptions inbox, record each in
    `redactions`."""
    import time

    from api.redaction import job

    settings = Settings()
    while True:
        failed: list[str] = []
        try:
            outcomes = job.run_once(settings)
        except job.RequestsFailed as exc:
            outcomes = exc.outcomes
            failed = [f"{r.kind} {r.event_id} ({r.tenant_id})" for r in exc.failed]
        except Exception as exc:  # a store unreachable: the loop tries again later
            if every is None:
                raise
            console.print(f"[red]redaction run failed, retrying in {every} s: {exc}[/red]")
            outcomes = []
        for o in outcomes:
            console.print(
                f"{o.request.kind} {o.request.event_id} ({o.request.tenant_id}, "
                f"{o.request.shop}): {o.raw_events} archived event(s), {o.clicks} click(s), "
                f"{o.exceptions} inbox letter(s) masked"
            )
        console.print(f"{len(outcomes)} redaction request(s) carried out")
        for request in failed:
            console.print(f"[red]failed, left pending: {request}[/red]")
        if every is None:
            if failed:
                raise typer.Exit(code=1)
            return
        time.sleep(every)
