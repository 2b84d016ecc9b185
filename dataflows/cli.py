"""`refstream dataflow run`: the attribution dataflow in this process."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from schemas.settings import Settings

dataflow_app = typer.Typer(no_args_is_help=True, help="The attribution dataflow (Bytewax).")


def ensure_recovery_dir(directory: Path, partitions: int) -> None:
    """Create `directory` with `partitions` empty recovery partitions unless it has some.

    The partition count cannot change later: make it at least the largest worker count.
    """
    from bytewax.recovery import init_db_dir

    directory.mkdir(parents=True, exist_ok=True)
    if not any(directory.glob("part-*")):
        init_db_dir(directory, partitions)  # type: ignore[no-untyped-call]


@dataflow_app.command("run")
def run(
    recovery_dir: Annotated[
        Path | None, typer.Option(help="Resume from and snapshot to this directory.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker threads in this process.")] = 1,
    snapshot_seconds: Annotated[
        int, typer.Option(min=1, help="Epoch length: snapshot interval with recovery.")
    ] = 30,
    recovery_partitions: Annotated[
        int, typer.Option(min=1, help="Partitions created in a new recovery directory.")
    ] = 4,
    backfill: Annotated[
        bool, typer.Option(help="Stop at the end of the input topics instead of tailing.")
    ] = False,
) -> None:
    """Run the dataflow until stopped (or, with --backfill, to the end of the topics)."""
    # Imported here: bytewax and the flow cost ~0.3 s, which every other command would pay.
    from bytewax.recovery import RecoveryConfig
    from bytewax.run import cli_main

    from dataflows.attribution.flow import build

    if recovery_dir is not None:  # unchanged state segments are written once, beside it
        os.environ.setdefault("REFSTREAM_SEGMENT_DIR", str(recovery_dir / "segments"))
    flow = build(Settings(), tail=not backfill)
    interval = timedelta(seconds=snapshot_seconds)
    recovery = None
    if recovery_dir is not None:
        ensure_recovery_dir(recovery_dir, recovery_partitions)
        recovery = RecoveryConfig(str(recovery_dir), interval)  # type: ignore[no-untyped-call]
    cli_main(  # type: ignore[no-untyped-call]
        flow, workers_per_process=workers, epoch_interval=interval, recovery_config=recovery
    )
