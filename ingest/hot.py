"""The hot path: `POST /webhooks/shopify` and `GET /r/{code}` served as plain ASGI.

Nearly every request the ingress gets is one of these two. Through FastAPI each paid for the
framework's routing (a regex per route), a `Request`, dependency solving, a `Response` object
and three more middleware layers: about half of a webhook's CPU time (bench/ingress
`--profile`). Here they are matched by method and path, their headers read once into a dict,
their body read from `receive`, and the answer, with the request id and the security headers,
written whole through `ingest.serving` (or sent as two ASGI messages under another server). The
work and the answers are the FastAPI routes' own (`endpoints.shopify_delivery`,
`endpoints.redirect`): the routes stay, for the OpenAPI document and every path this does not
match (a trailing slash, a mount under a root path).

Called by `ingest.app.IngressApp` before FastAPI and Starlette's middleware stack, which
a hot request never needs (`bench/ingress --profile`: five layers, one wrapping `send`), so it
answers an unexpected error with the problem+json 500 itself; inside the proxy-headers
middleware, so a click's address is the trusted proxy's `X-Forwarded-For` when one is
configured.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, MutableMapping
from contextvars import ContextVar
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from ingest import endpoints, serving

# Sent on every answer: no MIME sniffing, no framing, and referrers reduced to the origin
# across sites (what a redirect to the shop passes on).
SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)
WEBHOOK_PATH = "/webhooks/shopify"
# The text of the header names the hot requests usually carry (browsers', Shopify's).
_NAMES = {
    name.encode("latin-1"): name
    for name in (
        "host", "user-agent", "accept", "accept-encoding", "accept-language", "referer",
        "cookie", "connection", "content-type", "content-length", "x-request-id",
        "x-forwarded-for", "x-forwarded-proto", "upgrade-insecure-requests", "sec-fetch-dest",
        "sec-fetch-mode", "sec-fetch-site", "sec-fetch-user", "sec-ch-ua", "sec-ch-ua-mobile",
        "sec-ch-ua-platform", "priority", "dnt", "x-shopify-topic", "x-shopify-shop-domain",
        "x-shopify-hmac-sha256", "x-shopify-api-version", "x-shopify-webhook-id",
        "x-shopify-triggered-at", "x-shopify-event-id", "x-shopify-name",
        "x-shopify-sub-topic",
    )
}  # fmt: skip
REDIRECT_PREFIX = "/r/"
INTERNAL_ERROR = endpoints.INTERNAL_ERROR.answer()

# The request a task serves, (request id, path), for its log lines (`request_fields`). One
# variable set once per request: structlog's `bind_contextvars` spelled a variable name and
# looked it up per key (2-4 % of a hot request's event-loop time, bench/ingress_cpu).
REQUEST: ContextVar[tuple[str, str] | None] = ContextVar("refstream_ingest_request", default=None)


def request_fields(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: the request id and path of the request being served, if any (a
    value the log call names itself wins, as with structlog's `merge_contextvars`)."""
    request = REQUEST.get()
    if request is not None:
        event.setdefault("request_id", request[0])
        event.setdefault("path", request[1])
    return event


class HotPath:
    """ASGI app answering the two hot endpoints itself; everything else goes to `app`.

    `ingest.app.IngressApp` calls it before FastAPI and Starlette's middleware stack (five
    layers, one of them wrapping `send`, for a request they have no part in), so it answers an
    unexpected error itself: the problem+json 500 the error middleware would send (with the
    request id and the security headers), then the error raised on to the server, which logs
    it."""

    def __init__(self, app: ASGIApp, owner: Any) -> None:
        self.app = app
        # The FastAPI app's state, as the dict Starlette's `State` keeps its values in (the same
        # dict for the app's life): `state.ingress` is set at start-up, and read here without
        # `State.__getattr__` (a Python call per request).
        self._state: dict[str, Any] = owner.state._state

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # The awaitable of whichever answers, returned as it is: no coroutine of its own per
        # request (a frame made, and resumed at every await below it).
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "POST" and path == WEBHOOK_PATH:
                return self._answer(scope, receive, send, None)
            if method == "GET" and path.startswith(REDIRECT_PREFIX):
                code = path[len(REDIRECT_PREFIX) :]
                if code and "/" not in code:
                    return self._answer(scope, receive, send, code)
        return self.app(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, code: str | None) -> None:
        # First value of each name, as Starlette's `Headers.get` (ASGI names are lower-case);
        # the usual names' text looked up, not decoded per request.
        names = _NAMES.get
        headers = {
            names(k) or k.decode("latin-1"): v.decode("latin-1")
            for k, v in reversed(scope["headers"])
        }
        # 32 hex digits, as uuid4().hex; a log line's id, no secret: no getrandom system call
        # (128 bits of the Mersenne twister, spelled in one format).
        request_id = headers.get("x-request-id") or f"{random.getrandbits(128):032x}"
        # Every request sets it (here or in `RequestIdMiddleware`), overwriting whatever its
        # task's context inherited (a pipelined request's task starts in a copy of its
        # predecessor's).
        REQUEST.set((request_id, scope["path"]))
        ingress = self._state["ingress"]
        try:
            if code is None:
                answer = await endpoints.shopify_delivery(
                    ingress, headers, endpoints.ASGIBody(receive)
                )
            else:
                client = scope.get("client")
                answer = await endpoints.redirect(
                    ingress, code, headers, client[0] if client else None
                )
        except ClientDisconnect:
            return  # nobody to answer
        except Exception:
            await _send(send, INTERNAL_ERROR, request_id)
            raise
        # `_send`, spelled out: no coroutine for an answer written whole.
        head = _head(answer, request_id)
        if head is None or not serving.write_answer(send, answer.status, head, answer.body):
            await _send_messages(send, answer, request_id)


async def _send(send: Send, answer: endpoints.Answer, request_id: str) -> None:
    """The answer on the wire: written whole by `ingest.serving` when the server is its
    protocol and every varying value is plainly safe (`_head`), else as two ASGI messages."""
    head = _head(answer, request_id)
    if head is None or not serving.write_answer(send, answer.status, head, answer.body):
        await _send_messages(send, answer, request_id)


# The header lines of an answer's media types and the security headers, spelled once.
_CONTENT_TYPE: dict[str | None, bytes] = {None: b""}
_LENGTH_LINES: dict[int, bytes] = {}
_SECURITY_LINES = b"".join(name + b": " + value + b"\r\n" for name, value in SECURITY_HEADERS)


def _head(answer: endpoints.Answer, request_id: str) -> bytes | None:
    """The answer's header lines as `_send_messages` gives them to uvicorn (the same names,
    values and order), or None if a value is not plainly safe (`serving.header_value`: a
    control character such as CR or LF, or beyond Latin-1): uvicorn's `send` then judges it."""
    content_type = _CONTENT_TYPE.get(answer.media_type)
    if content_type is None:
        media_type = serving.header_value(answer.media_type or "")
        if media_type is None:
            return None
        content_type = _CONTENT_TYPE[answer.media_type] = b"content-type: " + media_type + b"\r\n"
    length = len(answer.body)
    length_line = _LENGTH_LINES.get(length)
    if length_line is None:
        length_line = b"content-length: %d\r\n" % length
        if len(_LENGTH_LINES) < 4096:  # (a few lengths recur: 0 for a redirect, a webhook's)
            _LENGTH_LINES[length] = length_line
    parts = [length_line, content_type]
    # `serving.header_value` spelled out (a call less per header): printable, and Latin-1.
    for name, value in answer.headers:
        line = serving.header_name(name)
        if line is None or not value.isprintable():
            return None
        try:
            parts += (line, value.encode("latin-1"), b"\r\n")
        except UnicodeEncodeError:
            return None
    if not request_id.isprintable():
        return None
    try:
        parts += (b"x-request-id: ", request_id.encode("latin-1"), b"\r\n", _SECURITY_LINES)
    except UnicodeEncodeError:
        return None
    return b"".join(parts)


async def _send_messages(send: Send, answer: endpoints.Answer, request_id: str) -> None:
    headers = [(b"content-length", str(len(answer.body)).encode())]
    if answer.media_type is not None:
        headers.append((b"content-type", answer.media_type.encode()))
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers)
    headers.append((b"x-request-id", request_id.encode("latin-1")))
    headers.extend(SECURITY_HEADERS)
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})
