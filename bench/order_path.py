"""Where an order's CPU time goes in the attribution flow's own code, in process (no servers).

    .venv/bin/python -m bench.order_path [--clicks 50000] [--orders 10000]

Feeds `bench.dataflow`'s deterministic clicks and then its orders (and refunds) through the same
steps the flow runs per item (`parse_value`, the clock, routing, the click shards and the
tenant's `AttributionLogic.on_item`, the book buckets' `BookBucket.on_item`, as `bench.engine`
drives them; the ClickHouse row
builders), first untimed by a profiler for the rates, then again under cProfile on a fresh
state for the split: microseconds per order in each named part (cumulative, so parts
that call each other overlap). Bytewax, Kafka and the sinks' I/O are not included: this is the
ceiling the Python work per event sets. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.dataflow import Plan
from bench.engine import Engine
from dataflows import vault
from dataflows.attribution.events import Event, event_from_envelope
from dataflows.attribution.flow import parse_value, tune_garbage_collector
from dataflows.attribution.local import builder
from dataflows.attribution.logic import AttributionDecision
from dataflows.attribution.wire import decode_click, decode_envelope
from dataflows.commission.logic import accrue
from dataflows.config import ConfigSnapshot, StaticConfig, TenantConfig, build_snapshot
from dataflows.stages.base import Tuning
from schemas.commission_rules import CommissionRuleSet
from schemas.compact import trusted
from schemas.conversion import Conversion
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope
from schemas.ledger import AttributionRule, CommissionAccrual
from tests.dataflows.builders import new_tenant, order, rules_body, snapshot

# Issue #19's target for an order's CPU in the flow's own code (refunds included).
ORDER_TARGET_US = 50.0

# (label, file suffix, function name) of the parts reported
PARTS = (
    ("parse: envelope, body, archive rows", "attribution/flow.py", "parse_value"),
    ("  of which envelope decoding (msgspec)", "attribution/wire.py", "decode_envelope"),
    ("  of which Shopify order → Conversion", "schemas/conversion.py", "conversion_from_shopify"),
    ("click shards: on_item (lookups)", "stages/clicks.py", "on_item"),
    ("tenant: on_item", "stages/tenant.py", "on_item"),
    ("  attribution decision", "attribution/logic.py", "attribute"),
    ("order books: on_item", "stages/books.py", "on_item"),
    ("  commission (accrue)", "commission/logic.py", "accrue"),
    ("  order book packing (pack_book)", "commission/codec.py", "pack_book"),
    ("  holds (_approve)", "stages/books.py", "_approve"),
    ("ClickHouse rows of the outputs", "attribution/flow.py", "_rows"),
)


def _snapshot(plan: Plan) -> ConfigSnapshot:
    t = plan.tenant
    return build_snapshot(
        [(t.tenant_id, t.program, 30, "last_click", True, 0, 30, "USD")],
        [(t.tenant_id, t.coupon.lower(), t.program, t.bob)],
        [(t.tenant_id, t.ana, t.boss, "ana@x.test"), (t.tenant_id, t.bob, None, None),
         (t.tenant_id, t.boss, None, None)],
        [(t.tenant_id, f"rule_{t.program}", 1, t.program,
          rules_body(program=t.program, overrides=["5"]))],
        tenant_rows=[(t.tenant_id, "USD")],
    )  # fmt: skip


def _engine(plan: Plan, tuning: Tuning | None = None) -> Engine:
    return Engine(StaticConfig(_snapshot(plan)), tuning or Tuning())


def _feeder(engine: Engine) -> Callable[[list[bytes]], None]:
    """Feed a phase's values, then snapshot the keys it touched, as bytewax does at an epoch's
    end: state pickled only at snapshots (changed order books) is paid for in the phase."""
    feed = engine.feeder()

    def phase(values: list[bytes]) -> None:
        feed(values)
        if engine.tuning.snapshots:
            engine.snapshot_touched()

    return phase


def _per_item_us(fn: Callable[[Any], object], items: list[Any]) -> float:
    """Best of three passes, µs per item."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1e6


def decode_split(clicks: list[bytes]) -> list[tuple[str, float]]:
    """The click's decoding, msgspec (the flow's path) against pydantic (the contract)."""
    envelopes = [EventEnvelope.from_bytes(raw) for raw in clicks]
    bodies = [e.raw_body() for e in envelopes]
    return [
        ("envelope: msgspec (flow)", _per_item_us(decode_envelope, clicks)),
        ("envelope: pydantic", _per_item_us(EventEnvelope.from_bytes, clicks)),
        ("click body: msgspec (flow)", _per_item_us(decode_click, bodies)),
        ("click body: pydantic", _per_item_us(ClickEvent.model_validate_json, bodies)),
        ("whole parse_value of a click", _per_item_us(parse_value, clicks)),
    ]


def _anas_order(plan: Plan) -> tuple[TenantConfig, CommissionRuleSet, AttributionDecision]:
    """The tenant's configuration, its rules and a decision crediting ana (the bench's orders
    as `AttributionLogic._accrue` sees one of hers)."""
    t = plan.tenant
    cfg = _snapshot(plan).tenant(t.tenant_id)
    rules = cfg.rules_for(t.program)
    assert rules is not None
    decision = AttributionDecision(
        rule=AttributionRule.LAST_CLICK, agent_id=t.ana, program_id=t.program, click_id=None,
        coupon_code=None, explanation="bench",
    )  # fmt: skip
    return cfg, rules, decision


def accrue_us(plan: Plan, orders: list[bytes]) -> float:
    """`accrue` alone, without a profiler: µs per order (best of 3 passes) on the bench's
    orders, each as one of ana's (an accrual and her manager's override) under the tenant's
    rules, as `AttributionLogic._accrue` calls it."""
    t = plan.tenant
    cfg, rules, decision = _anas_order(plan)
    chain = cfg.agent_chain(t.ana)
    conversions = [
        item.payload
        for value in orders
        for item in parse_value(value, archive=False)
        if isinstance(item, Event) and isinstance(item.payload, Conversion)
    ]

    def one(conversion: Conversion) -> object:
        return accrue(
            conversion, decision, rules, chain, period_volume=Decimal(0), is_new_customer=False,
            fx_rate=cfg.fx_rate(conversion.currency, conversion.occurred_at) or Decimal(1),
            rules_rate=cfg.rules_rate(rules, conversion),
        )  # fmt: skip

    return _per_item_us(one, conversions)


def model_costs(plan: Plan, orders: list[bytes]) -> list[tuple[str, float]]:
    """A ledger entry (the bench's first order's first accrual) made three ways: validated by
    pydantic, `model_construct`, and `trusted` (what `accrue` does): µs each, best of 3."""
    t = plan.tenant
    cfg, rules, decision = _anas_order(plan)
    conversion = next(
        item.payload
        for value in orders
        for item in parse_value(value, archive=False)
        if isinstance(item, Event) and isinstance(item.payload, Conversion)
    )
    entry = accrue(
        conversion, decision, rules, cfg.agent_chain(t.ana), period_volume=Decimal(0),
        is_new_customer=False,
    )[0]  # fmt: skip
    values = {name: getattr(entry, name) for name in entry.model_fields_set}
    runs = [values] * 20_000
    return [
        ("validated (pydantic)", _per_item_us(lambda v: CommissionAccrual(**v), runs)),
        ("model_construct", _per_item_us(lambda v: CommissionAccrual.model_construct(**v), runs)),
        ("trusted (the flow)", _per_item_us(lambda v: trusted(CommissionAccrual, **v), runs)),
    ]


def snapshot_costs(
    plan: Plan, clicks: list[bytes], orders: list[bytes], vault_dir: Path | None = None
) -> list[tuple[str, float, int, int]]:
    """The snapshot of every key an epoch touched (bytewax snapshots those: the tenant's click
    shards, the tenant and its book buckets), with every click and order book live: (label, ms,
    snapshot bytes, bytes written to the segment vault) when first taken, again with nothing
    changed (an idle epoch), and after an epoch's worth of new clicks and orders (busy). With
    `vault_dir`, snapshots name unchanged segments (`dataflows.vault`) as the flow's do with
    a recovery directory."""
    store = vault.configure(vault_dir)
    try:
        return _snapshot_costs(plan, clicks, orders, store)
    finally:
        vault.configure(None)


def _snapshot_costs(
    plan: Plan, clicks: list[bytes], orders: list[bytes], store: vault.Vault | None
) -> list[tuple[str, float, int, int]]:
    engine = _engine(plan)
    feed = engine.feeder()  # no snapshot of its own: the ones below are measured
    feed(clicks[:-1000])
    feed(orders[:-200])
    out = []
    busy = ("busy epoch (+1,000 clicks, +200 orders)", (clicks[-1000:], orders[-200:]))
    for label, fresh in (("first (every segment pickled)", None), ("idle epoch", None), busy):
        if fresh is not None:
            for values in fresh:
                feed(values)
        if label == "first (every segment pickled)":
            engine.touched.update(engine.shards, engine.tenants, engine.books)
        written = store.written_bytes if store is not None else 0
        started = time.perf_counter()
        size = engine.snapshot_touched()
        elapsed = (time.perf_counter() - started) * 1e3
        stored = store.written_bytes - written if store is not None else 0
        out.append((label, elapsed, size, stored))
    return out


def customer_snapshot(customers: int, vault_dir: Path) -> tuple[int, int, int]:
    """The tenant stage's snapshot after an epoch of 200 coupon orders, each of a customer new
    to it, with `customers` known before (first orders and bindings: `stages.tenant`): bytes
    without the segment vault, and with it (snapshot bytes, bytes written to the vault)."""
    config = StaticConfig(snapshot("t_customers", coupons={"ANA10": "agt_ana"}))
    local = builder(config, Tuning(), lambda: 0)(None)
    base = datetime(2026, 11, 1, tzinfo=UTC)

    def feed(first: int, count: int) -> None:
        for n in range(first, first + count):
            envelope = order("t_customers", 100_000 + n, at=base, coupon="ANA10", customer=n)
            event = event_from_envelope(envelope, envelope.to_bytes())
            assert event is not None
            local.on_item(event)

    feed(0, customers)
    local.tenant.snapshot()  # the epoch before: everything pickled once
    feed(customers, 200)
    plain = len(local.tenant.snapshot())
    store = vault.configure(vault_dir)
    try:
        local.tenant.snapshot()  # the vault takes the full segments once
        feed(customers + 200, 200)
        written = store.written_bytes
        vaulted = len(local.tenant.snapshot())
        return plain, vaulted, store.written_bytes - written
    finally:
        vault.configure(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clicks", type=int, default=50_000)
    parser.add_argument("--orders", type=int, default=10_000)
    args = parser.parse_args(argv)
    plan = Plan(new_tenant(), args.clicks, args.orders, 0.1, datetime(2026, 11, 1, tzinfo=UTC))
    clicks = [plan.click_bytes(i)[1] for i in range(plan.clicks)]
    orders = [value for _, _, value in plan.order_messages()]
    tune_garbage_collector()

    feed = _feeder(_engine(plan))
    started, cpu = time.perf_counter(), time.process_time()
    feed(clicks)
    click_seconds = time.perf_counter() - started
    click_cpu = time.process_time() - cpu
    started, cpu = time.perf_counter(), time.process_time()
    feed(orders)
    order_seconds = time.perf_counter() - started
    order_cpu = time.process_time() - cpu

    # The same orders in a run that never snapshots (replays): books kept unpickled.
    feed = _feeder(_engine(plan, Tuning(snapshots=False)))
    feed(clicks)
    started = time.perf_counter()
    feed(orders)
    unpickled_seconds = time.perf_counter() - started

    feed = _feeder(_engine(plan))
    feed(clicks)
    profile = cProfile.Profile()
    profile.enable()
    feed(orders)
    profile.disable()
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    per = 1e6 / args.orders

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.clicks:,} clicks, then {len(orders):,} orders and refunds, one tenant"
          f" (load average 1/5/15 min: {load}); each phase ends with the snapshot of the"
          " keys it touched, as an epoch does")  # fmt: skip
    print(f"  clicks:  {len(clicks) / click_seconds:10,.0f} per s  "
          f"{1e6 * click_seconds / len(clicks):6.1f} µs each,"
          f" {1e6 * click_cpu / len(clicks):6.1f} µs of CPU")  # fmt: skip
    print(f"  orders:  {len(orders) / order_seconds:10,.0f} per s  "
          f"{1e6 * order_seconds / args.orders:6.1f} µs per order (refunds included),"
          f" {1e6 * order_cpu / args.orders:6.1f} µs of CPU")  # fmt: skip
    print(f"  orders, no snapshots (replay): {1e6 * unpickled_seconds / args.orders:6.1f} µs per"
          " order (order books kept unpickled)")  # fmt: skip
    print("a click's decoding, µs each (best of 3 passes):")
    for label, us in decode_split(clicks[:20_000]):
        print(f"  {label:<42} {us:8.1f}")
    books = sum(1 for value in orders if b"orders/create" in value)
    print(f"snapshots of the touched keys, {len(clicks):,} live clicks, {books:,} order books"
          " (ms; MB of snapshots; MB written to the segment vault):")  # fmt: skip
    for label, ms, size, _ in snapshot_costs(plan, clicks, orders):
        print(f"  {label:<42} {ms:8.1f} ms {size / 1e6:8.1f} MB")
    with tempfile.TemporaryDirectory(prefix="refstream-vault-") as scratch:
        print("  the same with the segment vault (as `refstream dataflow run --recovery-dir`):")
        for label, ms, size, stored in snapshot_costs(plan, clicks, orders, Path(scratch)):
            print(f"  {label:<42} {ms:8.1f} ms {size / 1e6:8.1f} MB + {stored / 1e6:6.1f} MB")
    with tempfile.TemporaryDirectory(prefix="refstream-vault-") as scratch:
        customers = 20_000
        plain, vaulted, stored = customer_snapshot(customers, Path(scratch))
        print(f"the tenant's snapshot with {customers:,} customers known, after an epoch of 200"
              f" orders of new customers: {plain / 1e6:.2f} MB; with the segment vault"
              f" {vaulted / 1e6:.3f} MB + {stored / 1e6:.3f} MB")  # fmt: skip
    print(f"commission (accrue) alone, no profiler, best of 3 passes: "
          f"{accrue_us(plan, orders):.1f} µs per order")  # fmt: skip
    print("a ledger entry made from validated values, µs each (best of 3 passes):")
    for label, us in model_costs(plan, orders):
        print(f"  {label:<42} {us:8.1f}")
    per_order_cpu = 1e6 * order_cpu / args.orders
    verdict = "met" if per_order_cpu <= ORDER_TARGET_US else "MISSED"
    print(f"CPU per order in the flow's own code: {per_order_cpu:.1f} µs"
          f" (target ≤ {ORDER_TARGET_US:.0f} µs, issue #19: {verdict}); instructions, which do"
          " not move with the neighbours' load: `python -m bench.order_instructions`")  # fmt: skip
    print("cumulative µs per order under cProfile (the profiler adds its own overhead):")
    for label, suffix, name in PARTS:
        total = sum(
            row[3]
            for (path, _, func), row in stats.items()
            if func == name and path.endswith(suffix)
        )
        print(f"  {label:<42} {total * per:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
