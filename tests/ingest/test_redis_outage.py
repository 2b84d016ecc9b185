"""With Redis unreachable the ingress fails open (`ingest/guards.py`): webhooks and clicks are
still written to the real broker and answered as usual, and every guard that could not run is
counted. Duplicates let through are the dataflow's to collapse (it deduplicates by event id)."""

from __future__ import annotations

import socket
from pathlib import Path

from ingest.metrics import REDIS_UNAVAILABLE
from schemas.settings import Settings
from schemas.topics import Topic, topic_for_shopify
from tests.ingest.conftest import ClientFactory, Registered
from tests.ingest.test_webhooks import envelopes, post_shopify


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


def _count(operation: str) -> float:
    return REDIS_UNAVAILABLE.labels(operation)._value.get()  # type: ignore[no-any-return]


async def test_webhooks_and_clicks_are_accepted_and_written_while_redis_is_down(
    make_client: ClientFactory, registered: Registered, shared_fixtures: Path,
    stack_settings: Settings,
) -> None:  # fmt: skip
    before = {op: _count(op) for op in ("admit", "remember", "first_click")}
    raw = (shared_fixtures / "shopify" / "orders_create.json").read_bytes()
    async with make_client(redis_url=f"redis://127.0.0.1:{_closed_port()}/0") as client:
        response = await post_shopify(client, registered, raw, "orders/create")
        browser = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64)"}
        click = await client.get(f"/r/{registered.link_code}", headers=browser)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "accepted"
    event_id = response.json()["event_id"]
    orders = envelopes(stack_settings, topic_for_shopify("orders/create"))
    assert [e.raw_body() for e in orders if e.event_id == event_id] == [raw]

    assert click.status_code in (302, 303, 307), click.text
    clicks = [e for e in envelopes(stack_settings, Topic.CLICKS)
              if e.tenant_id == registered.tenant_id]  # fmt: skip
    assert len(clicks) == 1
    for op in ("admit", "remember", "first_click"):
        assert _count(op) == before[op] + 1, op
