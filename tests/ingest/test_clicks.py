"""Referral redirects and pixel clicks through the real app into the real broker."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

from deploy.demo import read_to_end
from ingest.clicks import CLICK_PARAM, is_bot, redirect_url
from schemas.events.click import ClickEvent
from schemas.events.envelope import EventEnvelope
from schemas.settings import Settings
from schemas.topics import Topic
from tests.ingest.conftest import Registered

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_0) AppleWebKit/605.1.15 Safari/605.1.15"


def clicks_by_id(settings: Settings) -> dict[str, ClickEvent]:
    found = {}
    for message in read_to_end(settings.kafka_bootstrap, Topic.CLICKS):
        envelope = EventEnvelope.from_bytes(message.value())
        click = ClickEvent.model_validate(envelope.json_body())
        found[click.click_id] = click
    return found


async def test_referral_link_records_the_click_and_redirects_with_its_id(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    response = await client.get(f"/r/{registered.link_code}", headers={"User-Agent": BROWSER})
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    params = parse_qs(location.query)
    assert params["utm_source"] == ["refstream"]  # the landing URL's own query is kept
    click_id = params[CLICK_PARAM][0]
    assert response.cookies["rs_clid"] == click_id
    assert response.cookies["rs_vid"]
    click = clicks_by_id(stack_settings)[click_id]
    assert (click.agent_id, click.program_id, click.tenant_id) == (
        registered.agent_id, registered.program_id, registered.tenant_id)  # fmt: skip
    assert click.visitor_id == response.cookies["rs_vid"]
    assert not click.is_bot
    assert not click.is_duplicate
    assert click.ip_hash is not None
    assert "203.0.113.7" not in orjson.dumps(click.model_dump(mode="json")).decode()


async def test_repeat_click_is_marked_duplicate_and_bots_flagged_not_dropped(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    first = await client.get(f"/r/{registered.link_code}", headers={"User-Agent": BROWSER})
    second = await client.get(f"/r/{registered.link_code}", headers={"User-Agent": BROWSER})
    bot = await client.get(f"/r/{registered.link_code}", headers={"User-Agent": "Googlebot/2.1"})
    ids = [parse_qs(urlsplit(r.headers["location"]).query)[CLICK_PARAM][0]
           for r in (first, second, bot)]  # fmt: skip
    clicks = clicks_by_id(stack_settings)
    assert [clicks[i].is_duplicate for i in ids] == [False, True, False]
    assert [clicks[i].is_bot for i in ids] == [False, False, True]


async def test_unknown_link_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get("/r/no-such-link")
    assert response.status_code == 404
    assert response.json()["code"] == "unknown_link"


async def test_pixel_batch_is_accepted_per_item(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    batch = {"clicks": [
        {"link_code": registered.link_code, "client_event_id": "px-1", "visitor_id": "v9"},
        {"link_code": "missing"},
    ]}  # fmt: skip
    response = await client.post("/v1/clicks", json=batch, headers={"User-Agent": BROWSER})
    assert response.status_code == 202
    body = response.json()
    assert body["rejected"] == [{"index": 1, "code": "unknown_link"}]
    (accepted,) = body["accepted"]
    again = await client.post("/v1/clicks", json=batch, headers={"User-Agent": BROWSER})
    assert again.json()["accepted"][0]["click_id"] == accepted["click_id"]  # idempotent id
    assert clicks_by_id(stack_settings)[accepted["click_id"]].visitor_id == "v9"


async def test_pixel_rejects_invalid_batches(client: httpx.AsyncClient) -> None:
    for body in ({"clicks": []}, {"clicks": [{"nope": 1}]}, {"other": 1}):
        response = await client.post("/v1/clicks", json=body)
        assert response.status_code == 400
        assert response.json()["code"] == "bad_request"
    # text/plain is the same JSON (a browser's sendBeacon); other media types are refused.
    response = await client.post("/v1/clicks", content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["code"] == "bad_request"
    response = await client.post("/v1/clicks", content=b"x", headers={"Content-Type": "text/csv"})
    assert response.status_code == 415


def test_bot_detection_and_redirect_url() -> None:
    assert is_bot(None)
    assert is_bot("facebookexternalhit/1.1")
    assert is_bot("python-requests/2.32")
    assert not is_bot(BROWSER)
    assert redirect_url("https://s.example/p?a=1&rsclid=old", "clk_1") == (
        "https://s.example/p?a=1&rsclid=clk_1")  # fmt: skip
