"""/v1/conversions against the real ClickHouse server and PostgreSQL: decided orders (attributed
and not, one written before decisions were stored, one replayed, one of another company) read
as every kind of caller, with the reach, redaction, filters, pagination and errors checked."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from httpx import AsyncClient

from dataflows.sinks.clickhouse import COLUMNS
from schemas.settings import Settings
from tests.api.factories import World, bearer, build_world, create_company, login

T = datetime(2026, 10, 10, 12, 0, tzinfo=UTC)


def rejected(
    kind: str, ref: str, agent: str | None, code: str, reason: str,
    *, at: datetime | None = None, link: str | None = None,
) -> tuple[Any, ...]:  # fmt: skip
    return (kind, ref, agent, "prg_p", link, at, code, reason)


def row(tenant: str, order: str, agent: str | None, when: datetime, *, rule: str,
        click: str | None = None, link: str | None = None, coupon: str | None = None,
        explanation: str = "", rejects: list[tuple[Any, ...]] | None = None,
        ) -> dict[str, Any]:  # fmt: skip
    """A `conversions` row as the dataflow writes it (0006 columns included)."""
    return {
        "tenant_id": tenant, "conversion_id": f"cv_{order}", "shop": "s1.myshopify.com",
        "order_id": order, "order_name": f"#{order}", "occurred_at": when,
        "attributed_at": when + timedelta(seconds=2), "rule": rule, "agent_id": agent,
        "program_id": "prg_p" if agent else None, "click_id": click, "coupon_code": coupon,
        "customer_id": "cust_1", "is_new_customer": True, "currency": "EUR",
        "revenue": Decimal("120.5"), "fx_rate": Decimal(1), "source_event_id": f"ev_{order}",
        "version": 1, "link_code": link, "explanation": explanation, "rejected": rejects or [],
    }  # fmt: skip


def insert(client: Client, rows: list[dict[str, Any]]) -> None:
    columns = COLUMNS["conversions"]
    client.insert("conversions", [[r[c] for c in columns] for r in rows],
                  column_names=list(columns))  # fmt: skip


@pytest.fixture
def ch(api_settings: Settings) -> Iterator[Client]:
    target = api_settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    yield client
    client.close()


@dataclass
class Orders:
    world: World
    o: dict[str, str]  # name -> order id
    click_b: str


def load(ch: Client, world: World) -> Orders:
    """o1: Team agent a by coupon, beating APAC agent b's click and a click without agent;
    o2: the agent user's own agent m by click, beating a's click; o3: unattributed (a's bot
    click, b's self-referral coupon); o4: b by click; o5: a, written before 0006 (no decision).
    Newest first: o5, o4, o3, o2, o1."""
    t, u = world.company_id, uuid.uuid4().hex[:8]
    a, b, m = world.team_agent_id, world.other_region_agent_id, world.own_agent_id
    o = {name: f"{name}-{u}" for name in ("o1", "o2", "o3", "o4", "o5")}
    cb, ca, cm, cx = f"cb-{u}", f"ca-{u}", f"cm-{u}", f"cx-{u}"
    rows = [
        row(t, o["o1"], a, T, rule="coupon", coupon="CA",
            explanation=f"coupon CA owned by agent {a} beats click {cb} of agent {b}"
                        " (coupon_beats_cookie)",
            rejects=[rejected("click", cx, None, "no_agent", "click has no agent",
                              at=T - timedelta(days=2)),
                     rejected("click", cb, b, "coupon_wins", "coupon CA wins (coupon_beats_cookie)",
                              at=T - timedelta(days=1), link="lb")]),
        row(t, o["o2"], m, T + timedelta(hours=1), rule="last_click", click=cm, link="lm",
            explanation=f"last_click click {cm} of agent {m} via link lm, 0 d 3 h before the order"
                        " (lookback 30 d)",
            rejects=[rejected("click", ca, a, "attribution_model",
                              f"last_click: click {cm} is later", at=T, link="la")]),
        row(t, o["o3"], None, T + timedelta(hours=2), rule="unattributed",
            explanation="no eligible binding, coupon or click (2 candidates rejected)",
            rejects=[rejected("coupon", "CB", b, "self_referral",
                              f"self-referral: agent {b} is the buyer (same email)"),
                     rejected("click", ca, a, "bot", "bot click", at=T, link="la")]),
        row(t, o["o4"], b, T + timedelta(hours=3), rule="last_click", click=cb, link="lb",
            explanation=f"last_click click {cb} of agent {b} via link lb"),
        row(t, o["o5"], a, T + timedelta(hours=4), rule="last_click", click=ca, link="la"),
    ]  # fmt: skip
    insert(ch, rows)
    insert(ch, rows[:1])  # replayed: still one order
    # Another company with the same order id: never visible here.
    insert(ch, [row(f"other-{u}", o["o1"], "agt_x", T, rule="coupon", coupon="X")])
    return Orders(world, o, cb)


async def get(client: AsyncClient, token: str, path: str = "", **params: Any) -> Any:
    response = await client.get(f"/v1/conversions{path}", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def orders_of(page: dict[str, Any]) -> list[str]:
    return [item["order_id"] for item in page["items"]]


async def test_the_owner_sees_every_decided_order_with_its_decision(
    client: AsyncClient, ch: Client
) -> None:
    data = load(ch, await build_world(client))
    owner, o = data.world.tokens["owner"], data.o
    page = await get(client, owner)
    assert orders_of(page) == [o["o5"], o["o4"], o["o3"], o["o2"], o["o1"]]
    assert page["next_cursor"] is None

    one = await get(client, owner, f"/{o['o1']}")
    assert one == page["items"][-1]
    a, b = data.world.team_agent_id, data.world.other_region_agent_id
    assert (one["status"], one["rule"], one["agent_id"], one["revenue"], one["currency"]) == (
        "attributed", "coupon", a, "120.50", "EUR",
    )  # fmt: skip
    assert one["winner"] == {"kind": "coupon", "ref": "CA", "agent_id": a,
                             "program_id": "prg_p", "link_code": None}  # fmt: skip
    assert one["explanation"] == (
        f"coupon CA owned by agent {a} beats click {data.click_b} of agent {b}"
        " (coupon_beats_cookie)"
    )
    assert [(r["kind"], r["agent_id"], r["code"], r["reason"], r["redacted"])
            for r in one["rejected"]] == [
        ("click", None, "no_agent", "click has no agent", False),
        ("click", b, "coupon_wins", "coupon CA wins (coupon_beats_cookie)", False),
    ]  # fmt: skip
    assert one["rejected"][1]["at"] == "2026-10-09T12:00:00Z"
    assert one["explained"] is True

    unattributed = await get(client, owner, f"/{o['o3']}")
    assert (unattributed["status"], unattributed["rule"], unattributed["winner"]) == (
        "unattributed", "unattributed", None,
    )  # fmt: skip
    assert [r["code"] for r in unattributed["rejected"]] == ["self_referral", "bot"]
    legacy = await get(client, owner, f"/{o['o5']}")
    assert (legacy["explained"], legacy["explanation"], legacy["rejected"]) == (False, "", [])
    assert legacy["winner"]["kind"] == "click"
    assert legacy["winner"]["link_code"] == "la"


async def test_filters_narrow_and_pages_follow_each_other(client: AsyncClient, ch: Client) -> None:
    data = load(ch, await build_world(client))
    owner, o, w = data.world.tokens["owner"], data.o, data.world
    assert orders_of(await get(client, owner, status="unattributed")) == [o["o3"]]
    assert orders_of(await get(client, owner, status="attributed")) == [
        o["o5"], o["o4"], o["o2"], o["o1"],
    ]  # fmt: skip
    assert orders_of(await get(client, owner, agent_id=w.team_agent_id)) == [o["o5"], o["o1"]]
    assert orders_of(await get(client, owner, order=o["o2"])) == [o["o2"]]
    assert orders_of(await get(client, owner, order=f"#{o['o4']}")) == [o["o4"]]
    window = {"from": (T + timedelta(hours=1)).isoformat(),
              "to": (T + timedelta(hours=3)).isoformat()}  # fmt: skip
    assert orders_of(await get(client, owner, **window)) == [o["o3"], o["o2"]]
    assert orders_of(await get(client, owner, agent_id="agt_unknown")) == []
    assert orders_of(await get(client, owner, program_id="prg_p", agent_id=w.own_agent_id)) == [
        o["o2"]
    ]
    assert orders_of(await get(client, owner, program_id="prg_other")) == []

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(4):
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = await get(client, owner, **params)
        seen += orders_of(page)
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [o["o5"], o["o4"], o["o3"], o["o2"], o["o1"]]


async def test_pages_reach_orders_older_than_every_window(client: AsyncClient, ch: Client) -> None:
    """The list reads the last day first and widens: an order years back still comes, last."""
    data = load(ch, await build_world(client))
    w, o = data.world, data.o
    old = f"old-{uuid.uuid4().hex[:8]}"
    insert(ch, [row(w.company_id, old, w.team_agent_id, T - timedelta(days=800),
                    rule="last_click")])  # fmt: skip
    owner = w.tokens["owner"]
    everything = [o["o5"], o["o4"], o["o3"], o["o2"], o["o1"], old]
    assert orders_of(await get(client, owner)) == everything
    first = await get(client, owner, limit=5)
    assert orders_of(first) == everything[:5]
    assert orders_of(await get(client, owner, limit=5, cursor=first["next_cursor"])) == [old]
    mine = await get(client, w.tokens["manager"], agent_id=w.team_agent_id)
    assert orders_of(mine) == [o["o5"], o["o1"], old]


async def test_staff_below_the_root_and_agents_see_only_orders_credited_in_their_reach(
    client: AsyncClient, ch: Client
) -> None:
    data = load(ch, await build_world(client))
    w, o = data.world, data.o
    a, b, m = w.team_agent_id, w.other_region_agent_id, w.own_agent_id
    for role in ("manager", "observer", "operator"):  # EMEA: a and m, never unattributed
        page = await get(client, w.tokens[role])
        assert orders_of(page) == [o["o5"], o["o2"], o["o1"]], role
        assert orders_of(await get(client, w.tokens[role], status="unattributed")) == []
        assert orders_of(await get(client, w.tokens[role], agent_id=b)) == []
    one = await get(client, w.tokens["manager"], f"/{o['o1']}")
    # b is outside EMEA: its click shows as a click that lost to a coupon, naming nobody, and
    # the explanation that named it is replaced by the winner in generic words.
    assert one["rejected"][1] == {
        "kind": "click", "ref": None, "agent_id": None, "program_id": "prg_p",
        "link_code": None, "at": None, "code": "coupon_wins",
        "reason": "a coupon wins (coupon_beats_cookie)", "redacted": True,
    }  # fmt: skip
    assert one["rejected"][0]["redacted"] is False  # a click without agent names nobody
    assert one["explanation"] == f"coupon CA owned by agent {a}"
    assert b not in str(one)
    assert data.click_b not in str(one)

    agent = w.tokens["agent"]  # linked to m only
    assert orders_of(await get(client, agent)) == [o["o2"]]
    mine = await get(client, agent, f"/{o['o2']}")
    assert [(r["code"], r["redacted"], r["agent_id"]) for r in mine["rejected"]] == [
        ("attribution_model", True, None),
    ]
    assert a not in str(mine)
    assert mine["explanation"].startswith(f"last_click click {mine['winner']['ref']} of agent {m}")
    for hidden in ("o1", "o3", "o4"):
        response = await client.get(f"/v1/conversions/{o[hidden]}", headers=bearer(agent))
        assert response.status_code == 404, hidden
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["type"].endswith("not-found")
    manager_404 = await client.get(
        f"/v1/conversions/{o['o4']}", headers=bearer(w.tokens["manager"])
    )
    assert manager_404.status_code == 404


async def test_another_company_sees_none_of_it(client: AsyncClient, ch: Client) -> None:
    data = load(ch, await build_world(client))
    other = await create_company(client)
    token = (await login(client, company=other["company"]["slug"],
                         email=other["owner_email"]))["access_token"]  # fmt: skip
    assert orders_of(await get(client, token)) == []
    response = await client.get(f"/v1/conversions/{data.o['o1']}", headers=bearer(token))
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"status": "credited"}, 422),
        ({"from": "2026-10-01T00:00:00"}, 422),  # no offset
        ({"limit": 0}, 422),
        ({"cursor": "not-a-cursor"}, 400),
        ({"unknown": "x"}, 422),
    ],
)
async def test_bad_input_is_a_problem(
    client: AsyncClient, params: dict[str, Any], status: int
) -> None:
    world = await build_world(client)
    response = await client.get(
        "/v1/conversions", params=params, headers=bearer(world.tokens["owner"])
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status


def test_the_routes_are_documented(app: Any) -> None:
    paths = app.openapi()["paths"]
    listing = paths["/v1/conversions"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {
        "order", "agent_id", "program_id", "status", "from", "to", "cursor", "limit",
    }  # fmt: skip
    detail = paths["/v1/conversions/{order_id}"]["get"]
    assert "404" in detail["responses"]
    schema = app.openapi()["components"]["schemas"]["RejectedRead"]
    assert set(schema["properties"]) >= {"kind", "ref", "code", "reason", "redacted"}
