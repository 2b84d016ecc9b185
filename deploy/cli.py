"""`refstream`: operate the local stack and its stores.

`up | down | status` run the whole local stack in the background; `migrate` applies schemas;
`demo` sets up a demo company through the API and feeds it synthetic traffic. Later
components add their own commands here.
"""

from __future__ import annotations

import signal
import threading
import time
from decimal import Decimal
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from api import cli as api_cli
from dataflows import cli as dataflow_cli
from deploy import demo_company, stack
from deploy.replay import replay_app
from ingest import cli as ingest_cli
from schemas.settings import Settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
app.add_typer(ingest_cli.shop_app, name="shop")
ingest_cli.shop_app.add_typer(api_cli.collections_app, name="collections")
app.add_typer(ingest_cli.odoo_app, name="odoo")
app.add_typer(ingest_cli.ingest_app, name="ingest")
app.add_typer(ingest_cli.shopify_app, name="shopify")
app.add_typer(api_cli.audit_app, name="audit")
app.add_typer(api_cli.exceptions_app, name="exceptions")
app.add_typer(api_cli.analytics_app, name="analytics")
app.add_typer(api_cli.redact_app, name="redact")
app.add_typer(dataflow_cli.dataflow_app, name="dataflow")
app.add_typer(replay_app, name="replay")
console = Console()
ZERO = Decimal(0)


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
    company: Annotated[
        str, typer.Option(help="Slug of the demo company (reused when it exists).")
    ] = demo_company.COMPANY,
    shop: Annotated[
        str | None, typer.Option(help="Shop domain [default: <company>.myshopify.com].")
    ] = None,
    clicks: Annotated[int, typer.Option(min=0)] = 200,
    orders: Annotated[int, typer.Option(min=0)] = 50,
    live: Annotated[
        bool, typer.Option("--live", help="Then keep sending a trickle of events until Ctrl-C.")
    ] = False,
    rate: Annotated[
        float, typer.Option(min=0.1, max=1000, help="Events per second with --live.")
    ] = 2.0,
) -> None:
    """Set up a demo company through the API, send a small sample (clicks, signed Shopify
    orders, refunds, Odoo invoices) through the running ingress, check that every acknowledged
    event is in Kafka and print how the dataflow attributed it, and the dashboard logins."""
    from deploy import demo as demo_traffic  # only this command needs it

    settings = Settings()
    try:
        setup = demo_company.set_up(settings, slug=company, shop=shop)
    except demo_company.DemoError as exc:
        console.print(f"[bold red]✗ demo setup[/bold red]: {escape(str(exc))}")
        raise typer.Exit(code=1) from exc
    except httpx.TransportError as exc:
        console.print(
            f"[bold red]✗ demo setup[/bold red]: the API: {escape(str(exc))} (is the stack up?)"
        )
        raise typer.Exit(code=1) from exc
    teams = ", ".join(demo_company.TEAMS)
    console.print(
        f"demo company {setup.slug!r} ({setup.tenant_id}) set up through the API: units "
        f"{teams}; {len(setup.agents)} agents with links and coupons; program, rules, shop "
        f"{setup.shop}; Odoo endpoint"
    )
    report = demo_traffic.send(settings, setup, clicks=clicks, orders=orders)
    found = demo_traffic.in_topics(settings, report)
    table = Table(
        title=f"demo traffic through the ingress (company {setup.slug}, shop {setup.shop})"
    )
    for column in ("stream", "sent", "acknowledged", "in Kafka"):
        table.add_column(column)
    for stream in demo_traffic.STREAMS:
        table.add_row(stream, str(report.sent[stream]), str(report.acked[stream]),
                      str(found[stream]))  # fmt: skip
    console.print(table)
    results = demo_traffic.attribution_results(settings, setup, report)
    attribution = Table(title="attributed by the dataflow (ClickHouse conversions, ledger)")
    columns = ("agent", "conversions by rule", "commission (USD, net of refunds)",
               "of which approved (invoice paid)")  # fmt: skip
    for column in columns:
        attribution.add_column(column)
    by_agent = {result.agent_id: result for result in results}
    for agent_id in [a.id for a in setup.agents] + sorted(set(by_agent) - set(setup.names)):
        result = by_agent.get(agent_id) or demo_traffic.AgentResult(agent_id, {}, ZERO, ZERO)
        rules = ", ".join(f"{rule} {n}" for rule, n in sorted(result.conversions.items()))
        name = "(no agent)" if agent_id == "-" else setup.names.get(agent_id, agent_id)
        attribution.add_row(
            name, rules or "-", f"{result.commission:.2f}", f"{result.approved:.2f}"
        )
    console.print(attribution)
    _print_logins(settings, setup)
    if any(found[s] != report.acked[s] for s in found):
        raise typer.Exit(code=1)
    if live:
        _live(settings, setup, rate)


def _print_logins(settings: Settings, setup: demo_company.DemoSetup) -> None:
    dashboard = f"{demo_company.api_url(settings)}/dashboard"
    logins = Table(title=f"open {dashboard} and log in with")
    for column in ("company", "email", "password", "role"):
        logins.add_column(column)
    for login in (setup.owner, setup.manager):
        logins.add_row(login.company, login.email, login.password, f"{login.role} ({login.unit})")
    console.print(logins)
    console.print(f"Dashboard: {dashboard}")
    console.print(
        f"Look at: `refstream status`; `refstream demo --live` for a live trickle; logs in "
        f"{settings.state_dir / 'logs'}; ingress metrics "
        f"http://{settings.ingest_host}:{settings.ingest_port}/metrics; API docs "
        f"{demo_company.api_url(settings)}/docs; Kafka at {settings.kafka_bootstrap}; "
        f"ClickHouse at {settings.clickhouse_url}."
    )


def _live(settings: Settings, setup: demo_company.DemoSetup, rate: float) -> None:
    """The live trickle until SIGINT (Ctrl-C), then one summary line; exits 0."""
    from deploy import demo as demo_traffic

    stop = threading.Event()
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: stop.set())
    console.print(f"live: about {rate:g} events/s for {setup.slug!r} until Ctrl-C")
    started = time.monotonic()
    try:
        report = demo_traffic.live(settings, setup, rate=rate, stop=stop)
    finally:
        signal.signal(signal.SIGINT, previous)
    streams = ", ".join(f"{s} {report.sent[s]}" for s in demo_traffic.STREAMS)
    console.print(
        f"live: stopped after {time.monotonic() - started:.0f} s: sent "
        f"{sum(report.sent.values())} events ({streams}), acknowledged "
        f"{sum(report.acked.values())}"
    )


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
