"""HTTP endpoints of the ingress: Shopify and Odoo webhooks, referral redirects, pixel clicks.

Every refusal is a JSON problem body (`application/problem+json`) with a stable `code`:
415 unsupported_media_type, 413 body_too_large, 401 unknown_shop / invalid_signature /
unknown_endpoint, 403 origin_not_allowed / shop_uninstalled, 429 rate_limited, 503
broker_unavailable, 404 unknown_link / bad_landing_url / not_found, 405 method_not_allowed, 400
bad_request.
"""

from __future__ import annotations

import functools
import http.cookies
import re
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
import structlog
from fastapi import APIRouter, Request, Response
from pydantic import ValidationError
from starlette.requests import ClientDisconnect, cookie_parser
from starlette.types import Message, Receive

from ingest import claims, clicks, docs, guards, odoo, pixel, shopify
from ingest.metrics import (
    CLICKS_LOST,
    CLICKS_REDATED,
    DEAD_LETTERS,
    DEDUP_HITS,
    tally,
)
from ingest.producer import ProduceFailed
from ingest.registry import LinkRecord, ShopRecord
from schemas.events.click import PixelBatch, click_bytes
from schemas.events.envelope import (
    DeadLetter,
    EventEnvelope,
    Source,
    envelope_bytes,
    envelope_key,
)
from schemas.events.shopify import SHOPIFY_TOPICS
from schemas.ids import body_sha256, click_id_for_visitor, derived_id, random_id
from schemas.registry import REGISTRY_CHANGED_CHANNEL, erp_token_hash
from schemas.topics import Topic, topic_for_shopify
from schemas.urls import check_http_url

if TYPE_CHECKING:
    from ingest.app import Ingress

router = APIRouter()
log = structlog.get_logger("ingest")

PROBLEM_BASE = "https://refstream.dev/problems/"


class Refused(Exception):
    """A request we answer with a problem body."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def answer(self) -> Answer:
        body = {
            "type": PROBLEM_BASE + self.code.replace("_", "-"),
            "title": self.code.replace("_", " "),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        return Answer(
            self.status, orjson.dumps(body), "application/problem+json",
            tuple(self.headers.items()),
        )  # fmt: skip

    def response(self) -> Response:
        return self.answer().response()


# What an unexpected error answers, from the hot path (`ingest.hot`) and from FastAPI's error
# handler (`ingest.app.install_problem_handlers`): the body names no internals.
INTERNAL_ERROR = Refused(500, "internal_error", "internal error")


class Answer(NamedTuple):
    """An answer as plain values: the hot path (`ingest.hot`) writes it, the FastAPI routes
    wrap it in a `Response`. `headers` may repeat a name (two `Set-Cookie`). A named tuple:
    immutable (some are shared constants), and made in half the time of a frozen dataclass
    (0.23 against 0.51 µs, timeit), as the other values made on every hot request are."""

    status: int
    body: bytes = b""
    media_type: str | None = "application/json"
    headers: tuple[tuple[str, str], ...] = ()

    def response(self) -> Response:
        response = Response(self.body, status_code=self.status, media_type=self.media_type)
        for name, value in self.headers:
            response.headers.append(name, value)
        return response


def json_answer(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, orjson.dumps(body), "application/json", tuple((headers or {}).items()))


def json_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Response:
    return json_answer(status, body, headers).response()


def _ingress(request: Request) -> Ingress:
    ingress: Ingress = request.app.state.ingress
    return ingress


JSON_TYPES = frozenset({"application/json"})
# A browser's `sendBeacon(url, string)` and a CORS "simple" fetch send text/plain.
BROWSER_JSON_TYPES = frozenset({"application/json", "text/plain"})


# The body's chunks as they arrive (`Request.stream`, or the hot path's `ASGIBody`).
BodyStream = Callable[[], AsyncIterator[bytes]]


class ASGIBody:
    """The hot path's body: its ASGI `receive`. A `BodyStream` (calling it gives the chunks),
    which `read_json_body` reads message by message itself instead: no async generator made and
    stepped through per request."""

    __slots__ = ("receive",)

    def __init__(self, receive: Receive) -> None:
        self.receive = receive

    def __call__(self) -> AsyncIterator[bytes]:
        return _chunks(self.receive)


def _message_body(message: Message) -> tuple[bytes, bool]:
    """An ASGI request message's body and whether more follows; `ClientDisconnect` if the
    client went away."""
    if message["type"] == "http.disconnect":
        raise ClientDisconnect
    return message.get("body", b""), message.get("more_body", False)


async def _chunks(receive: Receive) -> AsyncIterator[bytes]:
    more = True
    while more:
        body, more = _message_body(await receive())
        if body:
            yield body


async def read_json_body(
    headers: Mapping[str, str], stream: BodyStream, limit: int,
    accepted: frozenset[str] = JSON_TYPES,
) -> bytes:  # fmt: skip
    """The body, refused 415 for another Content-Type, 413 beyond `limit` (declared or sent).
    `headers` answers lower-case names (Starlette's `Headers`, or the hot path's dict)."""
    content_type = headers.get("content-type", "")
    # (An exact accepted type needs no splitting, stripping or lower-casing.)
    if content_type not in accepted and content_type.split(";")[0].strip().lower() not in accepted:
        raise Refused(
            415, "unsupported_media_type", "Content-Type must be " + " or ".join(sorted(accepted))
        )
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Refused(400, "bad_request", "invalid Content-Length")
        if int(declared) > limit:
            raise Refused(413, "body_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    if type(stream) is ASGIBody:  # the hot path: its messages read here, as `_chunks` reads them
        receive, more = stream.receive, True
        while more:
            chunk, more = _message_body(await receive())
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise Refused(413, "body_too_large", f"body exceeds {limit} bytes")
                chunks.append(chunk)
    else:
        async for chunk in stream():
            size += len(chunk)
            if size > limit:
                raise Refused(413, "body_too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def _read_json_body(
    request: Request, limit: int, accepted: frozenset[str] = JSON_TYPES
) -> bytes:
    return await read_json_body(request.headers, request.stream, limit, accepted)


async def _produce(ingress: Ingress, topic: Topic, key: bytes, value: bytes) -> None:
    try:
        seconds = await ingress.producer.send(topic, key, value)
    except ProduceFailed as exc:
        log.warning("ingest.produce_failed", topic=str(topic), error=str(exc))
        raise Refused(
            503, "broker_unavailable", "event not stored, retry later", {"Retry-After": "5"}
        ) from exc
    tally.produced(str(topic), seconds)


async def _dead_letter(
    ingress: Ingress, envelope: EventEnvelope, reason: str, received_at: datetime
) -> None:
    letter = DeadLetter(reason=reason, stage="ingress", failed_at=received_at, envelope=envelope)
    await _produce(ingress, Topic.DEADLETTER, envelope.key(), letter.to_bytes())
    DEAD_LETTERS.labels(envelope.source.value).inc()
    log.info("ingest.dead_lettered", event_id=envelope.event_id, reason=reason)


# A request counted by endpoint, topic and outcome: the tally's own method (no call between).
_count = tally.request


# --- Shopify -------------------------------------------------------------------------------


@router.post("/webhooks/shopify", summary="Shopify webhook (HMAC-verified)", **docs.SHOPIFY)
async def shopify_webhook(request: Request) -> Response:
    """Served by `ingest.hot` (plain ASGI) in the running app; this route states the endpoint
    in the OpenAPI document and serves an app built without the hot path."""
    answer = await shopify_delivery(_ingress(request), request.headers, request.stream)
    return answer.response()


async def shopify_delivery(
    ingress: Ingress, request_headers: Mapping[str, str], stream: BodyStream
) -> Answer:
    """One Shopify delivery, answered: `request_headers` answers lower-case names. (One
    coroutine: the delivery's refusals are caught here, not around a second one, whose frame
    every await of the delivery resumed.)"""
    headers = shopify.ShopifyHeaders.read(request_headers, lower_case_names=True)
    try:
        settings = ingress.settings
        raw = await read_json_body(request_headers, stream, settings.ingest_max_body_bytes)
        shop = await ingress.registry.shop(headers.shop_domain) if headers.shop_domain else None
        if shop is None:
            shop = await _proven_claim(ingress, headers, raw)
            if shop is None:
                raise Refused(401, "unknown_shop", "shop is not registered")
        elif not shopify.verify(raw, headers.hmac, shop.secrets):
            raise Refused(401, "invalid_signature", "HMAC signature does not match")
        if headers.topic == "app/uninstalled":
            await _uninstalled(ingress, shop)
        elif shop.uninstalled:
            raise Refused(
                403, "shop_uninstalled",
                "the refstream app was uninstalled from this shop: its webhooks are not accepted "
                "until it is installed again",
            )  # fmt: skip

        delivery = headers.delivery_id(raw)
        dedup = guards.dedup_key("shopify", shop.domain, delivery)
        admission = await guards.admit(
            ingress.guards,
            scope=f"shop:{shop.domain}",
            dedup=dedup,
            limit_per_second=settings.ingest_rate_limit_per_shop,
        )
        topic_label = headers.topic if headers.topic in SHOPIFY_TOPICS else "other"
        if admission.over_limit:
            raise Refused(429, "rate_limited", "too many webhooks for this shop",
                          {"Retry-After": str(admission.retry_after)})  # fmt: skip
        if admission.duplicate:
            DEDUP_HITS.labels("shopify").inc()
            _count("shopify", topic_label, "duplicate")
            return json_answer(200, {"status": "duplicate", "event_id": _event_id(headers, raw)})

        received_at = datetime.now(UTC)
        topic = headers.topic or ""
        try:
            body, body_is_json = shopify.read(topic, raw)
        except shopify.UnreadableBody as exc:
            envelope = EventEnvelope.wrap(
                raw, event_id=delivery, source=Source.SHOPIFY, kind=headers.topic or "unknown",
                tenant_id=shop.tenant_id, shop=shop.domain, occurred_at=received_at,
                received_at=received_at, headers=headers.kept,
            )  # fmt: skip
            await _dead_letter(ingress, envelope, str(exc), received_at)
            guards.remember(ingress.guards, dedup, settings.ingest_dedup_ttl_seconds)
            _count("shopify", topic_label, "dead_lettered")
            return json_answer(200, {"status": "dead_lettered", "event_id": delivery})

        key, value, event_id = shopify.envelope_parts(
            raw, headers, body, shop.tenant_id, received_at, body_is_json=body_is_json
        )
        await _produce(ingress, topic_for_shopify(topic), key, value)
        guards.remember(ingress.guards, dedup, settings.ingest_dedup_ttl_seconds)
        _count("shopify", topic_label, "accepted")
        return Answer(200, b'{"status":"accepted","event_id":' + orjson.dumps(event_id) + b"}")
    except Refused as refused:
        topic = headers.topic or "-"
        _count("shopify", topic if topic in SHOPIFY_TOPICS else "other", refused.code)
        log.info("ingest.refused", source="shopify", code=refused.code, detail=refused.detail)
        return refused.answer()


async def _announce(ingress: Ingress) -> None:
    """Reload this worker's registrations now and tell the other workers to."""
    await ingress.registry.reload()
    try:
        await ingress.redis.publish(REGISTRY_CHANGED_CHANNEL, b"changed")
    except Exception as exc:  # their periodic reload is the safety net
        log.warning("ingest.announce_failed", error=str(exc))


async def _proven_claim(
    ingress: Ingress, headers: shopify.ShopifyHeaders, raw: bytes
) -> ShopRecord | None:
    """The shop a pending custom-app claim of the delivery's domain becomes, if the delivery is
    signed with that claim's secret (`ingest.claims`); None otherwise (no claim says so)."""
    if not headers.shop_domain:
        return None
    pending = await ingress.registry.claims(headers.shop_domain)
    claim = claims.proven_claim(raw, headers.hmac, pending)
    if claim is None:
        return None
    promoted = await claims.promote(ingress.settings.postgres_url, claim)
    await _announce(ingress)
    shop = await ingress.registry.shop(claim.domain)
    if not promoted or shop is None or shop.tenant_id != claim.tenant_id:
        return None
    log.info("ingest.claim_proven", shop=claim.domain, tenant_id=claim.tenant_id)
    return shop


async def _uninstalled(ingress: Ingress, shop: ShopRecord) -> None:
    """`app/uninstalled` (authenticated): the token goes, and with it the shop's intake."""
    if await claims.uninstall(ingress.settings.postgres_url, shop.domain, shop.tenant_id):
        log.info("ingest.shop_uninstalled", shop=shop.domain, tenant_id=shop.tenant_id)
        await _announce(ingress)


def _event_id(headers: shopify.ShopifyHeaders, raw: bytes) -> str:
    """The id the first delivery was answered with: the envelope's (content-derived for orders
    and refunds), or the delivery id if the body was dead-lettered."""
    try:
        return shopify.event_id(headers, shopify.parse(headers.topic or "", raw), raw)
    except shopify.UnreadableBody:
        return headers.delivery_id(raw)


# --- Odoo ----------------------------------------------------------------------------------


@router.post("/webhooks/odoo/{token}", summary="Odoo webhook (token in the URL)", **docs.ODOO)
async def odoo_webhook(token: str, request: Request) -> Response:
    try:
        return await _odoo(token, request)
    except Refused as refused:
        _count("odoo", "-", refused.code)
        log.info("ingest.refused", source="odoo", code=refused.code, detail=refused.detail)
        return refused.response()


async def _odoo(token: str, request: Request) -> Response:
    ingress = _ingress(request)
    settings = ingress.settings
    tenant_id = await ingress.registry.erp_tenant(erp_token_hash(token))
    if tenant_id is None:
        raise Refused(401, "unknown_endpoint", "unknown webhook token")
    raw = await _read_json_body(request, settings.ingest_max_body_bytes)
    received_at = datetime.now(UTC)
    try:
        body = odoo.parse(raw)
    except odoo.UnreadableOdooBody as exc:
        delivery = derived_id("evt", tenant_id, "odoo-unreadable", body_sha256(raw))
        envelope = EventEnvelope.wrap(
            raw, event_id=delivery, source=Source.ODOO, kind="unknown", tenant_id=tenant_id,
            occurred_at=received_at, received_at=received_at,
        )  # fmt: skip
        await _dead_letter(ingress, envelope, str(exc), received_at)
        _count("odoo", "-", "dead_lettered")
        return json_response(200, {"status": "dead_lettered", "event_id": delivery})

    delivery = odoo.delivery_id(tenant_id, body, raw)
    dedup = guards.dedup_key("odoo", tenant_id, delivery)
    admission = await guards.admit(
        ingress.guards,
        scope=f"odoo:{tenant_id}",
        dedup=dedup,
        limit_per_second=settings.ingest_rate_limit_per_shop,
    )
    if admission.over_limit:
        raise Refused(429, "rate_limited", "too many webhooks for this endpoint",
                      {"Retry-After": str(admission.retry_after)})  # fmt: skip
    if admission.duplicate:
        DEDUP_HITS.labels("odoo").inc()
        _count("odoo", body.model, "duplicate")
        return json_response(200, {"status": "duplicate", "event_id": delivery})
    envelope = odoo.build_envelope(raw, body, tenant_id, received_at)
    await _produce(ingress, Topic.ERP, envelope.key(), envelope.to_bytes())
    guards.remember(ingress.guards, dedup, settings.ingest_dedup_ttl_seconds)
    _count("odoo", body.model, "accepted")
    return json_response(200, {"status": "accepted", "event_id": delivery})


# --- clicks --------------------------------------------------------------------------------


class RecordedClick(NamedTuple):
    """A click judged and serialised for Kafka (`key`, `value`: its envelope)."""

    key: bytes
    value: bytes
    is_bot: bool
    is_duplicate: bool
    relay: str | None  # what became of a relay's forwarded headers (None: none sent)


async def _record_click(
    ingress: Ingress,
    link: LinkRecord,
    relay: clicks.RelayHeaders,
    *,
    peer_ip: str | None,
    user_agent: str | None,
    click_id: str,
    occurred_at: datetime,
    visitor_id: str | None,
    dedup_visitor: str | None,
    landing_url: str | None,
    referrer: str | None,
    source: Source,
    shop: str | None = None,
) -> RecordedClick:
    """The click judged by its program's policy (bots, relay, duplicates), wrapped for Kafka.
    `dedup_visitor` is the visitor id the client sent (None: judge duplicates by IP+UA)."""
    settings = ingress.settings
    if relay.user_agent is None and relay.ip is None:
        # Nothing forwarded (nearly every click): the request's own, as `clicks.shopper` says.
        shopper_agent, shopper_ip, relayed = user_agent, peer_ip, None
    else:
        shopper_agent, shopper_ip, relayed = clicks.shopper(
            link.policy, relay, peer_ip=peer_ip, user_agent=user_agent
        )
    ip_digest = clicks.ip_hash(settings.click_ip_salt, shopper_ip)
    first = await guards.first_click(
        ingress.guards,
        clicks.fingerprint(ip_digest, shopper_agent, link.code, dedup_visitor),
        settings.click_duplicate_window_seconds,
        click_id,
        # A visitor id minted now: the browser's next click carries it and is judged by it.
        also=clicks.fingerprint(None, shopper_agent, link.code, visitor_id)
        if visitor_id and not dedup_visitor
        else None,
    )
    is_bot = clicks.is_bot(shopper_agent, link.policy)
    click = click_bytes(
        click_id=click_id,
        tenant_id=link.tenant_id,
        link_code=link.code,
        occurred_at=occurred_at,
        visitor_id=visitor_id,
        program_id=link.program_id,
        agent_id=link.agent_id,
        landing_url=landing_url,
        referrer=referrer,
        shop=shop,
        user_agent=shopper_agent[:500] if shopper_agent else None,
        ip_hash=ip_digest,
        is_bot=is_bot,
        is_duplicate=not first,
    )
    value = envelope_bytes(
        click,
        event_id=click_id,
        source=source,
        kind="click",
        tenant_id=link.tenant_id,
        shop=shop,
        entity_id=click_id,
        occurred_at=occurred_at,
        received_at=datetime.now(UTC),
        body_is_json=True,  # orjson wrote it
    )
    key = envelope_key(link.tenant_id, click_id, click_id)
    return RecordedClick(key, value, is_bot, not first, relayed)


def _relay_headers(headers: Mapping[str, str]) -> clicks.RelayHeaders:
    try:
        return clicks.RelayHeaders.read(headers)
    except clicks.BadRelayHeaders as exc:
        raise Refused(400, "bad_request", str(exc)) from exc


@router.get("/r/{link_code}", summary="Referral link: record the click, redirect", **docs.REDIRECT)
async def referral_redirect(link_code: str, request: Request) -> Response:
    """Served by `ingest.hot` (plain ASGI) in the running app; this route states the endpoint
    in the OpenAPI document and serves an app built without the hot path."""
    peer = request.client.host if request.client else None
    return (await redirect(_ingress(request), link_code, request.headers, peer)).response()


async def redirect(
    ingress: Ingress, link_code: str, headers: Mapping[str, str], peer_ip: str | None
) -> Answer:
    """A referral click: recorded (after the broker's ack) and answered 302 to the landing
    page; the shopper is redirected even when the broker does not answer. `headers` answers
    lower-case names."""
    link = await ingress.registry.link(link_code)
    if link is None:
        _count("redirect", "click", "unknown_link")
        return Refused(404, "unknown_link", "no such referral link").answer()
    problem = _landing_url_problem(link.landing_url)
    if problem is not None:
        # Stored before the API validated URLs (or written past it): the shopper gets a clear
        # answer, the operator a log line and a counter, and no click is recorded.
        _count("redirect", "click", "bad_landing_url")
        log.warning("ingest.bad_landing_url", link_code=link.code, error=problem)
        return Refused(
            404, "bad_landing_url", "this referral link's landing URL is not a valid http(s) URL"
        ).answer()
    try:
        relay = _relay_headers(headers)
    except Refused as refused:
        _count("redirect", "click", refused.code)
        return refused.answer()
    now = datetime.now(UTC)
    # Only a visitor id the browser sent back identifies a visitor; a new one is unique anyway.
    cookie = headers.get("cookie")
    returning = (cookie_parser(cookie).get(clicks.VISITOR_COOKIE) if cookie else None) or None
    # Random bytes read in bulk (`clicks.RandomChunks`): no getrandom system call per id.
    visitor_id = returning or clicks.new_visitor_id()
    click_id = clicks.new_click_id(visitor_id)  # files it with the visitor's clicks
    recorded = await _record_click(
        ingress, link, relay, peer_ip=peer_ip, user_agent=headers.get("user-agent"),
        click_id=click_id, occurred_at=now, visitor_id=visitor_id, dedup_visitor=returning,
        landing_url=link.landing_url, referrer=headers.get("referer"), source=Source.CLICK,
    )  # fmt: skip
    try:
        await _produce(ingress, Topic.CLICKS, recorded.key, recorded.value)
        _count("redirect", "click", "accepted")
    except Refused:
        # The shopper still reaches the shop; the unrecorded click is counted, not hidden.
        CLICKS_LOST.inc()
        _count("redirect", "click", "unrecorded")
    max_age = ingress.settings.click_cookie_max_age_days * 86400
    return Answer(302, b"", None, (
        ("location", clicks.redirect_url(link.landing_url, click_id)),
        ("cache-control", "no-store"),
        ("set-cookie", _cookie(clicks.VISITOR_COOKIE, visitor_id, max_age)),
        ("set-cookie", _cookie(clicks.CLICK_COOKIE, click_id, max_age)),
    ))  # fmt: skip


@functools.lru_cache(maxsize=4096)
def _landing_url_problem(url: str) -> str | None:
    """Why `check_http_url` refuses a landing URL (None: it does not), judged once per URL."""
    try:
        check_http_url(url)
    except ValueError as exc:
        return str(exc)
    return None


_PLAIN_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]+")


def _cookie(name: str, value: str, max_age: int) -> str:
    """The `Set-Cookie` value Starlette's `set_cookie(httponly, samesite=lax)` writes."""
    if _PLAIN_COOKIE_VALUE.fullmatch(value):
        return f"{name}={value}{_cookie_attributes(name, max_age)}"
    return _simple_cookie(name, value, max_age)


def _simple_cookie(name: str, value: str, max_age: int) -> str:
    cookie: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    cookie[name] = value
    cookie[name]["max-age"] = max_age
    cookie[name]["path"] = "/"
    cookie[name]["httponly"] = True
    cookie[name]["samesite"] = "lax"
    return cookie.output(header="").strip()


@functools.cache
def _cookie_attributes(name: str, max_age: int) -> str:
    """What follows `name=value` (the same for every plain value): computed once."""
    return _simple_cookie(name, "v", max_age).removeprefix(f"{name}=v")


async def _storefront_origin(ingress: Ingress, request: Request) -> tuple[str, ShopRecord] | None:
    """The request's `Origin` and its shop when a browser sent one from a registered shop's
    storefront; None without one (a server-side caller); `Refused` 403 `origin_not_allowed` for
    any other origin (no CORS headers: the browser blocks the answer, and nothing is recorded)."""
    origin = request.headers.get("origin")
    if origin is None:
        return None
    shop = await ingress.registry.storefront(origin)
    if shop is None:
        raise Refused(
            403, "origin_not_allowed", "this origin is not the storefront of a registered shop",
            {"Vary": "Origin"},
        )  # fmt: skip
    return origin, shop


@router.options("/v1/clicks", summary="CORS preflight of the storefront pixel", **docs.PREFLIGHT)
async def pixel_preflight(request: Request) -> Response:
    ingress = _ingress(request)
    try:
        if (
            "origin" not in request.headers
            or "access-control-request-method" not in request.headers
        ):
            detail = "not a CORS preflight: Origin and Access-Control-Request-Method needed"
            raise Refused(400, "bad_request", detail)
        storefront = await _storefront_origin(ingress, request)
        assert storefront is not None  # the header is there
    except Refused as refused:
        _count("pixel", "preflight", refused.code)
        return refused.response()
    _count("pixel", "preflight", "allowed")
    return Response(status_code=204, headers=pixel.preflight_headers(storefront[0]))


@router.get(pixel.PIXEL_PATH, summary="The storefront snippet (JavaScript)", **docs.PIXEL_SCRIPT)
async def pixel_script(request: Request) -> Response:
    headers = {"ETag": pixel.ETAG, "Cache-Control": pixel.CACHE_CONTROL}
    if pixel.etag_matches(request.headers.get("if-none-match")):
        return Response(status_code=304, headers=headers)
    return Response(pixel.SCRIPT, media_type=pixel.SCRIPT_TYPE, headers=headers)


@router.post("/v1/clicks", summary="Clicks from the storefront pixel (batch)", **docs.PIXEL)
async def pixel_clicks(request: Request) -> Response:
    ingress = _ingress(request)
    cors: dict[str, str] = {}
    try:
        storefront = await _storefront_origin(ingress, request)
        shop = storefront[1] if storefront is not None else None
        if storefront is not None:
            cors = pixel.allowed_headers(storefront[0])
        raw = await _read_json_body(request, 256 * 1024, BROWSER_JSON_TYPES)
        try:
            batch = PixelBatch.model_validate_json(raw)
        except ValidationError as exc:
            raise Refused(400, "bad_request", _validation_detail(exc)) from exc
        relay = _relay_headers(request.headers)
        now = datetime.now(UTC)
        accepted: list[dict[str, Any]] = []
        rejected: list[dict[str, Any]] = []
        pending: list[RecordedClick] = []
        redated: list[str] = []
        for index, item in enumerate(batch.clicks):
            link = await ingress.registry.link(item.link_code)
            # A storefront records its own company's links only; another company's link is
            # unknown to it (nothing tells it that the code exists).
            if link is None or (shop is not None and link.tenant_id != shop.tenant_id):
                rejected.append({"index": index, "code": "unknown_link"})
                continue
            click_id = (
                clicks.pixel_click_id(link.tenant_id, link.code, item.client_event_id)
                if item.client_event_id
                else click_id_for_visitor(item.visitor_id)
                if item.visitor_id
                else random_id("clk")
            )
            occurred_at, reason = clicks.click_time(item.occurred_at, now, link.policy)
            recorded = await _record_click(
                ingress, link, relay, peer_ip=request.client.host if request.client else None,
                user_agent=request.headers.get("user-agent"), click_id=click_id,
                occurred_at=occurred_at, visitor_id=item.visitor_id,
                dedup_visitor=item.visitor_id,
                landing_url=item.landing_url, referrer=item.referrer, source=Source.PIXEL,
                shop=shop.domain if shop is not None else None,
            )  # fmt: skip
            pending.append(recorded)
            report: dict[str, Any] = {
                "index": index,
                "click_id": click_id,
                "occurred_at": occurred_at.isoformat(),
                "bot": recorded.is_bot,
                "duplicate": recorded.is_duplicate,
            }
            if reason is not None and item.occurred_at is not None:
                report["redated"] = {"reason": reason, "claimed_at": item.occurred_at.isoformat()}
                redated.append(reason)
            if recorded.relay is not None:
                report["relay"] = recorded.relay
            accepted.append(report)
        for click in pending:
            await _produce(ingress, Topic.CLICKS, click.key, click.value)
        for why in redated:  # counted once the clicks are stored
            CLICKS_REDATED.labels(why).inc()
    except Refused as refused:
        _count("pixel", "click", refused.code)
        response = refused.response()
        response.headers.update(cors)
        return response
    _count("pixel", "click", "accepted")
    return json_response(202, {"accepted": accepted, "rejected": rejected}, cors)


def _validation_detail(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{exc.error_count()} validation error(s); first at {where}: {first['msg']}"
