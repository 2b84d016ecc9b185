"""Request ids, structured JSON logs and Prometheus metrics for the API.

`RequestContextMiddleware` is plain ASGI: it takes a well-formed `X-Request-Id` or makes one,
binds it to structlog's context for every log line of the request, echoes it on the response,
and counts/times the request by route template (never by raw path, to bound label cardinality).
"""

from __future__ import annotations

import logging
import re
import time

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import PROBLEM_JSON, internal_error_body
from api.kit.headers import SECURITY_HEADERS
from schemas.ids import random_id

REQUEST_ID_HEADER = "X-Request-Id"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

log = structlog.get_logger("api.access")


def configure_logging(level: str) -> None:
    """JSON lines on stderr, with the bound context (request id, …) merged into each event."""
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=False,
    )


class Metrics:
    """The API's collectors, in a registry of the app's own (several apps can share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "refstream_api_requests_total",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "refstream_api_request_duration_seconds",
            "HTTP request duration by method and route template.",
            ["method", "route"],
            registry=self.registry,
        )


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return str(candidate)
    return random_id("req")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        started = time.perf_counter()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled_error")
                if response_started:
                    raise
                body = internal_error_body(path=scope["path"], request_id=request_id)
                await JSONResponse(body, status_code=500, media_type=PROBLEM_JSON)(
                    scope, receive, send_with_id
                )
            finally:
                elapsed = time.perf_counter() - started
                route = _route_template(scope)
                method = scope["method"]
                self.metrics.requests.labels(method, route, str(status)).inc()
                self.metrics.duration.labels(method, route).observe(elapsed)
                log.info(
                    "request",
                    method=method,
                    route=route,
                    status=status,
                    duration_ms=round(elapsed * 1000, 1),
                )


def _route_template(scope: Scope) -> str:
    """The matched route as a template (`/v1/agents/{agent_id}`), or "unmatched"."""
    if scope.get("route") is None:
        return "unmatched"
    by_value = {str(v): k for k, v in scope.get("path_params", {}).items()}
    segments = scope["path"].split("/")
    return "/".join(f"{{{by_value[s]}}}" if s in by_value else s for s in segments)
