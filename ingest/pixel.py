"""The storefront snippet (`GET /pixel/v1.js`) and the CORS rule of `POST /v1/clicks`.

The script is a static file (`ingest/static/pixel.js`) served with an ETag over its bytes and a
cache lifetime; the version is in the path, so a change of behaviour that a theme must opt into
gets a new path. Browser calls to `/v1/clicks` are allowed from the storefront origin of every
active registered shop (`https://{domain}`, `ingest.registry.storefront_origin`), looked up in the
registry's in-memory snapshot: no database or Redis round trip per request.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PIXEL_PATH = "/pixel/v1.js"
SCRIPT = (Path(__file__).with_name("static") / "pixel.js").read_bytes()
ETAG = '"' + hashlib.sha256(SCRIPT).hexdigest()[:32] + '"'
# An hour fresh, then revalidated with the ETag (a fix within v1 reaches every shop within the
# hour); a day of stale-while-revalidate keeps shop pages fast while the ingress is slow.
CACHE_CONTROL = "public, max-age=3600, stale-while-revalidate=86400"
SCRIPT_TYPE = "text/javascript; charset=utf-8"

# Cart attribute names the dataflow reads (`schemas.conversion.CLICK_ID_ATTRIBUTES`,
# `VISITOR_ID_ATTRIBUTES`); the script writes these (underscore: hidden at checkout).
CART_CLICK_ATTRIBUTE = "_rsclid"
CART_VISITOR_ATTRIBUTE = "_rsvid"

# What a registered storefront may send: POST with a JSON or text/plain body.
ALLOW_METHODS = "POST"
ALLOW_HEADERS = "Content-Type, X-Request-Id"
EXPOSE_HEADERS = "X-Request-Id, Retry-After"
MAX_AGE_SECONDS = 7200  # Chromium's ceiling for a cached preflight


def etag_matches(if_none_match: str | None) -> bool:
    """Whether an `If-None-Match` header names the current script (weak or strong, or `*`)."""
    if not if_none_match:
        return False
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == ETAG:
            return True
    return False


def allowed_headers(origin: str) -> dict[str, str]:
    """The CORS headers of an answer to a registered storefront `origin`."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": EXPOSE_HEADERS,
        "Vary": "Origin",
    }


def preflight_headers(origin: str) -> dict[str, str]:
    """The CORS headers of a preflight answer to a registered storefront `origin`."""
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": ALLOW_METHODS,
        "Access-Control-Allow-Headers": ALLOW_HEADERS,
        "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
        "Vary": "Origin",
    }
