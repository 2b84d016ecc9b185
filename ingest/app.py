"""The ingress service: `uvicorn --factory ingest.app:create_app`.

Verifies Shopify and Odoo webhooks and referral clicks, writes them to Kafka and answers fast:
2xx only after the broker acknowledged, 503 + Retry-After when it did not, a JSON problem body
for everything refused. No database query on the hot path (see `ingest.registry`).
"""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
import structlog
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ingest import docs, endpoints
from ingest.hot import REQUEST, SECURITY_HEADERS, HotPath, request_fields
from ingest.metrics import exposition
from ingest.producer import EventProducer
from ingest.registry import Registry
from ingest.resp import Commands, commands_for
from schemas.production import check_startup
from schemas.runtime import freeze_startup_heap
from schemas.settings import Settings


@dataclass(slots=True)
class Ingress:
    """Everything a request handler needs, created once per worker process."""

    settings: Settings
    producer: EventProducer
    redis: aioredis.Redis
    registry: Registry
    guards: Commands  # the hot path's Redis (`ingest.resp`): dedup, rate limits, click windows


# Allocations between two young-generation collections (CPython's default is 700). A request
# allocates a few hundred containers and frees nearly all of them by reference counting, so at
# the default the collector ran every request or two to find the in-flight requests' objects
# alive (2 % of a click's instructions, bench/ingress_cpu under callgrind; 4-6 % of a worker's
# CPU under wrk, perf); 10,000 took it out of callgrind's list.
YOUNG_GC_THRESHOLD = 10_000


def settle_heap() -> None:
    """The end of a worker's start-up: what start-up made is frozen out of the collector's
    reach (`schemas.runtime.freeze_startup_heap`), and young collections are made rarer."""
    freeze_startup_heap()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


def configure_logging(level: str) -> None:
    logging.basicConfig(format="%(message)s", level=level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            request_fields,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )


class IngressApp(FastAPI):
    """FastAPI whose calls go to `front` first: the hot path (`ingest.hot`), behind the
    proxy-headers middleware when trusted proxies are configured. What the hot path does not
    answer goes through FastAPI as before (`framework`)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        front = self.front
        if front is None:
            await super().__call__(scope, receive, send)
        else:
            await front(scope, receive, send)

    async def framework(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    check_startup(settings)
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = aioredis.Redis.from_url(settings.redis_url, socket_timeout=2)
        app_secret = settings.shopify_api_secret
        registry = Registry(
            settings.postgres_url, redis, settings.ingest_registry_refresh_seconds,
            settings.ingest_unknown_shop_ttl_seconds,
            app_secret.get_secret_value() if app_secret is not None else None,
        )  # fmt: skip
        await registry.start()
        producer = EventProducer(settings.kafka_bootstrap, settings.ingest_produce_timeout_seconds)
        guards = commands_for(settings.redis_url, timeout=2)
        app.state.ingress = Ingress(settings, producer, redis, registry, guards)
        settle_heap()
        try:
            yield
        finally:
            await registry.stop()
            producer.close()
            await guards.close()
            await redis.aclose()

    app = IngressApp(
        title="refstream ingress",
        version="1",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's native OpenTelemetry bridge asks the tracer, meter and logger providers on
        # every request whether one is configured (2 % of a webhook's event-loop time,
        # bench/ingress --profile); the ingress configures none and exports Prometheus.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.add_middleware(RequestIdMiddleware)
    # The hot path comes first, before FastAPI (it does the request id's work itself).
    front: ASGIApp = HotPath(app.framework, app)
    if settings.trusted_proxies:  # click IP hashes from the real client, never a forged header
        # (uvicorn types its middleware with its own ASGI types, Starlette's are looser)
        proxied = ProxyHeadersMiddleware(cast(Any, front), trusted_hosts=settings.trusted_proxies)
        front = cast(ASGIApp, proxied)
    app.front = front
    app.include_router(endpoints.router)
    install_problem_handlers(app)
    docs.install_components(app)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return endpoints.json_response(200, {"status": "ok"})

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        ingress: Ingress = request.app.state.ingress
        checks: dict[str, str] = {}
        kafka = ingress.producer.ready(timeout=1.0)
        checks["kafka"] = kafka or "ok"
        try:
            await ingress.redis.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = str(exc)
        ok = all(v == "ok" for v in checks.values())
        return endpoints.json_response(200 if ok else 503, {"ready": ok, "checks": checks})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        body, content_type = exposition(settings.ingest_metrics_dir)
        return Response(body, media_type=content_type)

    return app


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def install_problem_handlers(app: FastAPI) -> None:
    """Routing errors (unknown path, wrong method), FastAPI's own validation and unexpected
    errors (500 `internal_error`) answer problem+json with a `code`, like every other refusal
    of the ingress."""

    async def http_error(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, StarletteHTTPException):  # registered for that type only
            raise exc
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        detail = "no such endpoint" if exc.status_code == 404 else str(exc.detail)
        return endpoints.Refused(exc.status_code, code, detail, dict(exc.headers or {})).response()

    async def invalid_request(_: Request, __: Exception) -> Response:
        return endpoints.Refused(400, "bad_request", "invalid request parameters").response()

    async def internal_error(_: Request, __: Exception) -> Response:
        return endpoints.INTERNAL_ERROR.response()  # Starlette logs the exception after it

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(Exception, internal_error)


class RequestIdMiddleware:
    """Binds the request id (`X-Request-Id` or a new one) to every log line and echoes it, with
    the security headers.

    Plain ASGI rather than `BaseHTTPMiddleware`, which costs a task group and memory streams
    per request on the hot path.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = given.decode("latin-1") if given else uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        REQUEST.set((request_id, scope["path"]))
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header, *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_id)
