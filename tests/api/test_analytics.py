"""/v1/analytics against the real ClickHouse server and PostgreSQL: a dataset whose totals are
computed by hand below (three agents, three currencies with fx rates, refunds, replayed rows,
bots, rows outside the period and of another company), read as every role."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import clickhouse_connect
import psycopg
import pytest
from clickhouse_connect.driver.client import Client
from httpx import ASGITransport, AsyncClient

from api.app import create_app
from dataflows.sinks.clickhouse import COLUMNS
from schemas.settings import Settings
from tests.api.factories import World, bearer, build_world, create_company, login

START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
PERIOD = {"from": START.isoformat(), "to": END.isoformat()}
SHOP = "s1.myshopify.com"


def at(day: int, hour: int = 12, minute: int = 0, month: int = 10) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


# --- rows as the dataflow writes them -------------------------------------------------------


def click_row(tenant: str, click_id: str, agent: str | None, link: str, when: datetime,
              *, visitor: str | None = None, bot: bool = False, duplicate: bool = False,
              ) -> dict[str, Any]:  # fmt: skip
    return {
        "tenant_id": tenant, "click_id": click_id, "link_code": link, "program_id": "prg_p",
        "agent_id": agent, "shop": SHOP, "visitor_id": visitor, "occurred_at": when,
        "landing_url": None, "referrer": None, "user_agent": None, "ip_hash": None,
        "is_bot": bot, "is_duplicate": duplicate, "version": 1,
    }  # fmt: skip


def conversion_row(tenant: str, order: str, agent: str | None, when: datetime, revenue: str,
                   *, currency: str = "EUR", fx: str = "1", click: str | None = None,
                   link: str | None = None, coupon: str | None = None, version: int = 1,
                   ) -> dict[str, Any]:  # fmt: skip
    """`link` is the winning click's link (None: no click, or a row written before 0004)."""
    return {
        "tenant_id": tenant, "conversion_id": f"cv_{order}", "shop": SHOP, "order_id": order,
        "order_name": f"#{order}", "occurred_at": when, "attributed_at": when,
        "rule": "last_click" if agent else "unattributed", "agent_id": agent,
        "program_id": "prg_p" if agent else None, "click_id": click, "coupon_code": coupon,
        "customer_id": None, "is_new_customer": False, "currency": currency,
        "revenue": Decimal(revenue), "fx_rate": Decimal(fx), "source_event_id": f"ev_{order}",
        "version": version, "link_code": link, "explanation": "", "rejected": [],
    }  # fmt: skip


def entry_row(tenant: str, entry: str, agent: str, order: str, when: datetime, amount: str,
              *, currency: str = "EUR", fx: str = "1", kind: str = "accrual",
              link: str | None = None, coupon: str | None = None,
              ) -> dict[str, Any]:  # fmt: skip
    """`link`/`coupon`: the order's winning link and coupon, as the dataflow writes them on the
    entry (ClickHouse 0007 backfills older entries from their conversion)."""
    return {
        "tenant_id": tenant, "entry_id": entry, "agent_id": agent, "program_id": "prg_p",
        "conversion_id": f"cv_{order}", "order_id": order, "line_item_id": None, "kind": kind,
        "status": "pending", "level": 0, "amount": Decimal(amount), "currency": currency,
        "fx_rate": Decimal(fx), "rule_id": None, "rule_version": None, "occurred_at": when,
        "source_event_id": f"ev_{entry}", "version": 1, "shop": SHOP, "link_code": link,
        "coupon_code": coupon,
    }  # fmt: skip


def refund_row(tenant: str, refund: str, order: str, when: datetime, amount: str,
               *, currency: str = "EUR") -> dict[str, Any]:  # fmt: skip
    return {
        "tenant_id": tenant, "refund_id": refund, "order_id": order, "shop": SHOP,
        "occurred_at": when, "currency": currency, "amount": Decimal(amount), "fx_rate": None,
        "line_count": 1, "source_event_id": f"ev_{refund}", "version": 1,
    }  # fmt: skip


def insert(client: Client, table: str, rows: list[dict[str, Any]]) -> None:
    columns = COLUMNS[table]
    client.insert(table, [[row[c] for c in columns] for row in rows], column_names=list(columns))


@pytest.fixture
def ch(api_settings: Settings) -> Iterator[Client]:
    target = api_settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, database=target.database
    )
    yield client
    client.close()


@dataclass
class Dataset:
    world: World
    a: str  # Team 1 (EMEA)
    b: str  # APAC
    m: str  # Team 1, linked to the agent-role user
    links: dict[str, str]


def load(ch: Client, world: World, *, linked: bool | None = None) -> Dataset:
    """The dataset; every expected figure in the tests is derived from it in the comments.

    `linked`: whether the click-attributed conversions carry their link (True), none do (False,
    rows written before ClickHouse 0004), or o1 and o4 do and o3 does not (None: both kinds)."""
    t = world.company_id
    a, b, m = world.team_agent_id, world.other_region_agent_id, world.own_agent_id
    u = uuid.uuid4().hex[:8]
    la, lb, lm = f"la-{u}", f"lb-{u}", f"lm-{u}"
    o = {name: f"{name}-{u}" for name in ("o1", "o2", "o3", "o4", "o5", "o6")}
    clicks = [
        # a: 4 counted clicks (visitors v1, v1, v2, none) + bot, duplicate, out of period
        click_row(t, f"ca1-{u}", a, la, at(2), visitor="v1"),
        click_row(t, f"ca2-{u}", a, la, at(3), visitor="v1"),
        click_row(t, f"ca3-{u}", a, la, at(4), visitor="v2"),
        click_row(t, f"ca4-{u}", a, la, at(5)),
        click_row(t, f"cab-{u}", a, la, at(5), visitor="bot", bot=True),
        click_row(t, f"cad-{u}", a, la, at(5), visitor="dup", duplicate=True),
        click_row(t, f"cao-{u}", a, la, at(5, month=9), visitor="old"),
        # b: 2 clicks (v3, v4); m: 2 clicks (v1, v5); a click without agent
        click_row(t, f"cb1-{u}", b, lb, at(6), visitor="v3"),
        click_row(t, f"cb2-{u}", b, lb, at(7), visitor="v4"),
        click_row(t, f"cm1-{u}", m, lm, at(8), visitor="v1"),
        click_row(t, f"cm2-{u}", m, lm, at(9), visitor="v5"),
        click_row(t, f"cx-{u}", None, la, at(9), visitor="v9"),
    ]
    insert(ch, "clicks", clicks)
    insert(ch, "clicks", clicks[:4])  # replayed: must not count twice

    def link(code: str, *, mixed: bool = True) -> str | None:
        return code if (linked is None and mixed) or linked else None

    conversions = [
        # o1: a, 100.00 EUR, cites a's click on link la
        conversion_row(t, o["o1"], a, at(5, 10), "100.00", click=f"ca1-{u}", link=link(la)),
        # o2: a, 80 USD then edited to 50 USD (version 2) at 0.9 -> 45.00 EUR, coupon ACODE
        conversion_row(t, o["o2"], a, at(6), "80.00", currency="USD", fx="0.9",
                       coupon=f"ACODE{u}".upper()),
        conversion_row(t, o["o2"], a, at(6), "50.00", currency="USD", fx="0.9",
                       coupon=f"ACODE{u}".upper(), version=2),
        # o3: b, 20.00 GBP at 1.15 -> 23.00 EUR, late on the last day (UTC)
        conversion_row(t, o["o3"], b, at(31, 23, 30), "20.00", currency="GBP", fx="1.15",
                       click=f"cb1-{u}", link=link(lb, mixed=False)),
        # o4: m, 10.00 EUR on link lm
        conversion_row(t, o["o4"], m, at(10), "10.00", click=f"cm1-{u}", link=link(lm)),
        # o5: unattributed (not counted); o6: a, in September (out of period)
        conversion_row(t, o["o5"], None, at(10), "999.00"),
        conversion_row(t, o["o6"], a, at(15, month=9), "70.00"),
    ]  # fmt: skip
    insert(ch, "conversions", conversions)
    insert(ch, "conversions", conversions[:1])  # replayed
    coupon = f"ACODE{u}".upper()
    entries = [
        entry_row(t, f"e1-{u}", a, o["o1"], at(5, 10), "10.00", link=la),
        entry_row(
            t, f"e2-{u}", a, o["o2"], at(6), "5.00", currency="USD", fx="0.9", coupon=coupon
        ),  # 4.50
        entry_row(t, f"e3-{u}", m, o["o1"], at(5, 10), "0.50", link=la),  # m's override on o1
        entry_row(
            t, f"e4-{u}", b, o["o3"], at(31, 23, 30), "2.00", currency="GBP", fx="1.15", link=lb
        ),
        entry_row(t, f"e5-{u}", m, o["o4"], at(10), "1.00", link=lm),
        entry_row(t, f"e6-{u}", a, o["o1"], at(20), "-5.00", kind="adjustment", link=la),  # refund
        entry_row(t, f"e7-{u}", a, o["o6"], at(15, month=9), "7.00"),  # out of period
        entry_row(t, f"e8-{u}", a, o["o6"], at(15), "-7.00", kind="adjustment"),
    ]
    insert(ch, "commission_events", entries)
    insert(ch, "commission_events", entries[:2])  # replayed
    refunds = [
        refund_row(t, f"r1-{u}", o["o1"], at(20), "50.00"),  # 50.00
        refund_row(t, f"r2-{u}", o["o2"], at(21), "10.00", currency="USD"),  # x 0.9 = 9.00
        refund_row(t, f"r3-{u}", o["o6"], at(15), "70.00"),  # September order, October refund
        refund_row(t, f"r4-{u}", o["o5"], at(15), "30.00"),  # unattributed order
        refund_row(t, f"r5-{u}", o["o1"], at(5, month=11), "1.00"),  # after the period
    ]
    insert(ch, "refunds", refunds)
    insert(ch, "refunds", refunds[:1])  # replayed
    return Dataset(world=world, a=a, b=b, m=m, links={"a": la, "b": lb, "m": lm})


def set_company(owner_url: str, tenant_id: str, *, timezone: str, currency: str = "EUR") -> None:
    """The company's timezone and currency (no API changes them: set up as the owner)."""
    with psycopg.connect(owner_url) as conn:
        conn.execute(
            "UPDATE tenants SET timezone = %s, currency = %s WHERE id = %s",
            (timezone, currency, tenant_id),
        )


@pytest.fixture
async def data(client: AsyncClient, ch: Client, pg_owner_url: str) -> Dataset:
    world = await build_world(client)
    set_company(pg_owner_url, world.company_id, timezone="Europe/Berlin")
    return load(ch, world)


async def get(client: AsyncClient, token: str, path: str, **params: Any) -> Any:
    response = await client.get(f"/v1/analytics/{path}", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return response.json()


def figures(body: dict[str, Any]) -> dict[str, Any]:
    keys = ("clicks", "unique_visitors", "conversions", "conversion_rate", "revenue", "refunds",
            "refunded_revenue", "commission", "epc")  # fmt: skip
    return {k: body[k] for k in keys}


ZERO = {
    "clicks": 0, "unique_visitors": 0, "conversions": 0, "conversion_rate": None,
    "revenue": "0.00", "refunds": 0, "refunded_revenue": "0.00", "commission": "0.00",
    "epc": None,
}  # fmt: skip


async def test_owner_summary_counts_every_agent_once_in_the_reporting_currency(
    client: AsyncClient, data: Dataset
) -> None:
    body = await get(client, data.world.tokens["owner"], "summary", **PERIOD)

    # clicks 4 + 2 + 2; visitors v1..v5; conversions o1..o4: 100 + 45 + 23 + 10;
    # commission 10 + 4.50 + 0.50 + 2.30 + 1 - 5 - 7; refunds r1..r3: 50 + 9 + 70
    assert figures(body) == {
        "clicks": 8, "unique_visitors": 5, "conversions": 4, "conversion_rate": "0.5000",
        "revenue": "178.00", "refunds": 3, "refunded_revenue": "129.00",
        "commission": "6.30", "epc": "0.7875",
    }  # fmt: skip
    assert (body["currency"], body["timezone"]) == ("EUR", "Europe/Berlin")
    assert (body["from"], body["to"]) == ("2026-10-01T00:00:00Z", "2026-11-01T00:00:00Z")


async def test_manager_sees_the_subtree_and_an_agent_only_their_own_rows(
    client: AsyncClient, data: Dataset
) -> None:
    tokens = data.world.tokens
    manager = await get(client, tokens["manager"], "summary", **PERIOD)
    # EMEA = a and m: clicks 6, visitors v1 v2 v5, o1 o2 o4 = 155, commission 10 + 4.5 + 0.5
    # + 1 - 5 - 7 = 4.00, refunds of a's orders r1 r2 r3
    assert figures(manager) == {
        "clicks": 6, "unique_visitors": 3, "conversions": 3, "conversion_rate": "0.5000",
        "revenue": "155.00", "refunds": 3, "refunded_revenue": "129.00",
        "commission": "4.00", "epc": "0.6667",
    }  # fmt: skip
    for role in ("operator", "observer"):
        assert figures(await get(client, tokens[role], "summary", **PERIOD)) == figures(manager)

    # The agent user: m's clicks and o4, commission 0.50 (override) + 1.00, no refunds.
    mine = {
        "clicks": 2, "unique_visitors": 2, "conversions": 1, "conversion_rate": "0.5000",
        "revenue": "10.00", "refunds": 0, "refunded_revenue": "0.00", "commission": "1.50",
        "epc": "0.7500",
    }  # fmt: skip
    assert figures(await get(client, tokens["agent"], "summary", **PERIOD)) == mine
    assert figures(await get(client, tokens["agent"], "me", **PERIOD)) == mine
    # Filters never widen the reach: other agents' rows come back empty, not as an error.
    for role, agent in (("agent", data.a), ("manager", data.b)):
        body = await get(client, tokens[role], "summary", agent_id=agent, **PERIOD)
        assert figures(body) == ZERO
    outside = await get(
        client, tokens["manager"], "summary", unit_id=data.world.other_region_unit_id, **PERIOD
    )
    assert figures(outside) == ZERO


async def test_another_company_sees_nothing_and_me_is_for_agents(
    client: AsyncClient, data: Dataset
) -> None:
    other = await create_company(client)
    token = (await login(client, company=other["company"]["slug"], email=other["owner_email"]))[
        "access_token"
    ]
    body = await get(client, token, "summary", agent_id=data.a, **PERIOD)
    assert figures(body) == ZERO
    ranked = await get(client, token, "breakdown", by="agent", **PERIOD)
    assert ranked["items"] == []
    for role in ("owner", "manager", "observer"):
        response = await client.get(
            "/v1/analytics/me", params=PERIOD, headers=bearer(data.world.tokens[role])
        )
        assert response.status_code == 403
        assert response.headers["content-type"] == "application/problem+json"


async def test_filters_on_coupon_link_unit_and_agent(client: AsyncClient, data: Dataset) -> None:
    owner = data.world.tokens["owner"]
    coupon = await get(client, owner, "summary", coupon_code=f"acode{data.links['a'][3:]}",
                       **PERIOD)  # fmt: skip
    # o2 only (coupons are matched upper-case); clicks carry no coupon; its refund r2.
    assert figures(coupon) == {
        "clicks": 0, "unique_visitors": 0, "conversions": 1, "conversion_rate": None,
        "revenue": "45.00", "refunds": 1, "refunded_revenue": "9.00", "commission": "4.50",
        "epc": None,
    }  # fmt: skip
    link = await get(client, owner, "summary", link_code=data.links["a"], **PERIOD)
    # la: a's 4 clicks, o1 (cites ca1), commission on o1: 10 + 0.50 (m) - 5, refund r1
    assert figures(link) == {
        "clicks": 4, "unique_visitors": 2, "conversions": 1, "conversion_rate": "0.2500",
        "revenue": "100.00", "refunds": 1, "refunded_revenue": "50.00", "commission": "5.50",
        "epc": "1.3750",
    }  # fmt: skip
    apac = await get(client, owner, "summary", unit_id=data.world.other_region_unit_id, **PERIOD)
    assert (apac["clicks"], apac["conversions"], apac["revenue"], apac["commission"]) == (
        2, 1, "23.00", "2.30"
    )  # fmt: skip
    agent_b = await get(client, owner, "summary", agent_id=data.b, shop=SHOP, **PERIOD)
    assert figures(agent_b) == figures(apac)
    assert figures(await get(client, owner, "summary", shop="nope.example", **PERIOD)) == ZERO


async def test_breakdown_by_agent_pages_with_a_cursor_and_labels(
    client: AsyncClient, data: Dataset
) -> None:
    owner = data.world.tokens["owner"]
    first = await get(client, owner, "breakdown", by="agent", limit=2, **PERIOD)
    second = await get(client, owner, "breakdown", by="agent", limit=2,
                       cursor=first["next_cursor"], **PERIOD)  # fmt: skip
    assert second["next_cursor"] is None
    items = first["items"] + second["items"]
    assert [(i["key"], i["label"]) for i in items] == [
        (data.a, "Team agent"), (data.b, "APAC"), (data.m, "Me")
    ]  # fmt: skip
    assert [(i["clicks"], i["conversions"], i["revenue"], i["commission"], i["epc"])
            for i in items] == [
        (4, 2, "145.00", "2.50", "0.6250"),  # 10 + 4.50 - 5 - 7
        (2, 1, "23.00", "2.30", "1.1500"),
        (2, 1, "10.00", "1.50", "0.7500"),
    ]  # fmt: skip
    bad = await client.get(
        "/v1/analytics/breakdown",
        params={"by": "program", "cursor": first["next_cursor"]},
        headers=bearer(owner),
    )
    assert bad.status_code == 400


async def test_breakdown_by_unit_program_shop_link_and_coupon(
    client: AsyncClient, data: Dataset
) -> None:
    owner, w = data.world.tokens["owner"], data.world

    async def rows(by: str, token: str = owner) -> list[tuple[Any, ...]]:
        body = await get(client, token, "breakdown", by=by, **PERIOD)
        return [(i["key"], i["clicks"], i["conversions"], i["revenue"], i["commission"])
                for i in body["items"]]  # fmt: skip

    assert await rows("unit") == [
        (w.team_unit_id, 6, 3, "155.00", "4.00"),
        (w.other_region_unit_id, 2, 1, "23.00", "2.30"),
    ]
    assert await rows("unit", w.tokens["manager"]) == [(w.team_unit_id, 6, 3, "155.00", "4.00")]
    assert await rows("program") == [("prg_p", 8, 4, "178.00", "6.30")]
    # Commission reaches shops, links and coupons through the entry's conversion (o6 included).
    assert await rows("shop") == [(SHOP, 8, 4, "178.00", "6.30")]
    la, lb, lm = data.links["a"], data.links["b"], data.links["m"]
    assert await rows("link") == [
        (la, 4, 1, "100.00", "5.50"), (lb, 2, 1, "23.00", "2.30"), (lm, 2, 1, "10.00", "1.00")
    ]  # fmt: skip
    coupon = f"ACODE{la[3:]}".upper()
    assert await rows("coupon") == [(coupon, 0, 1, "45.00", "4.50")]
    # The agent's own rows: m's clicks and o4 on lm, and m's override on a's o1 (link la).
    assert await rows("link", w.tokens["agent"]) == [
        (lm, 2, 1, "10.00", "1.00"), (la, 0, 0, "0.00", "0.50")
    ]  # fmt: skip


@pytest.mark.parametrize("linked", [True, False], ids=["link-on-rows", "rows-before-0004"])
async def test_link_figures_are_the_same_whether_conversions_carry_their_link_or_not(
    client: AsyncClient, ch: Client, pg_owner_url: str, linked: bool
) -> None:
    world = await build_world(client)
    set_company(pg_owner_url, world.company_id, timezone="Europe/Berlin")
    data = load(ch, world, linked=linked)
    tenant, owner = world.company_id, world.tokens["owner"]
    order = next(iter(data.links.values()))[3:]  # the dataset's suffix
    # o1 edited after an upgrade by a decision restored from an older recovery snapshot: the
    # new version has no link_code (whatever the old one had); its click still decides.
    edited = conversion_row(tenant, f"o1-{order}", data.a, at(5, 10), "100.00",
                            click=f"ca1-{order}", version=3)  # fmt: skip
    insert(ch, "conversions", [edited])
    la, lb, lm = data.links["a"], data.links["b"], data.links["m"]

    body = await get(client, owner, "breakdown", by="link", **PERIOD)
    assert [(i["key"], i["clicks"], i["conversions"], i["revenue"], i["commission"])
            for i in body["items"]] == [
        (la, 4, 1, "100.00", "5.50"), (lb, 2, 1, "23.00", "2.30"), (lm, 2, 1, "10.00", "1.00")
    ]  # fmt: skip
    summary = await get(client, owner, "summary", link_code=la, **PERIOD)
    assert (summary["conversions"], summary["revenue"], summary["refunds"],
            summary["refunded_revenue"], summary["commission"]) == (
        1, "100.00", 1, "50.00", "5.50"
    )  # fmt: skip
    for code, revenue in ((lb, "23.00"), (lm, "10.00")):
        one = await get(client, owner, "summary", link_code=code, **PERIOD)
        assert (one["conversions"], one["revenue"]) == (1, revenue)


async def test_the_link_on_the_conversion_row_decides_without_its_click_row(
    client: AsyncClient, ch: Client, data: Dataset
) -> None:
    # A conversion whose click row is not in ClickHouse (only the dataflow's state had it): the
    # lookup by click id finds nothing, the link written on the row still counts it.
    tenant, u = data.world.company_id, uuid.uuid4().hex[:8]
    lz, order = f"lz-{u}", f"oz-{u}"
    insert(ch, "conversions", [conversion_row(tenant, order, data.b, at(12), "7.00",
                                              click=f"cz-{u}", link=lz)])  # fmt: skip
    insert(ch, "commission_events",
           [entry_row(tenant, f"ez-{u}", data.b, order, at(12), "0.70", link=lz)])  # fmt: skip
    owner = data.world.tokens["owner"]
    body = await get(client, owner, "breakdown", by="link", **PERIOD)
    assert [(i["conversions"], i["revenue"], i["commission"]) for i in body["items"]
            if i["key"] == lz] == [(1, "7.00", "0.70")]  # fmt: skip
    summary = await get(client, owner, "summary", link_code=lz, **PERIOD)
    assert (summary["clicks"], summary["conversions"], summary["revenue"],
            summary["commission"]) == (0, 1, "7.00", "0.70")  # fmt: skip


async def test_top_agents_by_each_metric(client: AsyncClient, data: Dataset) -> None:
    owner = data.world.tokens["owner"]

    async def keys(metric: str, limit: int = 10) -> list[str]:
        body = await get(client, owner, "top-agents", metric=metric, limit=limit, **PERIOD)
        return [i["key"] for i in body["items"]]

    assert await keys("revenue") == [data.a, data.b, data.m]
    assert await keys("commission") == [data.a, data.b, data.m]
    assert await keys("conversions") == [data.a, *sorted([data.b, data.m])]
    assert await keys("revenue", limit=1) == [data.a]
    body = await get(client, data.world.tokens["agent"], "top-agents", **PERIOD)
    assert [(i["key"], i["label"]) for i in body["items"]] == [(data.m, "Me")]


async def test_day_buckets_follow_the_company_time_zone(
    client: AsyncClient, data: Dataset, pg_owner_url: str
) -> None:
    owner, tenant = data.world.tokens["owner"], data.world.company_id
    window = {"from": "2026-10-30T00:00:00Z", "to": "2026-11-02T00:00:00Z", "bucket": "day"}

    def by_day(body: dict[str, Any]) -> dict[str, tuple[int, str]]:
        return {p["t"]: (p["conversions"], p["revenue"]) for p in body["points"] if p["clicks"]
                or p["conversions"]}  # fmt: skip

    # o3 at 2026-10-31 23:30 UTC: 00:30 on Nov 1 in Berlin (CET after the Oct 25 DST change) ...
    berlin = await get(client, owner, "timeseries", **window)
    assert berlin["timezone"] == "Europe/Berlin"
    assert [p["t"] for p in berlin["points"]] == [
        "2026-10-30T00:00:00+01:00", "2026-10-31T00:00:00+01:00", "2026-11-01T00:00:00+01:00",
        "2026-11-02T00:00:00+01:00",
    ]  # fmt: skip
    assert by_day(berlin) == {"2026-11-01T00:00:00+01:00": (1, "23.00")}
    # ... and 19:30 on Oct 31 in New York.
    set_company(pg_owner_url, tenant, timezone="America/New_York")
    new_york = await get(client, owner, "timeseries", **window)
    assert by_day(new_york) == {"2026-10-31T00:00:00-04:00": (1, "23.00")}


async def test_timeseries_points_cover_the_period_and_sum_to_the_summary(
    client: AsyncClient, data: Dataset
) -> None:
    owner = data.world.tokens["owner"]
    body = await get(client, owner, "timeseries", bucket="hour", **PERIOD)
    points = body["points"]
    # 744 hours (the DST change on Oct 25 repeats a local hour, not an absolute one), starting
    # at the local hour holding 2026-10-01T00:00Z (02:00 CEST).
    assert len(points) == 31 * 24
    assert points[0]["t"] == "2026-10-01T02:00:00+02:00"
    assert sum(p["clicks"] for p in points) == 8
    assert sum(Decimal(p["revenue"]) for p in points) == Decimal("178.00")
    assert sum(Decimal(p["commission"]) for p in points) == Decimal("6.30")
    window = {"from": "2026-10-05T10:00:00Z", "to": "2026-10-05T10:03:00Z"}
    minute = await get(client, owner, "timeseries", bucket="minute", **window)
    assert [(p["t"], p["conversions"]) for p in minute["points"]] == [
        ("2026-10-05T12:00:00+02:00", 1), ("2026-10-05T12:01:00+02:00", 0),
        ("2026-10-05T12:02:00+02:00", 0),
    ]  # fmt: skip

    too_long = await client.get(
        "/v1/analytics/timeseries", params={"bucket": "minute", **PERIOD}, headers=bearer(owner)
    )
    assert too_long.status_code == 422
    assert too_long.headers["content-type"] == "application/problem+json"
    assert too_long.json()["type"].endswith("range-too-large")


async def test_default_period_is_the_last_30_days_and_bad_periods_are_problems(
    client: AsyncClient, data: Dataset
) -> None:
    owner = data.world.tokens["owner"]
    body = await get(client, owner, "summary")
    end = datetime.fromisoformat(body["to"])
    assert end - datetime.fromisoformat(body["from"]) == timedelta(days=30)
    assert abs(datetime.now(UTC) - end) < timedelta(minutes=5)
    for params in ({"from": "2026-10-02T00:00:00Z", "to": "2026-10-01T00:00:00Z"},
                   {"from": "2026-10-01T00:00:00"}, {"bucket": "week"}):  # fmt: skip
        response = await client.get(
            "/v1/analytics/timeseries", params=params, headers=bearer(owner)
        )
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"


async def test_analytics_answers_503_while_clickhouse_is_unreachable(
    api_settings: Settings, pg_url: str, redis_url: str
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = Settings(
        postgres_url=pg_url, redis_url=redis_url, jwt_secret=api_settings.jwt_secret,
        clickhouse_url=f"http://default:@127.0.0.1:{port}/nowhere",
    )  # fmt: skip
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            world = await build_world(client)  # the rest of the API works without ClickHouse
            response = await client.get(
                "/v1/analytics/summary", headers=bearer(world.tokens["owner"])
            )
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("analytics-unavailable")
