"""The whole stack as separate processes, and what the end-to-end and chaos tests do with it.

`E2EStack` runs `refstream up` on private ports with a private state directory (tansu, the chDB
ClickHouse server, ingress, API and the attribution dataflow are each their own process; the
machine's PostgreSQL and Redis are reused on a fresh database / the session's Redis index), and
can kill, pause and restart single components by PID. `Sender` delivers webhooks and clicks over
HTTP as Shopify, Odoo and shoppers would, retrying what was not acknowledged (2xx) the way
Shopify does, and records what was sent and acknowledged. The readers at the bottom return what
the pipeline produced: the PostgreSQL ledger, ClickHouse archive and analytics tables, and the
API's ledger totals.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
import httpx
import psycopg

from deploy import stack
from deploy.demo_company import DemoSetup, set_up
from ingest.cli import announce_change
from tests.api.factories import prove_claim
from tests.fixtures.postgres import PgTarget

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
JWT_SECRET = "e2e-" + "k" * 60  # shared by API restarts, so tokens outlive one API process


class E2EStack:
    """A private `refstream up` stack; every component is its own process."""

    def __init__(self, state_dir: Path, redis_url: str, database: PgTarget) -> None:
        self.env = {
            **os.environ,
            "COLUMNS": "200",
            "REFSTREAM_STATE_DIR": str(state_dir),
            "REFSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{stack.free_port()}",
            "REFSTREAM_CLICKHOUSE_URL": f"http://default:@127.0.0.1:{stack.free_port()}/refstream",
            **database.env(),
            "REFSTREAM_REDIS_URL": redis_url,
            "REFSTREAM_INGEST_PORT": str(stack.free_port()),
            "REFSTREAM_API_PORT": str(stack.free_port()),
            "REFSTREAM_INGEST_WORKERS": "1",
            "REFSTREAM_INGEST_PRODUCE_TIMEOUT_SECONDS": "2",
            "REFSTREAM_JWT_SECRET": JWT_SECRET,
        }
        self.paths = stack.StatePaths(state_dir)
        self.settings = database.settings(
            kafka_bootstrap=self.env["REFSTREAM_KAFKA_BOOTSTRAP"],
            clickhouse_url=self.env["REFSTREAM_CLICKHOUSE_URL"],
            redis_url=redis_url,
            ingest_port=int(self.env["REFSTREAM_INGEST_PORT"]),
            api_port=int(self.env["REFSTREAM_API_PORT"]),
            state_dir=state_dir,
        )

    @property
    def ingest_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    def refstream(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "deploy.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
        )

    def up(self) -> None:
        """`refstream up`: starts whatever is down (and only that)."""
        done = self.refstream("up")
        if done.returncode != 0:
            raise RuntimeError(f"refstream up failed:\n{done.stdout}\n{done.stderr}")

    def down(self) -> None:
        self.refstream("down")

    def pid(self, component: str) -> int:
        pid = stack.read_pid(self.paths, component)
        if pid is None or not stack.pid_alive(pid):
            raise RuntimeError(f"{component} is not running")
        return pid

    def kill(self, component: str) -> None:
        """SIGKILL the component (its whole process group) and wait until it is gone."""
        pid = self.pid(component)
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while stack.pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, component: str) -> None:
        """SIGTERM (then SIGKILL), waiting for the exit: a graceful restart's first half."""
        stack.stop_pid(self.pid(component))

    def pause(self, component: str) -> None:
        os.killpg(self.pid(component), signal.SIGSTOP)

    def resume(self, component: str) -> None:
        os.killpg(self.pid(component), signal.SIGCONT)

    def log_tail(self, component: str, lines: int = 30) -> str:
        text = self.paths.log(component).read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


# --- a tenant, set up the way a merchant would ------------------------------------------------


@dataclass(frozen=True)
class TenantSetup:
    demo: DemoSetup  # shop + secret, Odoo token, links and coupons of agents ana, bo, chen, dara

    @property
    def tenant_id(self) -> str:
        return self.demo.tenant_id

    @property
    def slug(self) -> str:
        return self.demo.slug

    @property
    def owner_email(self) -> str:
        return self.demo.owner.email

    def agent(self, name: str) -> str:
        return self.demo.agent(name).id

    def link(self, name: str) -> str:
        return self.demo.agent(name).link


def new_tenant(e2e: E2EStack) -> TenantSetup:
    """A company set up through the API as the demo's is (`deploy.demo_company.set_up`): a
    program with a 10 % base rule and 30 hold days, agents with links and coupons, a Shopify
    shop and an Odoo endpoint."""
    slug = f"e2e-{uuid.uuid4().hex[:10]}"
    demo = set_up(e2e.settings, slug=slug, owner_password=PASSWORD)
    # The shop is a custom-app claim until a webhook signed with its secret proves it; proven
    # here by the ingress's own proof code (the fixture path of tests/api/factories.py), as a
    # test delivery would be archived and counted.
    asyncio.run(prove_claim(e2e.settings.postgres_url, demo.shop, demo.secret))
    announce_change(e2e.settings)
    return TenantSetup(demo)


def wait_for_registration(e2e: E2EStack, tenant: TenantSetup, timeout: float = 20) -> None:
    """Until the ingress has reloaded the new shop (and its links, loaded with it): an unsigned
    webhook is then refused as `invalid_signature` instead of `unknown_shop`. Sends nothing
    that could be archived."""
    headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
               "X-Shopify-Shop-Domain": tenant.demo.shop, "X-Shopify-Hmac-Sha256": "x"}  # fmt: skip

    def known() -> bool:
        response = httpx.post(
            f"{e2e.ingest_url}/webhooks/shopify", content=b"{}", headers=headers, timeout=10
        )
        return bool(response.json().get("code") == "invalid_signature")

    wait_until("the ingress to know the new shop", known, timeout=timeout, pause=0.2)


def api_token(e2e: E2EStack, tenant: TenantSetup) -> str:
    response = httpx.post(
        f"{e2e.api_url}/v1/auth/login",
        json={"company": tenant.slug, "email": tenant.owner_email, "password": PASSWORD},
        timeout=30,
    )
    response.raise_for_status()
    token: str = response.json()["access_token"]
    return token


def api_ledger_totals(e2e: E2EStack, token: str) -> dict[tuple[str, str], tuple[int, Decimal]]:
    """`GET /v1/ledger` totals: (currency, status) → (entries, amount)."""
    response = httpx.get(
        f"{e2e.api_url}/v1/ledger",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    response.raise_for_status()
    return {
        (t["currency"], t["status"]): (int(t["count"]), Decimal(str(t["amount"])))
        for t in response.json()["totals"]
    }


# --- deliveries -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One HTTP request as its sender makes it. `stream` names what it carries (orders,
    refunds, erp, clicks); `key` identifies the event across re-deliveries."""

    stream: str
    key: str
    method: str
    path: str
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Sender:
    """Delivers over HTTP; a delivery not acknowledged (no 2xx, timeout, connection refused) is
    retried after `retry_pause` until `max_attempts`, as Shopify retries webhooks."""

    base_url: str
    retry_pause: float = 0.3
    max_attempts: int = 200
    requests: int = 0
    sent: Counter[str] = field(default_factory=Counter)  # distinct events per stream
    acked: dict[str, set[str]] = field(default_factory=dict)  # stream → acked event ids
    refused: Counter[int] = field(default_factory=Counter)  # non-2xx statuses seen
    pace: float = 0.0  # seconds between deliveries in `deliver_all`
    delivered: int = 0
    planned: int = 0

    def __post_init__(self) -> None:
        self._client = httpx.Client(base_url=self.base_url, timeout=10)
        self._seen: set[tuple[str, str]] = set()

    def close(self) -> None:
        self._client.close()

    def deliver(self, delivery: Delivery) -> str:
        """Send until acknowledged; returns the event id the ingress acknowledged."""
        if (delivery.stream, delivery.key) not in self._seen:
            self._seen.add((delivery.stream, delivery.key))
            self.sent[delivery.stream] += 1
        for _ in range(self.max_attempts):
            self.requests += 1
            try:
                response = self._client.request(
                    delivery.method, delivery.path, content=delivery.body or None,
                    headers=dict(delivery.headers),
                )  # fmt: skip
            except httpx.TransportError:
                self.refused[0] += 1
                time.sleep(self.retry_pause)
                continue
            event_id = self._acknowledged(delivery, response)
            if event_id is not None:
                self.acked.setdefault(delivery.stream, set()).add(event_id)
                return event_id
            self.refused[response.status_code] += 1
            time.sleep(self.retry_pause)
        raise RuntimeError(f"{delivery.stream} {delivery.key} never acknowledged")

    def deliver_all(self, deliveries: Sequence[Delivery]) -> None:
        self.planned += len(deliveries)
        for delivery in deliveries:
            self.deliver(delivery)
            self.delivered += 1
            time.sleep(self.pace)

    @property
    def progress(self) -> float:
        """Share of the planned deliveries acknowledged so far (0..1)."""
        return self.delivered / self.planned if self.planned else 0.0

    def _acknowledged(self, delivery: Delivery, response: httpx.Response) -> str | None:
        if response.status_code != 200:
            return None
        body = response.json()
        if body["status"] not in ("accepted", "duplicate"):
            raise AssertionError(f"{delivery.stream} {delivery.key}: {response.text}")
        event_id: str = body["event_id"]
        return event_id

    def referral_click(self, link_code: str, user_agent: str) -> str:
        """A shopper's click on an agent's link (`GET /r/{code}`): the click id the redirect
        carries. The shopper is redirected even when the broker did not take the click; the
        ingress counts that in its metrics, so an unrecorded click is not counted as acked."""
        lost_before = self.unrecorded_clicks()
        self.requests += 1
        response = self._client.get(f"/r/{link_code}", headers={"User-Agent": user_agent})
        assert response.status_code == 302, response.text
        click_id = parse_qs(urlsplit(response.headers["location"]).query)["rsclid"][0]
        self.sent["clicks"] += 1
        if self.unrecorded_clicks() == lost_before:
            self.acked.setdefault("clicks", set()).add(click_id)
        return click_id

    def unrecorded_clicks(self) -> float:
        """The ingress's `refstream_ingest_clicks_unrecorded_total`."""
        for line in self._client.get("/metrics").text.splitlines():
            if line.startswith("refstream_ingest_clicks_unrecorded_total "):
                return float(line.split()[1])
        return 0.0

    @property
    def all_acked(self) -> set[str]:
        return set().union(*self.acked.values()) if self.acked else set()


# --- what the pipeline produced -----------------------------------------------------------------


def clickhouse(e2e: E2EStack) -> Any:
    target = e2e.settings.clickhouse
    return clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )


def archived_ids(e2e: E2EStack, tenant_id: str) -> set[str]:
    client = clickhouse(e2e)
    try:
        rows = client.query(
            "SELECT event_id FROM raw_events FINAL WHERE tenant_id = {t:String}",
            parameters={"t": tenant_id},
        ).result_rows
    finally:
        client.close()
    return {row[0] for row in rows}


def archived_rows(e2e: E2EStack, tenant_id: str) -> int:
    """Rows in `raw_events` without FINAL: duplicates before a merge count here."""
    client = clickhouse(e2e)
    try:
        count: int = client.query(
            "SELECT count() FROM raw_events WHERE tenant_id = {t:String}",
            parameters={"t": tenant_id},
        ).result_rows[0][0]
    finally:
        client.close()
    return count


@dataclass(frozen=True)
class LedgerEntry:
    entry_id: str
    agent_id: str
    order_id: str
    line_item_id: str | None
    kind: str
    level: int
    amount: Decimal
    approvals: int  # `approved` status events written by the holds (must be 0 or 1)


def ledger(e2e: E2EStack, tenant_id: str) -> list[LedgerEntry]:
    with psycopg.connect(e2e.settings.postgres_url) as conn:
        rows = conn.execute(
            "SELECT e.entry_id, e.agent_id, e.order_id, e.line_item_id, e.kind, e.level, e.amount,"
            " (SELECT count(*) FROM ledger_status_events s WHERE s.entry_id = e.entry_id"
            "  AND s.actor = 'system:holds')"
            " FROM ledger_entries e WHERE e.tenant_id = %s ORDER BY e.entry_id",
            (tenant_id,),
        ).fetchall()
    return [LedgerEntry(*row) for row in rows]


def analytics(e2e: E2EStack, tenant_id: str) -> dict[str, Any]:
    """ClickHouse: conversions per order, commission per agent, clicks (all with FINAL)."""
    client = clickhouse(e2e)
    params = {"t": tenant_id}
    try:
        conversions = {
            order: (rule, agent, revenue)
            for order, rule, agent, revenue in client.query(
                "SELECT order_id, rule, agent_id, revenue FROM conversions FINAL"
                " WHERE tenant_id = {t:String}",
                parameters=params,
            ).result_rows
        }
        commission = {
            agent: (total, count)
            for agent, total, count in client.query(
                "SELECT agent_id, sum(amount), count() FROM commission_events FINAL"
                " WHERE tenant_id = {t:String} GROUP BY agent_id",
                parameters=params,
            ).result_rows
        }
        clicks = client.query(
            "SELECT count() FROM clicks FINAL WHERE tenant_id = {t:String}", parameters=params
        ).result_rows[0][0]
    finally:
        client.close()
    return {"conversions": conversions, "commission": commission, "clicks": clicks}


def wait_until(what: str, check: Any, timeout: float = 120, pause: float = 0.5) -> Any:
    """Poll `check()` until it returns a truthy value (returned); fail naming `what`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(pause)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
