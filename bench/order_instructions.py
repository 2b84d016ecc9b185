"""Instructions per order and per click in the flow's own code, counted by callgrind.

    .venv/bin/python -m bench.order_instructions [--clicks 5000] [--orders 500]

A wall-clock figure on this shared machine moves with the neighbours' load; an instruction
count does not. This runs `bench.order_path`'s driver (the flow's steps in process, as
`bench.engine` drives them: parse, clock, routing, click shards, the tenant, the ClickHouse rows,
each phase ending with the snapshot of the keys it touched) under `valgrind --tool=callgrind`
three times with `PYTHONHASHSEED=0`: start-up only, start-up and the clicks, start-up, the clicks
and the orders (with their refunds). The differences are the instructions of the clicks and of
the orders; divided by their counts they are comparable between two versions of the code (run it
in both checkouts). Prints figures; asserts nothing. Needs valgrind (Debian's package).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def _drive(phase: str, clicks: int, orders: int) -> None:
    """Run inside callgrind: build everything, then feed up to `phase` (none, clicks, orders)."""
    from bench.dataflow import Plan
    from bench.order_path import _engine, _feeder
    from dataflows.attribution.flow import tune_garbage_collector
    from tests.dataflows.builders import new_tenant

    tune_garbage_collector()
    plan = Plan(new_tenant(), clicks, orders, 0.1, datetime(2026, 11, 1, tzinfo=UTC))
    click_values = [plan.click_bytes(i)[1] for i in range(plan.clicks)]
    order_values = [value for _, _, value in plan.order_messages()]
    feed = _feeder(_engine(plan))
    if phase in ("clicks", "orders"):
        feed(click_values)
    if phase == "orders":
        feed(order_values)
    print(f"orders_and_refunds={len(order_values)}")


def _count(phase: str, clicks: int, orders: int) -> tuple[int, int]:
    """(instructions, order values fed) of one callgrind run of `_drive`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, "-m", "bench.order_instructions", "--drive", phase,
             "--clicks", str(clicks), "--orders", str(orders)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        totals = re.findall(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
        fed = re.search(r"orders_and_refunds=(\d+)", run.stdout)
        if not totals or fed is None:
            raise RuntimeError(f"callgrind printed no totals: {run.stderr[-2000:]}")
        return int(totals[-1]), int(fed.group(1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=5_000)
    parser.add_argument("--orders", type=int, default=500)
    parser.add_argument("--drive", choices=("none", "clicks", "orders"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        _drive(args.drive, args.clicks, args.orders)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 2
    base, _ = _count("none", args.clicks, args.orders)
    with_clicks, _ = _count("clicks", args.clicks, args.orders)
    with_orders, fed = _count("orders", args.clicks, args.orders)
    per_click = (with_clicks - base) / args.clicks
    per_order = (with_orders - with_clicks) / args.orders
    print(f"callgrind, PYTHONHASHSEED=0: {args.clicks:,} clicks, then {args.orders:,} orders "
          f"({fed:,} order and refund events)")  # fmt: skip
    print(f"  start-up and inputs built      {base:>15,} instructions")
    print(f"  per click                      {per_click:>15,.0f}")
    print(f"  per order (its refunds incl.)  {per_order:>15,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
