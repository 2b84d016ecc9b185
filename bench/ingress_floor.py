"""The floor of the ingress's design: a bare ASGI app that does only what a webhook or a click
must cost, for `bench.ingress` to measure refstream against in the same run.

No framework, no registry, no Redis, no metrics, no envelope: a webhook's body is read, its
Shopify HMAC checked (base64, constant time) and the raw body produced to Kafka with the
ingress's producer settings (`acks=all`, idempotence, lz4); the answer (200, the same JSON shape
as the ingress's) goes out after the broker's ack. `GET /r/{code}` produces a small click
record and answers 302 after the ack. Whatever refstream does beyond this is the price of its
guarantees and its code, which is the ratio the bench prints.

Run by the bench as `uvicorn bench.ingress_floor:app --workers 2` with `FLOOR_BOOTSTRAP`,
`FLOOR_SECRET`, `FLOOR_ORDERS_TOPIC` and `FLOOR_CLICKS_TOPIC` in the environment.

With `FLOOR_REDIS_URL` (`bench.ingress --floor-guards`) the floor also pays for the Redis
guards the issue requires of the ingress, with the ingress's own code (`ingest.guards` on its
pipelined connection, `ingest.resp`): a webhook is admitted (its rate window and whether its
delivery was seen: `INCR` and `EXISTS` in one round trip) and, after the ack, remembered (a
`SET` that is not waited for); a click asks whether it is its visitor's first on the link (one
round trip). The
ratio against that floor is what the rest of refstream's code costs beyond its guards.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
import secrets
import threading
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from ingest import clicks, guards
from ingest.producer import producer_config
from ingest.resp import Commands, commands_for

Scope = dict[str, Any]


class Floor:
    """One producer per worker, polled by a thread; `send` resolves on the broker's ack."""

    def __init__(self) -> None:
        self.secret = os.environ["FLOOR_SECRET"].encode()
        self.orders_topic = os.environ["FLOOR_ORDERS_TOPIC"]
        self.clicks_topic = os.environ["FLOOR_CLICKS_TOPIC"]
        self.producer = Producer(producer_config(os.environ["FLOOR_BOOTSTRAP"], 5.0))
        redis_url = os.environ.get("FLOOR_REDIS_URL")
        self.redis: Commands | None = commands_for(redis_url, 1.0) if redis_url else None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stopping.is_set():
            self.producer.poll(0.05)

    async def send(self, topic: str, key: bytes, value: bytes) -> bool:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(done.set_result, err is None)

        self.producer.produce(topic, value, key, on_delivery=on_delivery)
        return await done

    def close(self) -> None:
        self.producer.flush(5)
        self.stopping.set()
        self.thread.join(2)


def signature_ok(secret: bytes, raw: bytes, signature: bytes | None) -> bool:
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(hmac.new(secret, raw, hashlib.sha256).digest(), given)


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-length", str(len(body)).encode()), *headers,
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})


JSON = [(b"content-type", b"application/json")]
_floor: Floor | None = None


async def app(scope: Scope, receive: Any, send: Any) -> None:
    global _floor
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _floor = Floor()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if _floor is not None:
                    _floor.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    floor = _floor
    assert floor is not None
    path = scope["path"]
    if scope["method"] == "POST" and path == "/webhooks/shopify":
        chunks = []
        more = True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw = b"".join(chunks)
        headers = dict(scope["headers"])
        if not signature_ok(floor.secret, raw, headers.get(b"x-shopify-hmac-sha256")):
            await _answer(send, 401, b'{"code":"invalid_signature"}', JSON)
            return
        event_id = headers.get(b"x-shopify-event-id", b"")
        dedup = guards.dedup_key("shopify", "floor", event_id.decode())
        if floor.redis is not None:
            admission = await guards.admit(
                floor.redis, scope="floor", dedup=dedup, limit_per_second=1 << 30
            )
            if admission.duplicate:
                body = b'{"status":"duplicate","event_id":' + orjson.dumps(event_id.decode())
                await _answer(send, 200, body + b"}", JSON)
                return
        if not await floor.send(floor.orders_topic, event_id, raw):
            await _answer(send, 503, b'{"code":"broker_unavailable"}', [(b"retry-after", b"5")])
            return
        if floor.redis is not None:
            guards.remember(floor.redis, dedup, 86_400)
        body = b'{"status":"accepted","event_id":' + orjson.dumps(event_id.decode()) + b"}"
        await _answer(send, 200, body, JSON)
    elif scope["method"] == "GET" and path.startswith("/r/"):
        click_id = "clk_" + secrets.token_hex(16)
        if floor.redis is not None:  # the visitor by its address and agent, as the ingress's
            agent = dict(scope["headers"]).get(b"user-agent", b"").decode(errors="replace")
            peer = (scope.get("client") or (None, 0))[0]
            fingerprint = clicks.fingerprint(peer, agent or None, path[3:])
            await guards.first_click(floor.redis, fingerprint, 30, click_id)
        value = orjson.dumps({"event_id": click_id, "link_code": path[3:]})
        if not await floor.send(floor.clicks_topic, click_id.encode(), value):
            await _answer(send, 503, b'{"code":"broker_unavailable"}', [(b"retry-after", b"5")])
            return
        location = b"https://shop.example/?rsclid=" + click_id.encode()
        await _answer(send, 302, b"", [(b"location", location)])
    else:
        await _answer(send, 404, b'{"code":"not_found"}', JSON)
