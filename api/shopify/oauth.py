"""Shopify's OAuth authorization code grant, the pure parts: no I/O.

The install, as Shopify documents it for apps outside its CLI
(shopify.dev, "Implement authorization code grant manually"):

1. The app sends the merchant to `https://{shop}/admin/oauth/authorize?client_id=…&scope=…
   &redirect_uri=…&state=…` (`authorize_url`); `state` is a nonce the app checks on return.
2. Shopify asks the merchant to approve and redirects to `redirect_uri` with `code`, `hmac`,
   `host`, `shop`, `state` and `timestamp`.
3. The app checks the redirect (`check_callback`): `hmac` is the hex HMAC-SHA256, keyed with the
   app's client secret, of every other query parameter sorted by name and joined as
   `name=value` with `&` (compared in constant time); `shop` is a `*.myshopify.com` host name;
   `state` is the nonce it issued (checked by the caller against Redis); `timestamp` is recent;
   `host`, if sent, is the base64 of the shop's admin host.
4. It exchanges `code` for the access token: `POST https://{shop}/admin/oauth/access_token`
   with `client_id`, `client_secret` and `code` (`api.shopify.admin`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from schemas.registry import valid_shop

CALLBACK_PATH = "/v1/shopify/callback"


class CallbackRefused(ValueError):
    """An OAuth redirect that must not be trusted; `code` is the problem's stable reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def admin_base(shop: str, override: str | None) -> str:
    """Where `shop`'s admin answers: `https://{shop}`, or the configured proxy or stand-in."""
    return override.rstrip("/") if override else f"https://{shop}"


def authorize_url(*, client_id: str, scopes: str, redirect_uri: str, state: str, base: str) -> str:
    """Step 1's URL at `base` (the shop's admin). No `grant_options[]=per-user`: the token is
    an offline one, which outlives the installing user's session."""
    query = urlencode(
        {"client_id": client_id, "scope": scopes, "redirect_uri": redirect_uri, "state": state}
    )
    return f"{base}/admin/oauth/authorize?{query}"


def query_message(params: Iterable[tuple[str, str]]) -> str:
    """What `hmac` signs: every parameter but `hmac`, sorted by name, `name=value&…`."""
    return "&".join(f"{k}={v}" for k, v in sorted(p for p in params if p[0] != "hmac"))


def query_hmac(secret: str, params: Iterable[tuple[str, str]]) -> str:
    """The hex HMAC-SHA256 Shopify puts in `hmac` for `params`."""
    message = query_message(params).encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Callback:
    shop: str
    code: str
    state: str
    timestamp: int


def _host_names_shop(host: str, shop: str) -> bool:
    """`host` is base64 of `admin.shopify.com/store/{name}` (or the older `{shop}/admin`)."""
    try:
        decoded = base64.b64decode(host + "=" * (-len(host) % 4), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    name = shop.removesuffix(".myshopify.com")
    return decoded in (f"admin.shopify.com/store/{name}", f"{shop}/admin")


def check_callback(
    params: list[tuple[str, str]], *, secret: str, now: float, max_age_seconds: int
) -> Callback:
    """The redirect of step 2, checked as step 3 says (all but `state`, which the caller
    matches against the nonce it stored); `CallbackRefused` naming the first problem.

    The signature is checked before anything else is believed, so an unsigned or tampered
    query learns nothing about which other check it would have failed.
    """
    names = [k for k, _ in params]
    if len(names) != len(set(names)):
        raise CallbackRefused("bad_callback", "a query parameter is repeated")
    given = dict(params)
    for required in ("code", "hmac", "shop", "state", "timestamp"):
        if not given.get(required):
            raise CallbackRefused("bad_callback", f"the `{required}` parameter is missing")
    expected = query_hmac(secret, params)
    if not hmac.compare_digest(expected.encode(), given["hmac"].strip().lower().encode()):
        raise CallbackRefused("invalid_signature", "the `hmac` of the query does not match")
    shop = given["shop"]
    if not valid_shop(shop):
        raise CallbackRefused("invalid_shop", "`shop` is not a *.myshopify.com domain")
    try:
        timestamp = int(given["timestamp"])
    except ValueError:
        raise CallbackRefused("bad_callback", "`timestamp` is not a Unix time") from None
    if abs(now - timestamp) > max_age_seconds:
        raise CallbackRefused("stale_callback", "`timestamp` is too far from now")
    host = given.get("host")
    if host is not None and not _host_names_shop(host, shop):
        raise CallbackRefused("bad_callback", "`host` does not name the shop's admin")
    return Callback(shop=shop, code=given["code"], state=given["state"], timestamp=timestamp)
