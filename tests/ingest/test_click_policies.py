"""A program's click policies applied by the real ingress (in-process app, real broker, Redis and
PostgreSQL): max click age, bot rules, server-side relays, per-visitor duplicates, the click id."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from api.app import create_app as create_api
from ingest.clicks import ClickPolicy, fingerprint, ip_hash, relay_trusted
from schemas.click_policy import relay_token_hash
from schemas.events.click import ClickEvent
from schemas.settings import Settings
from tests.api.factories import bearer, create_agent, create_company, login, unique_slug
from tests.ingest.conftest import ClientFactory, Registered
from tests.ingest.test_clicks import BROWSER, clicks_by_id

RELAY_UA = "python-httpx/0.28.1"
SHOPPER_IP = "198.51.100.23"


def set_policy(settings: Settings, program_id: str, **columns: Any) -> None:
    """Write a program's click-policy columns as the API stores them (before the ingress starts)."""
    assignments = ", ".join(f"{name} = %s" for name in columns)
    with psycopg.connect(settings.postgres_url) as conn:
        conn.execute(
            f"UPDATE programs SET {assignments} WHERE id = %s",  # type: ignore[arg-type]
            (*columns.values(), program_id),
        )


async def pixel(
    client: httpx.AsyncClient, *items: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        "/v1/clicks",
        json={"clicks": list(items)},
        headers={"User-Agent": BROWSER, **(headers or {})},
    )


def redated_total(metrics: str) -> float:
    found = re.search(r'^refstream_ingest_clicks_redated_total\{reason="too_old"\} (\S+)$',
                      metrics, re.MULTILINE)  # fmt: skip
    return float(found.group(1)) if found else 0.0


def recorded(settings: Settings, response: httpx.Response) -> list[ClickEvent]:
    stored = clicks_by_id(settings)
    return [stored[item["click_id"]] for item in response.json()["accepted"]]


async def test_old_pixel_click_is_redated_to_arrival_and_says_so(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    before = redated_total((await client.get("/metrics")).text)
    now = datetime.now(UTC)
    two_days, two_hours = now - timedelta(days=2), now - timedelta(hours=2)
    ahead = now + timedelta(hours=1)
    response = await pixel(
        client,
        {"link_code": registered.link_code, "occurred_at": two_days.isoformat()},
        {"link_code": registered.link_code, "occurred_at": two_hours.isoformat()},
        {"link_code": registered.link_code, "occurred_at": ahead.isoformat()},
    )
    assert response.status_code == 202
    old, recent, future = response.json()["accepted"]
    assert future["redated"] == {"reason": "in_future", "claimed_at": ahead.isoformat()}
    assert old["redated"] == {"reason": "too_old", "claimed_at": two_days.isoformat()}
    assert datetime.fromisoformat(old["occurred_at"]) >= now  # its arrival
    assert "redated" not in recent
    assert datetime.fromisoformat(recent["occurred_at"]) == two_hours
    stored = recorded(stack_settings, response)
    assert [c.occurred_at for c in stored] == [
        datetime.fromisoformat(item["occurred_at"]) for item in (old, recent, future)
    ]
    assert recent["occurred_at"] == two_hours.isoformat()
    assert redated_total((await client.get("/metrics")).text) == before + 1


async def test_program_max_click_age_keeps_a_delayed_batch_time(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    set_policy(stack_settings, registered.program_id, click_max_age_hours=72)
    now = datetime.now(UTC)
    two_days, four_days = now - timedelta(days=2), now - timedelta(days=4)
    async with make_client() as client:
        response = await pixel(
            client,
            {"link_code": registered.link_code, "occurred_at": two_days.isoformat()},
            {"link_code": registered.link_code, "occurred_at": four_days.isoformat()},
        )
    kept, redated = response.json()["accepted"]
    assert "redated" not in kept
    assert redated["redated"]["reason"] == "too_old"
    assert recorded(stack_settings, response)[0].occurred_at == two_days


async def test_program_bot_list_replaces_the_built_in_one(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    set_policy(stack_settings, registered.program_id, bot_user_agents=["acme-uptime"])
    async with make_client() as client:
        verdicts = []
        for agent in (RELAY_UA, "Acme-Uptime/2.0 (+https://acme.example)", "", BROWSER):
            response = await client.post(
                "/v1/clicks", json={"clicks": [{"link_code": registered.link_code}]},
                headers={"User-Agent": agent},
            )  # fmt: skip
            verdicts.append(response.json()["accepted"][0]["bot"])
    # httpx is no bot for this program; its own pattern is; an empty User-Agent always is.
    assert verdicts == [False, True, True, False]


@pytest.mark.parametrize("trust", ["token", "network"])
async def test_trusted_relay_forwards_the_shoppers_user_agent_and_ip(
    trust: str, make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    token = secrets.token_urlsafe(32)
    if trust == "token":
        set_policy(stack_settings, registered.program_id, relay_token_hash=relay_token_hash(token))
    else:  # the test client connects from 203.0.113.7
        set_policy(stack_settings, registered.program_id, relay_ips=["203.0.113.0/24"])
    forwarded = {
        "User-Agent": RELAY_UA,
        "X-Refstream-Forwarded-User-Agent": BROWSER,
        "X-Refstream-Forwarded-For": SHOPPER_IP,
    }
    relay = {**forwarded, "X-Refstream-Relay-Token": token} if trust == "token" else forwarded
    async with make_client() as client:
        response = await pixel(client, {"link_code": registered.link_code}, headers=relay)
        redirect = await client.get(f"/r/{registered.link_code}", headers=relay)
    assert response.status_code == 202
    (item,) = response.json()["accepted"]
    assert (item["bot"], item["relay"]) == (False, "honoured")
    (click,) = recorded(stack_settings, response)
    assert click.user_agent == BROWSER
    assert click.ip_hash == ip_hash(stack_settings.click_ip_salt, SHOPPER_IP)
    assert redirect.status_code == 302
    clid = redirect.cookies["rs_clid"]
    assert not clicks_by_id(stack_settings)[clid].is_bot


async def test_forwarded_headers_of_an_unknown_relay_are_ignored(
    make_client: ClientFactory, registered: Registered, stack_settings: Settings
) -> None:
    set_policy(stack_settings, registered.program_id,
               relay_token_hash=relay_token_hash("r" * 40), relay_ips=["192.0.2.0/24"])  # fmt: skip
    headers = {
        "User-Agent": RELAY_UA,
        "X-Refstream-Forwarded-User-Agent": BROWSER,
        "X-Refstream-Forwarded-For": SHOPPER_IP,
        "X-Refstream-Relay-Token": "w" * 40,
    }
    async with make_client() as client:
        response = await pixel(client, {"link_code": registered.link_code}, headers=headers)
        two_ips = {**headers, "X-Refstream-Forwarded-For": "1.2.3.4, 5.6.7.8"}
        bad_ip = await pixel(client, {"link_code": registered.link_code}, headers=two_ips)
    (item,) = response.json()["accepted"]
    assert (item["bot"], item["relay"]) == (True, "ignored")
    (click,) = recorded(stack_settings, response)
    assert click.user_agent == RELAY_UA
    assert click.ip_hash == ip_hash(stack_settings.click_ip_salt, "203.0.113.7")
    assert bad_ip.status_code == 400
    assert bad_ip.headers["content-type"] == "application/problem+json"
    assert bad_ip.json()["code"] == "bad_request"


async def test_shoppers_behind_one_nat_are_told_apart_by_visitor_id(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    code = registered.link_code
    response = await pixel(
        client,
        {"link_code": code, "visitor_id": "buyer-a"},
        {"link_code": code, "visitor_id": "buyer-b"},
        {"link_code": code, "visitor_id": "buyer-a"},
        {"link_code": code},
        {"link_code": code},
    )
    duplicates = [item["duplicate"] for item in response.json()["accepted"]]
    # Same IP and browser: visitor ids decide; without one, IP+UA still does.
    assert duplicates == [False, False, True, False, True]


async def test_redirects_of_returning_visitors_behind_one_nat_are_two_clicks(
    client: httpx.AsyncClient, registered: Registered, stack_settings: Settings
) -> None:
    ids = []
    for visitor in ("vid-a", "vid-b", "vid-a"):
        client.cookies.clear()  # each shopper's browser sends its own cookie
        response = await client.get(
            f"/r/{registered.link_code}",
            headers={"User-Agent": BROWSER, "Cookie": f"rs_vid={visitor}"},
        )
        ids.append(response.cookies["rs_clid"])
    stored = clicks_by_id(stack_settings)
    assert [stored[i].is_duplicate for i in ids] == [False, False, True]


async def test_pixel_click_id_is_the_documented_derivation(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    response = await pixel(client, {"link_code": registered.link_code, "client_event_id": "px-é1"})
    text = f"{registered.tenant_id}\x1f{registered.link_code}\x1fpx-é1"
    expected = "clk_" + hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    assert response.json()["accepted"][0]["click_id"] == expected
    # The separator cannot be part of an id: a clear 400, not a server error.
    bad = await pixel(client, {"link_code": registered.link_code, "client_event_id": "a\x1fb"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "bad_request"


async def test_a_program_change_through_the_api_reaches_the_running_ingress(
    make_client: ClientFactory, stack_settings: Settings
) -> None:
    secret = SecretStr("test-secret-" + "x" * 40)
    api = create_api(stack_settings.model_copy(update={"jwt_secret": secret}))
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://api") as admin,
    ):
        company = await create_company(admin)
        slug, email = company["company"]["slug"], company["owner_email"]
        token = (await login(admin, company=slug, email=email))["access_token"]
        owner = bearer(token)
        program = await admin.post(
            "/v1/programs", json={"name": "P", "landing_url": "https://s.example/"}, headers=owner
        )
        agent = await create_agent(admin, token, unit_id=company["root_unit_id"])
        code = unique_slug("l")
        link = await admin.post(
            "/v1/links", json={"program_id": program.json()["id"], "agent_id": agent, "code": code},
            headers=owner,
        )  # fmt: skip
        assert link.status_code == 201, link.text

        async with make_client() as ingress:  # started after the link exists

            async def relay_is_bot() -> bool:
                response = await ingress.post(
                    "/v1/clicks",
                    json={"clicks": [{"link_code": code}]},
                    headers={"User-Agent": RELAY_UA},
                )
                verdict: bool = response.json()["accepted"][0]["bot"]
                return verdict

            assert await relay_is_bot()  # the built-in list
            changed = await admin.patch(
                f"/v1/programs/{program.json()['id']}",
                json={"bot_user_agents": ["acme-uptime"]},
                headers=owner,
            )
            assert changed.status_code == 200, changed.text
            # The API announces the change on Redis; the ingress reloads its links and their
            # programs' policies (no database read per request): wait for that reload.
            for _ in range(200):
                if not await relay_is_bot():
                    break
                await asyncio.sleep(0.05)
            assert not await relay_is_bot()


async def test_a_redelivered_pixel_click_is_never_a_duplicate_of_itself(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    batch = [
        {"link_code": registered.link_code, "client_event_id": "px-a", "visitor_id": "v1"},
        {"link_code": registered.link_code, "client_event_id": "px-b", "visitor_id": "v1"},
    ]
    deliveries = [(await pixel(client, *batch)).json()["accepted"] for _ in range(3)]
    # Every delivery of px-a is the visitor's first click; px-b, a second click, is a duplicate.
    assert [[(i["click_id"], i["duplicate"]) for i in d] for d in deliveries] == [
        [(deliveries[0][0]["click_id"], False), (deliveries[0][1]["click_id"], True)]
    ] * 3


def test_relay_trust_needs_the_programs_token_or_network() -> None:
    token = "t" * 40
    policy = ClickPolicy.from_settings(
        max_age_hours=24, bot_user_agents=None, relay_token_hash=relay_token_hash(token),
        relay_ips=["2001:db8::/32", "not-a-network"],
    )  # fmt: skip
    assert relay_trusted(policy, token, None)
    assert relay_trusted(policy, None, "2001:db8::7")
    assert not relay_trusted(policy, "u" * 40, "2001:db9::7")
    assert not relay_trusted(ClickPolicy(), token, "2001:db8::7")  # a program without relays
    assert not relay_trusted(policy, None, "unix-socket")


async def test_duplicates_in_every_arrival_order_with_triple_delivery(
    client: httpx.AsyncClient, registered: Registered
) -> None:
    """Two NAT shoppers (a twice, b once), every order of the three clicks, each delivered three
    times interleaved: one non-duplicate click per visitor, and every delivery of a click gets
    the same verdict."""
    rng = random.Random(14)
    for run, order in enumerate(itertools.permutations([("a", "1"), ("b", "2"), ("a", "3")])):
        deliveries = [*order, *order, *order]
        rng.shuffle(deliveries)
        verdicts: dict[str, set[bool]] = {}
        visitor_of: dict[str, str] = {}
        for visitor, event in deliveries:
            item = {"link_code": registered.link_code, "visitor_id": f"{visitor}-{run}",
                    "client_event_id": f"{event}-{run}"}  # fmt: skip
            (accepted,) = (await pixel(client, item)).json()["accepted"]
            verdicts.setdefault(accepted["click_id"], set()).add(accepted["duplicate"])
            visitor_of[accepted["click_id"]] = visitor
        assert all(len(v) == 1 for v in verdicts.values()), order
        firsts = sorted(visitor_of[c] for c, v in verdicts.items() if v == {False})
        assert (len(verdicts), firsts) == (3, ["a", "b"]), order


@given(
    st.text(max_size=12),
    st.one_of(st.none(), st.text(max_size=40)),
    st.text(min_size=1, max_size=40),
)
def test_a_visitor_fingerprint_is_the_json_spelling_hashed(
    link_code: str, user_agent: str | None, visitor_id: str
) -> None:
    """The plain spelling of the fingerprint's JSON (no `json.dumps` when nothing needs
    escaping) hashes the same text as `json.dumps` of the four parts."""
    text = json.dumps(["visitor", link_code, user_agent or "", visitor_id])
    expected = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    assert fingerprint("ip-digest", user_agent, link_code, visitor_id) == expected
    plain = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\')
    text = json.dumps(["visitor", plain, plain, plain])
    expected = hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
    assert fingerprint(None, plain, plain, plain) == expected


@given(st.text(max_size=100), st.text(min_size=1, max_size=45))
def test_the_ip_hash_is_the_hmac_of_the_address_keyed_by_the_salt(salt: str, ip: str) -> None:
    """`ip_hash` prepares the HMAC's padded key states once per salt (a salt longer than
    SHA-256's 64-byte block is hashed first, as HMAC does): the same digest as `hmac`'s."""
    expected = hmac.digest(salt.encode(), ip.encode(), "sha256").hex()[:32]
    assert ip_hash(salt, ip) == expected
