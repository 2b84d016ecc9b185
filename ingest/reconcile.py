"""Reconciliation of missed Shopify webhooks (`refstream shopify reconcile`).

Shopify retries a failed webhook for about 4 hours and may deliver one a day late; it asks apps
to reconcile. This pages through the shop's orders updated since a watermark with the Admin
**REST** API, exactly as Shopify documents it:

- `GET /admin/api/2024-10/orders.json?status=any&updated_at_min=…&limit=250`, authenticated by
  `X-Shopify-Access-Token`; further pages by following the `Link: <…page_info=…>; rel="next"`
  URL as given (cursor pagination: a `page_info` request carries no other filter);
- each order's refunds come with it (the order resource's `refunds`);
- rate limits: `X-Shopify-Shop-Api-Call-Limit: used/size` on every answer (a leaky bucket that
  drains `size / 20` calls per second: 40 and 2/s, or 400 and 20/s on Plus); when fewer than
  `headroom` calls are free the client waits until they are. A 429 is waited out for its
  `Retry-After` seconds and the call repeated.

Each order and refund then takes the webhook's own path (`ingest.shopify.parse` and
`build_envelope`): the same topic, envelope and **event id**, which for orders and refunds is
derived from the content (`ingest.shopify.event_id`: shop + order id + `updated_at`, or shop +
refund id), so an order version that also came by webhook is one event to the dataflow's
dedup. An order with `cancelled_at` is sent as `orders/cancelled`, any other as
`orders/updated`; refunds as `refunds/create`.

The watermark (`shopify_reconcile_watermarks`) moves only after Kafka acknowledged every event
of the run, to the Admin API's own clock (`Date` of the run's first answer) minus an overlap,
never backwards. A failed run leaves it where it was; the next run sends the same events again
and the dedup drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
import psycopg

from ingest import shopify
from ingest.producer import EventProducer
from schemas import secretbox
from schemas.events.envelope import DeadLetter, EventEnvelope, Source
from schemas.settings import Settings
from schemas.topics import Topic, topic_for_shopify

API_VERSION = "2024-10"
MAX_PAGE_SIZE = 250
DEFAULT_OVERLAP = timedelta(minutes=5)
RECONCILED_HEADER = "refstream-reconciled"

Sleep = Callable[[float], Awaitable[None]]


class ReconcileError(RuntimeError):
    """The reconciliation cannot run or did not complete; the watermark did not move."""


class AdminApiError(ReconcileError):
    """The Admin API refused a call (or kept refusing it)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Shopify Admin API answered {status}: {detail[:300]}")
        self.status = status


def parse_call_limit(value: str | None) -> tuple[int, int] | None:
    """`"39/40"` → (39, 40); None when absent or not of that form."""
    if not value:
        return None
    used, sep, size = value.strip().partition("/")
    if not sep or not used.strip().isdigit() or not size.strip().isdigit():
        return None
    bucket = int(size)
    return (int(used), bucket) if bucket > 0 else None


def slowdown_seconds(used: int, size: int, headroom: int) -> float:
    """How long to wait so that `headroom` calls are free again in a bucket of `size` that
    drains `size / 20` calls per second (Shopify's REST leaky bucket)."""
    free = size - used
    if free >= headroom:
        return 0.0
    return (min(headroom, size) - free) / (size / 20)


def parse_retry_after(value: str | None, default: float = 2.0) -> float:
    """Shopify sends `Retry-After: 2.0` (seconds, possibly fractional)."""
    try:
        seconds = float(value) if value else default
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default


@dataclass(slots=True)
class CallStats:
    requests: int = 0
    pages: int = 0
    throttled: int = 0  # 429 answers waited out
    slowdowns: int = 0  # waits because the call-limit bucket was nearly full
    waited_seconds: float = 0.0
    waits: list[float] = field(default_factory=list)


class AdminApi:
    """The orders listing of one shop's Admin REST API (`async with AdminApi(...) as api`)."""

    def __init__(
        self,
        shop: str,
        token: str,
        *,
        base_url: str | None = None,
        page_size: int = MAX_PAGE_SIZE,
        headroom: int = 4,
        max_retries: int = 8,
        timeout: float = 30.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page size must be 1-{MAX_PAGE_SIZE}")
        self.shop = shop
        self.base_url = (base_url or f"https://{shop}").rstrip("/")
        self.page_size = page_size
        self.headroom = headroom
        self.max_retries = max_retries
        self.sleep = sleep
        self.stats = CallStats()
        self.server_time: datetime | None = None  # `Date` of the first answer
        self._client = httpx.AsyncClient(
            timeout=timeout,
            headers={"X-Shopify-Access-Token": token, "Accept": "application/json"},
        )

    async def __aenter__(self) -> AdminApi:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.aclose()

    async def _wait(self, seconds: float) -> None:
        self.stats.waited_seconds += seconds
        self.stats.waits.append(seconds)
        await self.sleep(seconds)

    async def _get(self, url: str, params: dict[str, str] | None) -> httpx.Response:
        for _attempt in range(self.max_retries + 1):
            response = await self._client.get(url, params=params)
            self.stats.requests += 1
            if self.server_time is None and "date" in response.headers:
                with contextlib.suppress(TypeError, ValueError):
                    self.server_time = parsedate_to_datetime(response.headers["date"])
            if response.status_code == 429:
                self.stats.throttled += 1
                await self._wait(parse_retry_after(response.headers.get("retry-after")))
                continue
            if response.status_code in (502, 503, 504):
                await self._wait(parse_retry_after(response.headers.get("retry-after")))
                continue
            if response.status_code != 200:
                raise AdminApiError(response.status_code, response.text)
            limit = parse_call_limit(response.headers.get("x-shopify-shop-api-call-limit"))
            if limit is not None:
                pause = slowdown_seconds(*limit, self.headroom)
                if pause > 0:
                    self.stats.slowdowns += 1
                    await self._wait(pause)
            return response
        raise AdminApiError(429, f"still refused after {self.max_retries} retries: {url}")

    async def order_pages(self, since: datetime) -> AsyncIterator[list[dict[str, Any]]]:
        """Every order updated at or after `since` (any status), one page at a time."""
        url: str | None = f"{self.base_url}/admin/api/{API_VERSION}/orders.json"
        params: dict[str, str] | None = {
            "status": "any",
            "updated_at_min": since.isoformat(),
            "limit": str(self.page_size),
        }
        while url is not None:
            response = await self._get(url, params)
            try:
                orders = orjson.loads(response.content)["orders"]
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                raise AdminApiError(200, f"not an orders page: {exc}") from exc
            if not isinstance(orders, list):
                raise AdminApiError(200, "`orders` is not a list")
            self.stats.pages += 1
            yield orders
            # The next page's URL carries `page_info` and the limit; it is followed as given.
            url, params = response.links.get("next", {}).get("url"), None


def _headers(topic: str, shop: str) -> shopify.ShopifyHeaders:
    """What a webhook delivery of `topic` would carry, minus the delivery ids (unknowable)."""
    kept = {
        "shopify-topic": topic,
        "shopify-shop-domain": shop,
        "shopify-api-version": API_VERSION,
        RECONCILED_HEADER: "true",
    }
    return shopify.ShopifyHeaders(
        hmac=None, topic=topic, shop_domain=shop, event_id=None, webhook_id=None,
        triggered_at=None, kept=kept,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outgoing:
    topic: Topic
    envelope: EventEnvelope
    value: bytes
    kind: str  # "order" | "refund" | "dead_letter"


def _outgoing(
    topic: str, raw: bytes, shop: str, tenant_id: str, received_at: datetime, kind: str
) -> Outgoing:
    """`raw` through the webhook's own path: parsed, enveloped (same event id), or, if the
    ingress would dead-letter it, dead-lettered the same way."""
    headers = _headers(topic, shop)
    try:
        body = shopify.parse(topic, raw)
    except shopify.UnreadableBody as exc:
        envelope = EventEnvelope.wrap(
            raw, event_id=headers.delivery_id(raw), source=Source.SHOPIFY, kind=topic,
            tenant_id=tenant_id, shop=shop, occurred_at=received_at, received_at=received_at,
            headers=headers.kept,
        )  # fmt: skip
        letter = DeadLetter(
            reason=str(exc), stage="reconcile", failed_at=received_at, envelope=envelope
        )
        return Outgoing(Topic.DEADLETTER, envelope, letter.to_bytes(), "dead_letter")
    envelope = shopify.build_envelope(raw, headers, body, tenant_id, received_at)
    return Outgoing(topic_for_shopify(topic), envelope, envelope.to_bytes(), kind)


def events_of_order(
    order: dict[str, Any], shop: str, tenant_id: str, received_at: datetime
) -> list[Outgoing]:
    """The order as a webhook of its current version (`orders/cancelled` if it is cancelled,
    else `orders/updated`), then each of its refunds as `refunds/create`."""
    topic = "orders/cancelled" if order.get("cancelled_at") else "orders/updated"
    out = [_outgoing(topic, orjson.dumps(order), shop, tenant_id, received_at, "order")]
    for refund in order.get("refunds") or []:
        if isinstance(refund, dict) and "order_id" not in refund and "id" in order:
            refund = {**refund, "order_id": order["id"]}
        raw = orjson.dumps(refund)
        out.append(_outgoing("refunds/create", raw, shop, tenant_id, received_at, "refund"))
    return out


# --- the watermark ---------------------------------------------------------------------------


def shop_state(settings: Settings, shop: str) -> tuple[str, datetime | None]:
    """(tenant id, stored watermark) of a registered shop; ReconcileError if unknown."""
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute(
            "SELECT s.tenant_id, w.watermark FROM shops s"
            " LEFT JOIN shopify_reconcile_watermarks w ON w.shop = s.domain"
            " WHERE s.domain = %s",
            (shop,),
        ).fetchone()
    if row is None:
        raise ReconcileError(f"shop {shop} is not registered (refstream shop add)")
    return row[0], row[1]


def stored_token(settings: Settings, shop: str) -> str | None:
    """The Admin API access token stored when the app was installed on `shop` through OAuth
    (`api.shopify`), opened with `REFSTREAM_SHOPIFY_TOKEN_KEY`; None if there is none (a
    custom-app shop, or the app was uninstalled). ReconcileError if it cannot be opened."""
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute(
            "SELECT access_token FROM shops WHERE domain = %s AND uninstalled_at IS NULL",
            (shop.strip().lower(),),
        ).fetchone()
    if row is None or row[0] is None:
        return None
    if settings.shopify_token_key is None:
        raise ReconcileError(f"{shop}'s stored token needs REFSTREAM_SHOPIFY_TOKEN_KEY to open")
    try:
        key = secretbox.load_key(settings.shopify_token_key.get_secret_value())
        return secretbox.open_sealed(key, bytes(row[0]), shop.strip().lower())
    except secretbox.SecretBoxError as exc:
        raise ReconcileError(f"{shop}'s stored token: {exc}") from exc


def stored_watermark(settings: Settings, shop: str) -> datetime | None:
    return shop_state(settings, shop)[1]


def advance_watermark(
    settings: Settings, shop: str, watermark: datetime, orders: int, refunds: int
) -> datetime:
    """Store `watermark` unless the stored one is later; returns the stored value."""
    with psycopg.connect(settings.postgres_url) as conn:
        row = conn.execute(
            "INSERT INTO shopify_reconcile_watermarks"
            " (shop, watermark, last_run_at, last_orders, last_refunds)"
            " VALUES (%s, %s, now(), %s, %s)"
            " ON CONFLICT (shop) DO UPDATE SET"
            " watermark = GREATEST(shopify_reconcile_watermarks.watermark, EXCLUDED.watermark),"
            " last_run_at = EXCLUDED.last_run_at, last_orders = EXCLUDED.last_orders,"
            " last_refunds = EXCLUDED.last_refunds"
            " RETURNING watermark",
            (shop, watermark, orders, refunds),
        ).fetchone()
    assert row is not None
    stored: datetime = row[0]
    return stored


# --- a run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReconcileResult:
    shop: str
    tenant_id: str
    since: datetime
    watermark: datetime
    orders: int
    refunds: int
    dead_lettered: int
    event_ids: tuple[str, ...]
    calls: CallStats


async def reconcile(
    settings: Settings,
    shop: str,
    *,
    token: str,
    since: datetime | None = None,
    base_url: str | None = None,
    page_size: int = MAX_PAGE_SIZE,
    overlap: timedelta = DEFAULT_OVERLAP,
    headroom: int = 4,
    sleep: Sleep = asyncio.sleep,
) -> ReconcileResult:
    """One reconciliation of `shop` from `since` (default: its stored watermark)."""
    shop = shop.strip().lower()
    try:
        tenant_id, stored = await asyncio.to_thread(shop_state, settings, shop)
    except psycopg.Error as exc:
        raise ReconcileError(f"PostgreSQL: {exc}") from exc
    start = since or stored
    if start is None:
        raise ReconcileError(f"no watermark stored for {shop}: give --since for the first run")
    if start.tzinfo is None:
        raise ReconcileError("--since needs a UTC offset (e.g. 2026-12-01T00:00:00Z)")
    started_at = datetime.now(UTC)
    producer = EventProducer(settings.kafka_bootstrap, settings.ingest_produce_timeout_seconds)
    counts = {"order": 0, "refund": 0, "dead_letter": 0}
    sent: list[str] = []
    try:
        async with AdminApi(
            shop, token, base_url=base_url, page_size=page_size, headroom=headroom, sleep=sleep
        ) as api:
            async for orders in api.order_pages(start):
                received_at = datetime.now(UTC)
                batch = [
                    item
                    for order in orders
                    for item in events_of_order(order, shop, tenant_id, received_at)
                ]
                # Every send waits for the broker's ack; one failure fails the run.
                await asyncio.gather(
                    *(producer.send(o.topic, o.envelope.key(), o.value) for o in batch)
                )
                for item in batch:
                    counts[item.kind] += 1
                    sent.append(item.envelope.event_id)
    except Exception as exc:
        raise ReconcileError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        await asyncio.to_thread(producer.close)
    # Everything up to the Admin API's clock at the first call was listed: later changes are
    # the next run's. The overlap covers writes in flight at that moment (dedup absorbs it).
    clock = api.server_time or started_at
    try:
        watermark = await asyncio.to_thread(
            advance_watermark, settings, shop, clock - overlap, counts["order"], counts["refund"]
        )
    except psycopg.Error as exc:  # the events are in Kafka; the next run repeats them
        raise ReconcileError(f"events sent, watermark not stored: PostgreSQL: {exc}") from exc
    return ReconcileResult(
        shop=shop, tenant_id=tenant_id, since=start, watermark=watermark, orders=counts["order"],
        refunds=counts["refund"], dead_lettered=counts["dead_letter"], event_ids=tuple(sent),
        calls=api.stats,
    )  # fmt: skip
