"""`refstream replay …`: re-run a tenant's history into a shadow ledger, diff it, promote it.

The CLI orchestrates the two layers: `dataflows.replay` runs the dataflow's code into the
shadow ledger, `api.replays` compares and promotes (live ledger, audit log).
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text
from sqlalchemy.ext.asyncio import AsyncSession

from api.context import RequestMeta
from api.db import create_engine, create_sessionmaker
from api.errors import RefstreamError
from api.replays import Promotion, ReplayDiff, diff_replay, promote
from dataflows.attribution.flow import skip_dataframe_libraries, tune_garbage_collector
from dataflows.replay import ReplayResult, ReplayScope, ReplaySource, run_replay
from schemas.commission_rules import CommissionRuleSet
from schemas.settings import Settings

replay_app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
console = Console()
_T = TypeVar("_T")


class RateColumn(ProgressColumn):
    """Events per second (Rich's smoothed speed)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} events/s" if speed else "- events/s", style="cyan")


def _when(text: str | None) -> datetime | None:
    """ISO 8601 date or time; without an offset it is UTC."""
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise typer.BadParameter(f"not an ISO 8601 date/time: {text!r}") from exc
    return parsed if parsed.utcoffset() is not None else parsed.replace(tzinfo=UTC)


def _rules(path: Path | None) -> CommissionRuleSet | None:
    if path is None:
        return None
    try:
        return CommissionRuleSet.model_validate_json(path.read_bytes())
    except (OSError, ValidationError) as exc:
        raise typer.BadParameter(f"{path}: {exc}") from exc


def _with_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[_T]]) -> _T:
    async def run() -> _T:
        engine = create_engine(settings)
        try:
            async with create_sessionmaker(engine)() as session:
                try:
                    result = await work(session)
                except BaseException:
                    await session.rollback()
                    raise
                await session.commit()
                return result
        finally:
            await engine.dispose()

    try:
        return asyncio.run(run())
    except RefstreamError as exc:
        console.print(f"[bold red]✗[/bold red] {exc.detail}")
        raise typer.Exit(code=1) from exc


def print_diff(result: ReplayDiff, *, show: int) -> None:
    diff = result.diff
    totals = Table(title=f"per agent: live vs shadow (replay {result.replay.replay_id})")
    for column in ("agent", "currency", "live", "shadow", "difference"):
        totals.add_column(column, justify="left" if column in ("agent", "currency") else "right")
    for t in diff.totals:
        style = "" if t.delta == 0 else "bold yellow"
        totals.add_row(t.agent_id, t.currency, f"{t.live:.2f}", f"{t.shadow:.2f}",
                       f"{t.delta:+.2f}", style=style)  # fmt: skip
    console.print(totals)
    counts = dict.fromkeys(("changed", "added", "missing"), 0)
    for change in diff.changes:
        counts[change.kind.value] += 1
    console.print(
        f"entries: {counts['changed']} changed, {counts['added']} added, "
        f"{counts['missing']} missing"
    )
    if not diff.changes or show <= 0:
        return
    entries = Table(title=f"changed entries (first {min(show, len(diff.changes))})")
    for column in ("entry", "kind", "order", "agent", "live", "shadow"):
        entries.add_column(column)
    for change in diff.changes[:show]:
        agents = sorted(set(change.live) | set(change.shadow))
        for agent, currency in agents:
            live = change.live.get((agent, currency))
            shadow = change.shadow.get((agent, currency))
            entries.add_row(
                change.target_id, change.kind.value, change.template.order_id, agent,
                f"{live:.2f} {currency}" if live is not None else "-",
                f"{shadow:.2f} {currency}" if shadow is not None else "-",
            )  # fmt: skip
    console.print(entries)


def _promote(settings: Settings, replay_id: str, actor: str) -> Promotion:
    meta = RequestMeta(request_id=f"cli-replay-{replay_id}", source_ip=None, now=datetime.now(UTC))
    promotion = _with_session(settings, lambda s: promote(s, replay_id, actor=actor, meta=meta))
    if promotion.already_promoted:
        console.print(f"[dim]replay {replay_id} was already promoted: nothing booked[/dim]")
    else:
        console.print(
            f"[bold green]✓ promoted[/bold green] {replay_id}: {promotion.adjustments} adjustment "
            f"entries (net {promotion.net_amount:+.2f}), audit entry #{promotion.audit_seq}"
        )
    return promotion


def _default_actor() -> str:
    return f"cli:{getpass.getuser()}"


@replay_app.command("run")
def run(
    tenant: Annotated[str, typer.Option(help="Company (tenant) id.")],
    since: Annotated[
        str | None, typer.Option(help="Event time from (ISO 8601, inclusive; UTC if no offset).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="Event time until (exclusive).")] = None,
    shop: Annotated[list[str] | None, typer.Option(help="Only these shops (repeat).")] = None,
    program: Annotated[
        list[str] | None, typer.Option(help="Only these programs' entries (repeat).")
    ] = None,
    source: Annotated[
        str, typer.Option("--from", help="archive (ClickHouse raw_events) or kafka.")
    ] = "archive",
    what_if: Annotated[
        Path | None, typer.Option(help="A proposed CommissionRuleSet (JSON) to apply instead.")
    ] = None,
    do_promote: Annotated[
        bool, typer.Option("--promote", help="Book the differences into the live ledger.")
    ] = False,
    actor: Annotated[str | None, typer.Option(help="Audit actor (default cli:<user>).")] = None,
    show: Annotated[int, typer.Option(min=0, help="Changed entries to list.")] = 20,
) -> None:
    """Replay a tenant's history into a new shadow ledger version and print the diff."""
    if source not in ("archive", "kafka"):
        raise typer.BadParameter("--from must be archive or kafka")
    kind: ReplaySource = "archive" if source == "archive" else "kafka"
    settings = Settings()
    scope = ReplayScope(
        tenant_id=tenant, since=_when(since), until=_when(until),
        shops=tuple(shop or ()), programs=tuple(program or ()),
    )  # fmt: skip
    rules = _rules(what_if)
    tune_garbage_collector()  # this process runs the replay dataflow, like a flow process
    skip_dataframe_libraries()
    progress = Progress(
        TextColumn("[bold]replay[/bold] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(f"{tenant} from {kind}", total=None)
        result: ReplayResult = run_replay(
            settings, scope, source=kind, what_if=rules,
            on_total=lambda total: progress.update(task, total=total),
            on_events=lambda n: progress.advance(task, n),
        )  # fmt: skip
    dead = ", ".join(f"{reason} {n}" for reason, n in result.dead.items()) or "none"
    console.print(
        f"[bold green]✓ replay {result.replay_id}[/bold green]: {result.events:,} events, "
        f"{result.orders:,} orders, {result.entries:,} shadow entries, dead letters: {dead}; "
        f"ledger digest {result.ledger_digest[:16]}…"
    )
    print_diff(_with_session(settings, lambda s: diff_replay(s, result.replay_id)), show=show)
    if do_promote:
        _promote(settings, result.replay_id, actor or _default_actor())


@replay_app.command("diff")
def diff(
    replay_id: Annotated[str, typer.Argument(help="The replay id `run` printed.")],
    show: Annotated[int, typer.Option(min=0, help="Changed entries to list.")] = 20,
) -> None:
    """Print a finished replay's diff against the live ledger as it is now."""
    settings = Settings()
    print_diff(_with_session(settings, lambda s: diff_replay(s, replay_id)), show=show)


@replay_app.command("promote")
def promote_command(
    replay_id: Annotated[str, typer.Argument(help="The replay id `run` printed.")],
    actor: Annotated[str | None, typer.Option(help="Audit actor (default cli:<user>).")] = None,
) -> None:
    """Book a replay's differences into the live ledger in one transaction, with an audit
    entry. Promoting the same replay again changes nothing."""
    _promote(Settings(), replay_id, actor or _default_actor())
