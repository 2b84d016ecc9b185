"""`refstream audit …`: operator commands of the business core."""

from __future__ import annotations

from typing import Annotated

import psycopg
import typer
from psycopg.rows import dict_row
from rich.console import Console

from api.audit.chain import AuditFields, StoredEntry, verify_chain
from schemas.settings import Settings

audit_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
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
    """Recompute every audit hash chain; exit 1 naming the first broken entry."""
    settings = Settings()
    entries = load_entries(settings.postgres_url, tenant)
    problems = verify_chain(entries)
    if problems:
        first = problems[0]
        console.print(f"[bold red]✗ audit chain broken[/bold red]: {first}")
        for problem in problems[1:]:
            console.print(f"  also: {problem}")
        raise typer.Exit(code=1)
    tenants = len({e.fields.tenant_id for e in entries})
    summary = f"{len(entries)} entries, {tenants} companies"
    console.print(f"[bold green]✓ audit chain intact[/bold green]: {summary}")
