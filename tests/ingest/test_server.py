"""`refstream ingest serve`: the real uvicorn server, with one worker and with several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
import pytest

from deploy import stack
from ingest.clicks import CLICK_PARAM, ip_hash
from schemas.settings import Settings
from tests.ingest.conftest import Registered, shopify_headers
from tests.ingest.test_clicks import clicks_by_id


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def server(
    stack_settings: Settings, registered: Registered, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    port = stack.free_port()
    env = {
        **os.environ,
        "REFSTREAM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "REFSTREAM_POSTGRES_URL": stack_settings.postgres_url,
        "REFSTREAM_REDIS_URL": stack_settings.redis_url,
        "REFSTREAM_INGEST_PORT": str(port),
        "REFSTREAM_STATE_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "ingest", "serve", "--workers", str(request.param)],
        env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120  # two worker processes start on a loaded runner
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ingress exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    else:
        os.killpg(proc.pid, signal.SIGKILL)  # not left running (it was, after a timeout)
        proc.wait(timeout=30)
        pytest.fail("ingress did not become ready")
    yield base
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def test_workers_accept_webhooks_and_share_one_metrics_view(
    server: str, registered: Registered
) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        for n in range(12):
            body = orjson.dumps({"id": 70_000 + n, "created_at": "2026-11-02T08:00:00Z"})
            headers = shopify_headers(registered.shop, registered.secret, body, "orders/paid",
                                      f"ev-srv-{uuid.uuid4().hex}")  # fmt: skip
            response = client.post("/webhooks/shopify", content=body, headers=headers)
            assert response.status_code == 200, response.text
        bad = client.post("/webhooks/shopify", content=b"{}", headers={
            "Content-Type": "application/json", "X-Shopify-Shop-Domain": registered.shop,
            "X-Shopify-Hmac-Sha256": "AAAA", "X-Shopify-Topic": "orders/paid"})  # fmt: skip
        assert bad.status_code == 401
        lost = client.get("/r/no-such-link")
        assert lost.status_code == 404
        metrics = client.get("/metrics").text
    accepted = [
        line for line in metrics.splitlines()
        if line.startswith("refstream_ingest_requests_total{")
        and 'outcome="accepted"' in line and 'topic="orders/paid"' in line
    ]  # fmt: skip
    # Whichever worker answered /metrics, it reports the requests of all workers.
    assert sum(float(line.rsplit(" ", 1)[1]) for line in accepted) == 12
    unknown = [
        line for line in metrics.splitlines()
        if line.startswith("refstream_ingest_requests_total{") and "unknown_link" in line
    ]  # fmt: skip
    assert [float(line.rsplit(" ", 1)[1]) for line in unknown] == [1.0]


def test_a_forged_x_forwarded_for_does_not_change_the_click_address(
    server: str, registered: Registered, stack_settings: Settings
) -> None:
    """uvicorn on its own trusts X-Forwarded-For from local peers; `ingest serve` leaves the
    header to REFSTREAM_TRUSTED_PROXIES (empty here), so the click's IP is the peer's."""
    with httpx.Client(base_url=server, timeout=10) as client:
        response = client.get(
            f"/r/{registered.link_code}",
            headers={"X-Forwarded-For": "192.0.2.44", "User-Agent": "Mozilla/5.0"},
        )
    assert response.status_code == 302
    click_id = parse_qs(urlsplit(response.headers["location"]).query)[CLICK_PARAM][0]
    click = clicks_by_id(stack_settings)[click_id]
    assert click.ip_hash == ip_hash(Settings().click_ip_salt, "127.0.0.1")
