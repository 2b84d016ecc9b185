"""The storefront snippet and the CORS rule of `POST /v1/clicks`, through the real app into the
real broker: a registered shop's storefront origin is allowed (preflight and the POST echo it),
any other origin gets 403 without CORS headers and records nothing, a text/plain body is the same
JSON, and `/pixel/v1.js` is cacheable with an ETag."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import psycopg

from ingest import pixel
from ingest.cli import ensure_tenant, register_shop
from ingest.clicks import pixel_click_id
from schemas.conversion import CLICK_ID_ATTRIBUTES, VISITOR_ID_ATTRIBUTES
from schemas.settings import Settings
from tests.ingest.conftest import ClientFactory, Registered
from tests.ingest.test_clicks import BROWSER, clicks_by_id

PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


def origin_of(registered: Registered) -> str:
    return f"https://{registered.shop}"


def batch(registered: Registered, event_id: str, visitor: str = "v-pixel") -> bytes:
    return orjson.dumps({"clicks": [{
        "link_code": registered.link_code, "client_event_id": event_id, "visitor_id": visitor,
        "landing_url": f"https://{registered.shop}/collections/office?ref={registered.link_code}",
    }]})  # fmt: skip


async def test_preflight_from_a_registered_storefront_echoes_its_origin(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    origin = origin_of(registered)
    response = await client.options("/v1/clicks", headers={"Origin": origin, **PREFLIGHT})
    assert response.status_code == 204, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers["vary"]
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "content-type" in response.headers["access-control-allow-headers"].lower()
    assert int(response.headers["access-control-max-age"]) > 0
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_from_any_other_origin_gets_no_cors_headers(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    others = (
        "https://evil.example",
        f"http://{registered.shop}",  # not HTTPS
        f"https://{registered.shop}:8443",  # another port
        f"https://x.{registered.shop}",  # a subdomain is another origin
        "null",
    )
    for origin in others:
        response = await client.options("/v1/clicks", headers={"Origin": origin, **PREFLIGHT})
        assert response.status_code == 403, (origin, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "origin_not_allowed"
        assert not any(h.startswith("access-control-") for h in response.headers), origin
    not_preflight = await client.options("/v1/clicks", headers={"Origin": origin_of(registered)})
    assert not_preflight.status_code == 400
    assert not_preflight.json()["code"] == "bad_request"


async def test_text_plain_beacon_from_the_storefront_is_recorded_with_the_contract_id(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    origin = origin_of(registered)
    event_id = f"px_{uuid.uuid4().hex}"
    response = await client.post("/v1/clicks", content=batch(registered, event_id), headers={
        "Origin": origin, "Content-Type": "text/plain;charset=UTF-8", "User-Agent": BROWSER,
    })  # fmt: skip
    assert response.status_code == 202, response.text
    assert response.headers["access-control-allow-origin"] == origin
    assert "Origin" in response.headers["vary"]
    (accepted,) = response.json()["accepted"]
    expected = pixel_click_id(registered.tenant_id, registered.link_code, event_id)
    assert accepted["click_id"] == expected
    click = clicks_by_id(stack_settings)[expected]
    assert (click.visitor_id, click.agent_id) == ("v-pixel", registered.agent_id)
    assert click.shop == registered.shop  # the storefront it came from
    assert not click.is_bot
    assert not click.is_duplicate
    # The same beacon as JSON (a retry) is the same click, not a duplicate of itself.
    again = await client.post("/v1/clicks", content=batch(registered, event_id), headers={
        "Origin": origin, "Content-Type": "application/json", "User-Agent": BROWSER,
    })  # fmt: skip
    assert again.json()["accepted"][0]["click_id"] == expected
    assert again.json()["accepted"][0]["duplicate"] is False


async def test_a_post_from_another_origin_is_refused_and_not_recorded(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    event_id = f"px_{uuid.uuid4().hex}"
    response = await client.post("/v1/clicks", content=batch(registered, event_id), headers={
        "Origin": "https://evil.example", "Content-Type": "text/plain", "User-Agent": BROWSER,
    })  # fmt: skip
    assert response.status_code == 403
    assert response.json()["code"] == "origin_not_allowed"
    assert "access-control-allow-origin" not in response.headers
    # Without an Origin (a server-side caller) the same batch is recorded as before.
    server = await client.post(
        "/v1/clicks",
        content=batch(registered, f"{event_id}-srv"),
        headers={"Content-Type": "application/json", "User-Agent": BROWSER},
    )
    assert server.status_code == 202
    assert "access-control-allow-origin" not in server.headers
    recorded = clicks_by_id(stack_settings)
    assert server.json()["accepted"][0]["click_id"] in recorded
    refused_id = pixel_click_id(registered.tenant_id, registered.link_code, event_id)
    assert refused_id not in recorded


async def test_refusals_to_the_storefront_are_problems_it_can_read(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    origin = origin_of(registered)
    for content_type, body, status, code in (
        ("text/plain", b"not json", 400, "bad_request"),
        ("text/plain", b'{"clicks": []}', 400, "bad_request"),
        ("application/x-www-form-urlencoded", b"a=1", 415, "unsupported_media_type"),
    ):
        headers = {"Origin": origin, "Content-Type": content_type}
        response = await client.post("/v1/clicks", content=body, headers=headers)
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == code
        assert response.headers["access-control-allow-origin"] == origin


async def test_a_shop_registered_after_start_is_allowed_at_once(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    shop = f"late-{uuid.uuid4().hex[:8]}.myshopify.com"
    origin = f"https://{shop}"
    before = await client.options("/v1/clicks", headers={"Origin": origin, **PREFLIGHT})
    assert before.status_code == 403
    register_shop(stack_settings, shop, registered.tenant_id, "s" * 20, None)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = await client.options("/v1/clicks", headers={"Origin": origin, **PREFLIGHT})
        if after.status_code == 204:
            break
        await asyncio.sleep(0.2)
    assert after.status_code == 204, after.text
    assert after.headers["access-control-allow-origin"] == origin
    # A deactivated shop's storefront is refused again once the ingress reloads.
    with psycopg.connect(stack_settings.postgres_url) as conn:
        conn.execute("UPDATE shops SET active = false WHERE domain = %s", (shop,))
    await asyncio.sleep(1.1)  # past the early-reload throttle: the next miss reloads
    await client.options("/v1/clicks", headers={"Origin": "https://other.example", **PREFLIGHT})
    gone = await client.options("/v1/clicks", headers={"Origin": origin, **PREFLIGHT})
    assert gone.status_code == 403


async def test_the_snippet_is_cacheable_and_revalidated_with_its_etag(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/pixel/v1.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "max-age=" in response.headers["cache-control"]
    etag = response.headers["etag"]
    assert etag.startswith('"')
    assert len(etag) > 10
    assert response.content == pixel.SCRIPT
    assert len(response.content) < 8_000  # small, plain, no bundle
    same = await client.get("/pixel/v1.js", headers={"If-None-Match": etag})
    assert same.status_code == 304
    assert same.content == b""
    assert same.headers["etag"] == etag
    stale = await client.get("/pixel/v1.js", headers={"If-None-Match": '"old"'})
    assert stale.status_code == 200


def test_the_snippet_writes_the_cart_attributes_the_dataflow_reads() -> None:
    assert pixel.CART_CLICK_ATTRIBUTE in CLICK_ID_ATTRIBUTES
    assert pixel.CART_VISITOR_ATTRIBUTE in VISITOR_ID_ATTRIBUTES
    script = pixel.SCRIPT.decode()
    assert f'"{pixel.CART_CLICK_ATTRIBUTE}"' in script
    assert f'"{pixel.CART_VISITOR_ATTRIBUTE}"' in script
    assert "/cart/update.js" in script
    assert "/v1/clicks" in script
    assert "http://" not in script
    assert "https://" not in script.split("*/", 1)[1]


async def test_a_storefront_records_only_its_own_company_s_links(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    """Another company's link code sent from this shop's storefront is `unknown_link` there;
    the same code sent by a server (no Origin) is recorded as before."""
    suffix = uuid.uuid4().hex[:10]
    other_code = f"other-{suffix}"
    with psycopg.connect(stack_settings.postgres_url) as conn:
        ensure_tenant(conn, f"t_{suffix}")
        conn.execute(
            "INSERT INTO programs (id, tenant_id, name, landing_url)"
            " VALUES (%s, %s, 'P', 'https://other.example/')",
            (f"prg_{suffix}", f"t_{suffix}"),
        )
        conn.execute(
            "INSERT INTO agents (id, tenant_id, name) VALUES (%s, %s, 'Oz')",
            (f"agt_{suffix}", f"t_{suffix}"),
        )
        conn.execute(
            "INSERT INTO links (id, tenant_id, program_id, agent_id, code)"
            " VALUES (%s, %s, %s, %s, %s)",
            (f"lnk_{suffix}", f"t_{suffix}", f"prg_{suffix}", f"agt_{suffix}", other_code),
        )
    body = orjson.dumps(
        {"clicks": [{"link_code": other_code}, {"link_code": registered.link_code}]}
    )
    async with make_client() as client:
        browser = await client.post("/v1/clicks", content=body, headers={
            "Origin": origin_of(registered), "Content-Type": "text/plain", "User-Agent": BROWSER,
        })  # fmt: skip
        server = await client.post("/v1/clicks", content=body, headers={
            "Content-Type": "application/json", "User-Agent": BROWSER,
        })  # fmt: skip
    assert browser.status_code == 202, browser.text
    assert browser.json()["rejected"] == [{"index": 0, "code": "unknown_link"}]
    assert [a["index"] for a in browser.json()["accepted"]] == [1]
    assert server.json()["rejected"] == []
    assert [a["index"] for a in server.json()["accepted"]] == [0, 1]
