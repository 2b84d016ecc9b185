"""The business-core API: `uvicorn --factory api.app:create_app`.

`create_app` wires everything once: settings, the PostgreSQL engine and Redis client (opened and
closed by the lifespan), request ids, JSON logs, metrics, problem+json errors and the /v1 routers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.asyncio import Redis
from sqlalchemy import text
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from api.agents.endpoints import router as agents_router
from api.analytics.endpoints import router as analytics_router
from api.api_keys.endpoints import router as api_keys_router
from api.audit.endpoints import router as audit_router
from api.auth.endpoints import router as auth_router
from api.clickhouse import ClickHouseReader
from api.collections.endpoints import router as collections_router
from api.companies.endpoints import router as companies_router
from api.conditional import ConditionalGetMiddleware
from api.contract import install_contract
from api.conversions.endpoints import router as conversions_router
from api.coupons.endpoints import router as coupons_router
from api.dashboard.endpoints import install as install_dashboard
from api.db import create_engine, create_sessionmaker
from api.errors import install_problem_handlers
from api.exceptions.endpoints import router as exceptions_router
from api.fx_rates.endpoints import router as fx_rates_router
from api.ledger.endpoints import router as ledger_router
from api.links.endpoints import router as links_router
from api.live.endpoints import router as live_router
from api.live.hub import LiveHub, stop_on_signals
from api.me.endpoints import router as me_router
from api.notes.endpoints import router as notes_router
from api.observability import Metrics, RequestContextMiddleware, configure_logging
from api.payouts.endpoints import router as payouts_router
from api.programs.endpoints import router as programs_router
from api.rules.endpoints import router as rules_router
from api.shopify.endpoints import router as shopify_router
from api.shops.endpoints import router as shops_router
from api.units.endpoints import router as units_router
from api.users.endpoints import router as users_router
from schemas.production import check_startup
from schemas.runtime import freeze_startup_heap
from schemas.settings import Settings

_READINESS: dict[str, Any] = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def v1_router() -> APIRouter:
    router = APIRouter(prefix="/v1")
    for domain in (
        companies_router,
        auth_router,
        me_router,
        api_keys_router,
        units_router,
        users_router,
        agents_router,
        notes_router,
        programs_router,
        rules_router,
        links_router,
        coupons_router,
        shops_router,
        shopify_router,
        collections_router,
        fx_rates_router,
        exceptions_router,
        ledger_router,
        payouts_router,
        audit_router,
        analytics_router,
        conversions_router,
        live_router,
    ):
        router.include_router(domain)
    return router


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings)
    redis = Redis.from_url(settings.redis_url)
    app.state.engine = engine
    app.state.sessionmaker = create_sessionmaker(engine)
    app.state.redis = redis
    app.state.clickhouse = ClickHouseReader(settings)
    app.state.clickhouse.open()  # when down, analytics retries on first use and answers 503
    app.state.live_hub = live_hub = LiveHub(settings.redis_url)
    restore_signals = stop_on_signals(live_hub)  # open streams end before uvicorn waits on them
    freeze_startup_heap()  # full collections skip what start-up made (`schemas.runtime`)
    try:
        yield
    finally:
        restore_signals()
        await live_hub.close()
        app.state.clickhouse.close()
        await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # uvicorn --workers N starts each worker with multiprocessing: a worker has a parent process.
    check_startup(settings, api_worker=multiprocessing.parent_process() is not None)
    configure_logging(settings.log_level)
    metrics = Metrics()
    app = FastAPI(
        title="refstream API",
        version="1",
        summary="Business core: companies, units, users, agents, programs, links, coupons, shops, "
        "commission rules, the ledger, payouts, auth, audit.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_problem_handlers(app)
    install_contract(app)
    app.add_middleware(ConditionalGetMiddleware)  # inside: 304s still get the request id
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    if (
        settings.trusted_proxies
    ):  # the client address (rate limits, audit) from trusted proxies only
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    app.include_router(v1_router())
    install_dashboard(app)

    @app.get(
        "/healthz",
        operation_id="ops.healthz",
        tags=["ops"],
        summary="Liveness: the process answers",
    )
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        operation_id="ops.readyz",
        tags=["ops"],
        summary="Readiness: PostgreSQL and Redis answer",
        responses={
            200: {"content": {"application/json": {"schema": _READINESS}}},
            503: {
                "description": "Not ready: `checks` says which store failed",
                "content": {"application/json": {"schema": _READINESS}},
            },
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        checks = {"postgres": "ok", "redis": "ok"}
        try:
            async with request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:  # any failure means not ready; the reason is reported
            checks["postgres"] = f"error: {type(exc).__name__}"
        try:
            await request.app.state.redis.ping()
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        body = {"status": "ok" if ready else "unavailable", "checks": checks}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app
