"""The broker stops answering mid-traffic: 503 + Retry-After, and every 2xx is in Kafka after."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from deploy import migrations, stack
from deploy.demo import read_to_end
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from schemas.topics import Topic
from tests.fixtures.kafka import KafkaBroker
from tests.ingest.conftest import ClientFactory, Registered, shopify_headers


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    """A broker for this test alone: it gets frozen (SIGSTOP) and thawed (SIGCONT)."""
    paths = stack.StatePaths(tmp_path).ensure()
    port = stack.free_port()
    pid = stack.start_kafka("127.0.0.1", port, paths, tie_to_parent=True)
    yield KafkaBroker(bootstrap=f"127.0.0.1:{port}", pid=pid)
    with contextlib.suppress(ProcessLookupError):  # a test may have stopped it already
        os.kill(pid, signal.SIGCONT)
    stack.stop_pid(pid)


def _wait_until_stopped(pid: int, timeout: float = 5.0) -> None:
    """Until the kernel shows every thread of the process stopped: `kill` only queues SIGSTOP,
    and a broker thread still running may answer a write sent right after it (a request got 200
    there under load 9-11)."""

    def state(stat: str) -> str:
        return stat[stat.rindex(")") + 2]  # the state follows the parenthesised name

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tasks = Path(f"/proc/{pid}/task").glob("*/stat")
        if all(state(task.read_text()) in "Tt" for task in tasks):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} did not stop within {timeout} s")


async def test_unreachable_broker_gets_503_and_nothing_acknowledged_is_lost(
    make_client: ClientFactory, registered: Registered, own_broker: KafkaBroker,
    stack_settings: Settings,
) -> None:  # fmt: skip
    settings = stack_settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    migrations.create_topics(settings)
    acked: set[str] = set()
    outcomes: list[int] = []

    async def send(client: httpx.AsyncClient, n: int) -> None:
        body = orjson.dumps({"id": 50_000 + n, "created_at": "2026-11-01T10:00:00Z"})
        event_id = f"ev-outage-{uuid.uuid4().hex}"
        headers = shopify_headers(registered.shop, registered.secret, body, "orders/create",
                                  event_id)  # fmt: skip
        response = await client.post("/webhooks/shopify", content=body, headers=headers)
        outcomes.append(response.status_code)
        if response.status_code == 200:
            acked.add(event_id)
        else:
            assert response.status_code == 503, response.text
            assert response.json()["code"] == "broker_unavailable"
            assert int(response.headers["Retry-After"]) > 0

    async with make_client(
        kafka_bootstrap=own_broker.bootstrap, ingest_produce_timeout_seconds=2.0
    ) as client:
        # The first write waits for the idempotent producer's id (0.5-2 s on tansu, and again
        # after a timed-out write bumps the epoch): like Shopify, retry until writes flow.
        for n in range(20):
            await send(client, 100 + n)
            if outcomes[-3:] == [200, 200, 200]:
                break
        warmed_up = len(acked)
        outcomes.clear()
        for n in range(5):
            await send(client, n)
        os.kill(own_broker.pid, signal.SIGSTOP)
        _wait_until_stopped(own_broker.pid)
        try:
            for n in range(5, 8):
                await send(client, n)
        finally:
            os.kill(own_broker.pid, signal.SIGCONT)
        # Back up: the producer may need one more epoch bump, then writes flow again.
        for n in range(8, 30):
            await send(client, n)
            if outcomes[8:].count(200) == 5:
                break

    assert outcomes[:5] == [200] * 5
    assert outcomes[5:8] == [503] * 3
    assert outcomes[8:].count(200) == 5
    in_kafka = {
        EventEnvelope.from_bytes(m.value()).event_id
        for m in read_to_end(own_broker.bootstrap, Topic.ORDERS)
    }
    assert acked <= in_kafka
    assert len(acked) == warmed_up + 10


async def test_writes_flow_again_after_the_broker_restarts_without_its_state(
    make_client: ClientFactory, registered: Registered, own_broker: KafkaBroker,
    stack_settings: Settings, tmp_path: Path,
) -> None:  # fmt: skip
    # tansu keeps its log in memory: a restarted broker has forgotten the ingress's producer id
    # and answers its writes UNKNOWN_PRODUCER_ID, which librdkafka retries until they time out.
    settings = stack_settings.model_copy(update={"kafka_bootstrap": own_broker.bootstrap})
    migrations.create_topics(settings)
    acked: set[str] = set()

    async def send(client: httpx.AsyncClient, n: int) -> int:
        body = orjson.dumps({"id": 60_000 + n, "created_at": "2026-11-01T10:00:00Z"})
        event_id = f"ev-restart-{uuid.uuid4().hex}"
        headers = shopify_headers(registered.shop, registered.secret, body, "orders/create",
                                  event_id)  # fmt: skip
        response = await client.post("/webhooks/shopify", content=body, headers=headers)
        if response.status_code == 200:
            acked.add(event_id)
        return response.status_code

    async with make_client(
        kafka_bootstrap=own_broker.bootstrap, ingest_produce_timeout_seconds=1.5
    ) as client:
        for n in range(20):  # warm up: the first writes wait for the producer id
            if await send(client, n) == 200:
                break
        assert acked, "the ingress never wrote to the fresh broker"
        host, port = own_broker.bootstrap.split(":")
        stack.stop_pid(own_broker.pid)
        paths = stack.StatePaths(tmp_path / "restarted").ensure()
        restarted = stack.start_kafka(host, int(port), paths, tie_to_parent=True)
        try:
            migrations.create_topics(settings)
            acked.clear()
            outcomes = [await send(client, 100 + n) for n in range(12)]
            in_kafka = {
                EventEnvelope.from_bytes(m.value()).event_id
                for m in read_to_end(own_broker.bootstrap, Topic.ORDERS)
            }
        finally:
            stack.stop_pid(restarted)

    assert outcomes[-3:] == [200, 200, 200], outcomes
    assert set(outcomes) <= {200, 503}
    assert acked <= in_kafka
