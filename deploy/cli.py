"""`refstream`: operate the local stack and its stores.

`up | down | status` run the whole local stack in the background; `migrate` applies schemas;
`demo` feeds a small synthetic traffic sample. Later components add their own commands here.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from api import cli as api_cli
from dataflows import cli as dataflow_cli
from deploy import stack
from deploy.replay import replay_app
from ingest import cli as ingest_cli
from schemas.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(ingest_cli.shop_app, name="shop")
app.add_typer(ingest_cli.odoo_app, name="odoo")
app.add_typer(ingest_cli.ingest_app, name="ingest")
app.add_typer(api_cli.audit_app, name="audit")
app.add_typer(dataflow_cli.dataflow_app, name="dataflow")
app.add_typer(replay_app, name="replay")
console = Console()


def _report(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}")


def _fail(exc: stack.StackError) -> typer.Exit:
    console.print(f"[bold red]✗ {exc.component}[/bold red]: {exc.message}")
    return typer.Exit(code=1)


@app.command()
def up() -> None:
    """Start Kafka (tansu), ClickHouse (chDB server), PostgreSQL and Redis; migrate; make topics."""
    settings = Settings()
    started = time.monotonic()
    try:
        stack.up(settings, _report)
    except stack.StackError as exc:
        raise _fail(exc) from exc
    console.print(f"[bold green]✓ stack up[/bold green] in {time.monotonic() - started:.1f}s")
    _print_status(settings)


@app.command()
def down() -> None:
    """Stop the processes `up` started (PostgreSQL and Redis that were reused keep running)."""
    stack.down(Settings(), _report)


@app.command()
def status() -> None:
    """A table of every component: address, state and who manages it. Exit 1 if any is down."""
    if not _print_status(Settings()):
        raise typer.Exit(code=1)


@app.command()
def migrate() -> None:
    """Apply PostgreSQL migrations and ClickHouse DDL, and create missing Kafka topics."""
    try:
        stack.migrate(Settings(), _report)
    except stack.StackError as exc:
        raise _fail(exc) from exc


@app.command()
def demo(
    tenant: Annotated[str, typer.Option(help="Tenant id for the sample.")] = "t_demo",
    shop: Annotated[str, typer.Option(help="Shop domain for the sample.")] = "demo.myshopify.com",
    clicks: Annotated[int, typer.Option(min=0)] = 200,
    orders: Annotated[int, typer.Option(min=0)] = 50,
) -> None:
    """Send a small sample (clicks, signed Shopify orders, refunds, Odoo invoices) through the
    running ingress, then check that every acknowledged event is in Kafka."""
    from deploy import demo as demo_traffic  # only this command needs it

    settings = Settings()
    setup = demo_traffic.seed(settings, tenant, shop)
    report = demo_traffic.send(settings, setup, clicks=clicks, orders=orders)
    found = demo_traffic.in_topics(settings, report)
    table = Table(title=f"demo traffic through the ingress (tenant {tenant}, shop {shop})")
    for column in ("stream", "sent", "acknowledged", "in Kafka"):
        table.add_column(column)
    for stream in ("clicks", "orders", "refunds", "erp"):
        table.add_row(stream, str(report.sent[stream]), str(report.acked[stream]),
                      str(found[stream]))  # fmt: skip
    console.print(table)
    results = demo_traffic.attribution_results(settings, setup, report)
    attribution = Table(title="attributed by the dataflow (ClickHouse conversions, ledger)")
    columns = ("agent", "conversions by rule", "commission (USD, net of refunds)",
               "of which approved (invoice paid)")  # fmt: skip
    for column in columns:
        attribution.add_column(column)
    for result in results:
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(result.conversions.items()))
        attribution.add_row(
            result.agent_id, rules or "-", f"{result.commission:.2f}", f"{result.approved:.2f}"
        )
    console.print(attribution)
    console.print(
        f"Look at: `refstream status`; logs in {settings.state_dir / 'logs'}; ingress metrics "
        f"http://{settings.ingest_host}:{settings.ingest_port}/metrics; API docs "
        f"http://{settings.api_host}:{settings.api_port}/docs; Kafka at "
        f"{settings.kafka_bootstrap}; ClickHouse at {settings.clickhouse_url}."
    )
    if any(found[s] != report.acked[s] for s in found):
        raise typer.Exit(code=1)


def _print_status(settings: Settings) -> bool:
    rows = stack.status(settings)
    table = Table(title="refstream local stack")
    for column in ("component", "address", "state", "pid", "detail"):
        table.add_column(column)
    for row in rows:
        state = "[green]up[/green]" if row.ok else "[red]down[/red]"
        table.add_row(row.name, row.address, state, str(row.pid or "-"), row.detail)
    console.print(table)
    return all(row.ok for row in rows)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
