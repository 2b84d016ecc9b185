"""Chaos: the same realistic traffic, each run in a tenant of its own, with one fault injected
while it flows; afterwards every acknowledged event must be archived and the ledger, the
ClickHouse commission totals and the API's totals must equal the fault-free run's.

Faults (every component is its own process, see `harness.E2EStack`):
- `dataflow SIGKILL`: the Bytewax worker is killed mid-stream, twice, and restarted by
  `refstream up` from its recovery directory (snapshots every 5 s: it replays, at least once);
- `broker outage`: tansu is frozen (SIGSTOP) for 6 s and thawed (SIGCONT) while webhooks keep
  coming: the ingress answers 503 and the senders retry;
- `broker restart`: SIGTERM + `refstream up`, *before* the run's traffic (the previous runs are
  archived by then). tansu 0.6 keeps its log in memory here (its only durable engine, s3://,
  restarted each partition's offsets at 0 after a restart in our probe, overwriting the log), so
  a restart while acknowledged events wait in Kafka loses them: that is the broker's limit, not
  something the pipeline can make up for. What must hold is that the ingress and the dataflow
  work again afterwards without a restart of their own;
- `API restart`: SIGTERM + `refstream up` mid-traffic (the API is not on the data path; its
  totals must still equal the ledger afterwards);
- `webhooks x3, shuffled`: every webhook delivered three times, all in a random order (refunds
  and cancellations before their order, re-deliveries before first deliveries).

The table (printed) has one row per run and a `differences` column that must be 0: acknowledged
events missing from the archive + ledger entries missing or extra against the fault-free run
(an entry counts with the number of approvals the holds wrote for it: the paid Odoo invoices'
orders must have each entry approved exactly once, the others none) + agents whose ledger,
ClickHouse or API total differs from it.

`make chaos` runs a larger workload (CHAOS_ORDERS, default 400 there) and a run with every fault
at once; `make test` runs the same faults on 40 orders.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e import traffic
from tests.e2e.harness import (
    ROOT,
    Delivery,
    E2EStack,
    Sender,
    TenantSetup,
    analytics,
    api_ledger_totals,
    api_token,
    archived_ids,
    ledger,
    new_tenant,
    wait_for_registration,
    wait_until,
)
from tests.e2e.traffic import Line, Order

# It stops the machine's PostgreSQL and Redis, which every other test uses: `make test` runs it
# by itself, after the rest (see the Makefile).
pytestmark = pytest.mark.alone

AGENTS = ("ana", "bo", "chen", "dara")
PRODUCTS = (("SKU-CHAIR", "249.00"), ("SKU-DESK", "899.00"), ("SKU-LAMP", "59.90"),
            ("SKU-MAT", "34.50"))  # fmt: skip
ORDERS = int(os.environ.get("CHAOS_ORDERS", "40"))
FULL = os.environ.get("CHAOS_FULL") == "1"
QUIET_SECONDS = 5  # the dataflow writes a batch every second: 5 quiet seconds mean it is done


# --- the workload -------------------------------------------------------------------------------


def clicks_for(orders: int) -> list[str]:
    """Which agent's link each shopper clicks (they click before anyone buys)."""
    return [AGENTS[n % len(AGENTS)] for n in range(orders // 2 + len(AGENTS))]


def workload(tenant: TenantSetup, click_ids: list[str], orders: int) -> list[Delivery]:
    """Orders k = 0..orders-1 (ids base+k): 40 % cite a click, 20 % carry an agent's coupon,
    10 % both (coupon wins), 30 % neither; 1-3 lines, coupon orders 10 % off. Every 5th
    (k % 5 == 1) is partially refunded (1 unit of its first line), every 7th (k % 7 == 3, not
    refunded) cancelled, every 4th re-notified as `orders/paid`, every 6th gets a paid Odoo
    invoice."""
    at = datetime.now(UTC)
    later = at + timedelta(minutes=5)
    base = int(at.timestamp()) * 1000
    out: list[Delivery] = []
    for k in range(orders):
        kind = k % 10
        coupon = AGENTS[k % len(AGENTS)].upper() if kind in (4, 5, 6) else None
        cites = click_ids[(k * 7) % len(click_ids)] if kind in (0, 1, 2, 3, 6) else None
        lines = []
        for j in range(1 + k % 3):
            sku, price = PRODUCTS[(k + j) % len(PRODUCTS)]
            quantity = 1 + (k + j) % 3
            discount = (Decimal(price) * quantity / 10).quantize(Decimal("0.01")) if coupon else 0
            lines.append(Line(k * 10 + j, quantity, price, str(discount or "0.00"), sku))
        order = Order(base + k, tuple(lines), at, coupon=coupon, cites=cites)
        out.append(traffic.shopify(tenant, "orders/create", traffic.order_body(order), f"{k}-c"))
        if k % 4 == 0:
            body = traffic.order_body(order)
            out.append(traffic.shopify(tenant, "orders/paid", body, f"{k}-p"))
        if k % 5 == 1:
            refund = traffic.refund_body(order, base + k, {k * 10: 1}, later)
            out.append(traffic.shopify(tenant, "refunds/create", refund, f"{k}-r"))
        elif k % 7 == 3:
            body = traffic.cancel_body(order, later)
            out.append(traffic.shopify(tenant, "orders/cancelled", body, f"{k}-x"))
        if k % 6 == 0:
            invoice = traffic.invoice_paid_body(order, base + k, "100.00")
            out.append(traffic.odoo(tenant, invoice, f"{k}-i"))
    return out


# --- one run ------------------------------------------------------------------------------------

Fault = Callable[[E2EStack], None]
# order k, agent, line, kind, level, amount, approvals by the holds (paid Odoo invoices)
Entry = tuple[int, str, str, str, int, Decimal, int]


@dataclass
class Outcome:
    fault: str
    sent: int
    requests: int
    acked: int
    archived: int
    entries: Counter[Entry]
    ledger_totals: dict[str, Decimal]
    clickhouse_totals: dict[str, Decimal]
    api_total: tuple[int, Decimal]
    missing_in_archive: int
    seconds: float = 0.0  # the run's wall time, traffic to settled (not compared)


def run(
    e2e: E2EStack,
    name: str,
    faults: Sequence[Fault],
    *,
    triple: bool = False,
    before: Sequence[Fault] = (),
) -> Outcome:
    started = time.monotonic()
    tenant = new_tenant(e2e)
    for fault in before:
        fault(e2e)
    wait_for_registration(e2e, tenant)
    sender = Sender(e2e.ingest_url)
    if before:
        # The ingress's first writes after a broker restart can fail while it replaces its
        # producer (shoppers are redirected, the click is counted as unrecorded): a click on a
        # link no order cites, until one is recorded, keeps that out of the compared traffic.
        wait_until(
            "the ingress to record clicks again",
            lambda: (
                sender.referral_click(tenant.link("ana"), "Mozilla/5.0 (warm-up)")
                in sender.all_acked
            ),
            timeout=60,
            pause=0.2,
        )
    click_ids = [
        sender.referral_click(tenant.link(agent), f"Mozilla/5.0 (chaos shopper {n})")
        for n, agent in enumerate(clicks_for(ORDERS))
    ]
    deliveries = workload(tenant, click_ids, ORDERS)
    if triple:
        deliveries = deliveries * 3
        random.Random(7).shuffle(deliveries)
    sender.pace = 4.0 / len(deliveries)  # traffic flows for ~4 s, so faults land inside it
    worker = threading.Thread(target=sender.deliver_all, args=(deliveries,))
    worker.start()
    for n, fault in enumerate(faults, start=1):
        # Faults spread over the traffic: at 1/(n+1), 2/(n+1), … of the deliveries.
        wait_until("traffic to progress", lambda n=n: sender.progress >= n / (len(faults) + 1))
        fault(e2e)
    worker.join(timeout=300)
    assert not worker.is_alive(), "the senders never got every webhook acknowledged"
    sender.close()
    outcome = settle(e2e, tenant, name, sender)
    outcome.seconds = time.monotonic() - started
    return outcome


def settle(e2e: E2EStack, tenant: TenantSetup, name: str, sender: Sender) -> Outcome:
    """Wait until the pipeline is quiet: every acknowledged event archived (or 120 s), every
    order decided, and the ledger unchanged for `QUIET_SECONDS`; then read what it produced."""
    acked = sender.all_acked
    try:
        wait_until("the archive", lambda: acked <= archived_ids(e2e, tenant.tenant_id))
        wait_until(
            "every order decided",
            lambda: len(analytics(e2e, tenant.tenant_id)["conversions"]) >= ORDERS,
        )
    except AssertionError:
        pass  # reported as differences below
    quiet_since, count = time.monotonic(), -1
    while time.monotonic() - quiet_since < QUIET_SECONDS:
        now = hash(tuple(ledger(e2e, tenant.tenant_id)))  # entries and their approvals
        if now != count:
            quiet_since, count = time.monotonic(), now
        time.sleep(0.5)
    archived = archived_ids(e2e, tenant.tenant_id)
    entries = ledger(e2e, tenant.tenant_id)
    agents = {tenant.agent(a): a for a in AGENTS}
    base = min(int(e.order_id) for e in entries) if entries else 0
    base -= base % 1000  # order ids are base + k with base a multiple of 1000
    normalised: Counter[Entry] = Counter(
        (int(e.order_id) - base, agents[e.agent_id], e.line_item_id or "-", e.kind, e.level,
         e.amount, e.approvals)
        for e in entries
    )  # fmt: skip
    totals: dict[str, Decimal] = {}
    for e in entries:
        totals[agents[e.agent_id]] = totals.get(agents[e.agent_id], Decimal(0)) + e.amount
    commission = analytics(e2e, tenant.tenant_id)["commission"]
    api = api_ledger_totals(e2e, api_token(e2e, tenant))
    return Outcome(
        fault=name,
        sent=sum(sender.sent.values()),
        requests=sender.requests,
        acked=len(acked),
        archived=len(acked & archived),
        entries=normalised,
        ledger_totals=totals,
        clickhouse_totals={agents[a]: total for a, (total, _) in commission.items()},
        api_total=(sum(n for n, _ in api.values()), sum((a for _, a in api.values()), Decimal(0))),
        missing_in_archive=len(acked - archived),
    )


def differences(outcome: Outcome, baseline: Outcome) -> int:
    missing = baseline.entries - outcome.entries
    extra = outcome.entries - baseline.entries
    agents = set(baseline.ledger_totals) | set(outcome.ledger_totals)
    wrong_totals = sum(
        outcome.ledger_totals.get(a) != baseline.ledger_totals.get(a)
        or outcome.clickhouse_totals.get(a) != baseline.clickhouse_totals.get(a)
        for a in agents
    )
    ledger_sum = sum(outcome.ledger_totals.values(), Decimal(0))
    api_wrong = outcome.api_total != (sum(outcome.entries.values()), ledger_sum)
    return (
        outcome.missing_in_archive
        + sum(missing.values())
        + sum(extra.values())
        + wrong_totals
        + int(api_wrong)
    )


def table(outcomes: list[Outcome], baseline: Outcome) -> str:
    head = ("fault", "events sent", "HTTP requests", "acked", "archived", "ledger entries",
            "approved", "differences", "seconds")  # fmt: skip
    rows = [
        (o.fault, o.sent, o.requests, o.acked, o.archived, sum(o.entries.values()),
         sum(n for entry, n in o.entries.items() if entry[-1]), differences(o, baseline),
         f"{o.seconds:.0f}")
        for o in outcomes
    ]  # fmt: skip
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [
        "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
        for r in [head, *rows]
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


# --- faults -------------------------------------------------------------------------------------


def kill_dataflow(e2e: E2EStack) -> None:
    before = e2e.pid("dataflow")
    e2e.kill("dataflow")
    e2e.up()  # restarts only what is down: the dataflow, resuming from its recovery directory
    assert e2e.pid("dataflow") != before


def broker_outage(e2e: E2EStack) -> None:
    e2e.pause("kafka")  # the ingress answers 503 meanwhile; the senders retry
    try:
        time.sleep(6)
    finally:
        e2e.resume("kafka")


def restart_broker(e2e: E2EStack) -> None:
    """A real broker restart (SIGTERM, then `refstream up`), as an operator does it. With
    tansu's in-memory log this loses whatever Kafka holds, so it runs only between runs, once
    everything acknowledged before it is archived."""
    before = e2e.pid("kafka")
    e2e.stop("kafka")
    e2e.up()
    assert e2e.pid("kafka") != before


OUTAGE_SECONDS = 10


def clickhouse_outage(e2e: E2EStack) -> None:
    """The ClickHouse server stopped for 10 s mid-stream, then started again (`refstream up`):
    the dataflow's sink waits the outage out and writes the same batches afterwards."""
    e2e.stop("clickhouse")
    time.sleep(OUTAGE_SECONDS)
    e2e.up()


def _start_machine_servers() -> None:
    """Start PostgreSQL and Redis the way this machine runs them (`make deps`), not through
    `refstream up`: a server `up` starts counts as the stack's, and the stack's `down` at the
    end of the module would stop it under the rest of the session."""
    subprocess.run(["bash", str(ROOT / "deploy" / "deps.sh")], check=True, capture_output=True)


def postgres_outage(e2e: E2EStack) -> None:
    """The machine's PostgreSQL stopped (fast shutdown: every connection cut) for 10 s
    mid-stream, then started again."""
    cluster = sorted(Path("/etc/postgresql").glob("*"))[-1].name
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main", "stop",
                    "-m", "fast"], check=True, capture_output=True)  # fmt: skip
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        _start_machine_servers()
    e2e.up()  # nothing of the stack's is down: a no-op, as an operator would check


def redis_outage(e2e: E2EStack) -> None:
    """The machine's Redis shut down for 10 s mid-stream (its data is gone: no persistence),
    then started again. The ingress fails open meanwhile (`ingest/guards.py`)."""
    subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", "6379", "shutdown", "nosave"],
                   check=False, capture_output=True)  # fmt: skip
    try:
        time.sleep(OUTAGE_SECONDS)
    finally:
        _start_machine_servers()
    e2e.up()


def restart_api(e2e: E2EStack) -> None:
    before = e2e.pid("api")
    e2e.stop("api")
    e2e.up()
    assert e2e.pid("api") != before


# --- the suite ----------------------------------------------------------------------------------


# Nine runs take about 200 s. A run whose settling waits the full 120 s for the archive or the
# decisions is reported as differences, never cut short: one CI run of 2026-12-07 hit the former
# 300 s budget in its eighth run (cause not found; the reruns took 198-202 s), so each run now
# prints its time as it ends and the budget leaves room for such a wait.
@pytest.mark.timeout(600)
def test_faults_change_nothing(e2e_stack: E2EStack, capsys: pytest.CaptureFixture[str]) -> None:
    baseline = run(e2e_stack, "none (baseline)", [])
    assert baseline.missing_in_archive == 0
    assert sum(baseline.entries.values()) > 0
    assert any(entry[-1] == 1 for entry in baseline.entries), "paid invoices approve entries"
    runs: list[tuple[str, list[Fault], bool, list[Fault]]] = [
        ("dataflow SIGKILL x2 + restart", [kill_dataflow, kill_dataflow], False, []),
        ("broker outage 6 s (SIGSTOP/CONT)", [broker_outage], False, []),
        ("broker restart, before traffic", [], False, [restart_broker]),
        ("API restart", [restart_api], False, []),
        ("ClickHouse stopped 10 s", [clickhouse_outage], False, []),
        ("PostgreSQL stopped 10 s", [postgres_outage], False, []),
        ("Redis stopped 10 s", [redis_outage], False, []),
        ("webhooks x3, shuffled", [], True, []),
    ]
    if FULL:
        every: list[Fault] = [kill_dataflow, broker_outage, restart_api, kill_dataflow]
        runs.append(("all at once (x3 shuffled too)", every, True, []))
    outcomes = [baseline]
    for name, faults, triple, before in runs:
        outcomes.append(run(e2e_stack, name, faults, triple=triple, before=before))
        with capsys.disabled():
            sys.stdout.write(f"\nchaos: {name}: {outcomes[-1].seconds:.0f} s")
    report = table(outcomes, baseline)
    with capsys.disabled():
        sys.stdout.write(f"\n\nchaos: {ORDERS} orders per run\n{report}\n")
    assert [differences(o, baseline) for o in outcomes] == [0] * len(outcomes), report
