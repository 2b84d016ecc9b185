"""The pure parts of the OAuth install: the query signature (checked against the example in
Shopify's documentation), the callback checks, and the sealing of stored tokens."""

from __future__ import annotations

import base64
import os

import pytest

from api.shopify.admin import SUBSCRIBED_TOPICS, graphql_topic
from api.shopify.oauth import CallbackRefused, check_callback, query_hmac, query_message
from schemas import secretbox
from schemas.registry import valid_shop

# shopify.dev's worked example of verifying an OAuth redirect (client secret "hush").
DOC_PARAMS = [
    ("code", "0907a61c0c8d55e99db179b68161bc00"),
    ("shop", "some-shop.myshopify.com"),
    ("state", "0.6784241404160823"),
    ("timestamp", "1337178173"),
]
DOC_HMAC = "700e2dadb827fcc8609e9d5ce208b2e9cdaab9df07390d2cbca10d7c328fc4bf"


def test_the_query_signature_is_shopifys_documented_example() -> None:
    assert query_hmac("hush", DOC_PARAMS) == DOC_HMAC
    # Sorted by name, `hmac` itself left out, whatever the order it came in.
    shuffled = [("hmac", DOC_HMAC), *reversed(DOC_PARAMS)]
    assert query_message(shuffled) == "&".join(f"{k}={v}" for k, v in DOC_PARAMS)
    assert query_hmac("hush", shuffled) == DOC_HMAC


def test_check_callback_accepts_the_documented_redirect_and_refuses_changes() -> None:
    params = [*DOC_PARAMS, ("hmac", DOC_HMAC)]
    found = check_callback(params, secret="hush", now=1337178173 + 5, max_age_seconds=600)
    assert (found.shop, found.code, found.state) == (
        "some-shop.myshopify.com", "0907a61c0c8d55e99db179b68161bc00", "0.6784241404160823"
    )  # fmt: skip
    cases = {
        "invalid_signature": [*DOC_PARAMS[:3], ("timestamp", "1337178174"), ("hmac", DOC_HMAC)],
        "bad_callback": [*DOC_PARAMS, ("hmac", DOC_HMAC), ("shop", "x.myshopify.com")],
        "stale_callback": params,
    }
    for code, query in cases.items():
        with pytest.raises(CallbackRefused) as refused:
            check_callback(query, secret="hush", now=1337178173 + 3600, max_age_seconds=600)
        assert refused.value.code == code
    with pytest.raises(CallbackRefused, match="hmac"):
        check_callback(params, secret="not-hush", now=1337178173, max_age_seconds=600)


def test_the_host_parameter_must_name_the_shops_admin() -> None:
    def signed(host: str) -> list[tuple[str, str]]:
        query = [*DOC_PARAMS, ("host", host)]
        return [*query, ("hmac", query_hmac("hush", query))]

    good = base64.b64encode(b"admin.shopify.com/store/some-shop").decode().rstrip("=")
    assert check_callback(signed(good), secret="hush", now=1337178173, max_age_seconds=60)
    for bad in (base64.b64encode(b"admin.shopify.com/store/other").decode(), "%%%"):
        with pytest.raises(CallbackRefused) as refused:
            check_callback(signed(bad), secret="hush", now=1337178173, max_age_seconds=60)
        assert refused.value.code == "bad_callback"


@pytest.mark.parametrize(
    ("shop", "valid"),
    [
        ("acme.myshopify.com", True),
        ("acme-2.myshopify.com", True),
        ("0acme.myshopify.com", True),
        ("-acme.myshopify.com", False),
        ("Acme.myshopify.com", False),
        ("acme.myshopify.com.evil.com", False),
        ("evil.com/acme.myshopify.com", False),
        ("acme.myshopify.com:8443", False),
        ("acme.example.com", False),
        ("a_b.myshopify.com", False),
        ("", False),
    ],
)
def test_shop_domains(shop: str, valid: bool) -> None:
    assert valid_shop(shop) is valid


def test_sealed_tokens_open_only_with_their_key_and_shop() -> None:
    key = os.urandom(32)
    sealed = secretbox.seal(key, "shpat_0123456789abcdef", "acme.myshopify.com")
    assert b"shpat_" not in sealed
    assert sealed != secretbox.seal(key, "shpat_0123456789abcdef", "acme.myshopify.com")
    assert secretbox.open_sealed(key, sealed, "acme.myshopify.com") == "shpat_0123456789abcdef"
    tampered = sealed[:-1] + bytes([sealed[-1] ^ 1])
    for blob, context, with_key in (
        (sealed, "other.myshopify.com", key),
        (sealed, "acme.myshopify.com", os.urandom(32)),
        (tampered, "acme.myshopify.com", key),
        (b"v1short", "acme.myshopify.com", key),
    ):
        with pytest.raises(secretbox.SecretBoxError):
            secretbox.open_sealed(with_key, blob, context)
    text = base64.urlsafe_b64encode(key).decode()
    assert secretbox.load_key(text) == key
    assert secretbox.load_key(text.rstrip("=")) == key
    for bad in ("not base64 !", base64.urlsafe_b64encode(os.urandom(16)).decode()):
        with pytest.raises(secretbox.SecretBoxError):
            secretbox.load_key(bad)


def test_subscribed_topics_leave_out_the_compliance_ones() -> None:
    assert "app/uninstalled" in SUBSCRIBED_TOPICS
    assert not {"customers/redact", "shop/redact", "customers/data_request"} & set(
        SUBSCRIBED_TOPICS
    )
    assert graphql_topic("orders/create") == "ORDERS_CREATE"
    assert graphql_topic("app/uninstalled") == "APP_UNINSTALLED"
