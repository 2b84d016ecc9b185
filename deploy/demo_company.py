"""The demo company, set up through the public interfaces as a merchant would.

`set_up` signs the company up through the API (`POST /v1/companies`), logs in as its owner and
creates what is missing: two teams under the root unit, a manager on the first team, a program
with its commission rules, four agents (two per team) with a referral link and a coupon each,
and the Shopify shop (a claim that the first signed webhook proves); the Odoo endpoint comes
from `refstream odoo add-endpoint`'s function (the API has no route for it). Every API call is
audited, so the company's audit log shows the setup. Re-running it on the same stack reuses the
company and everything it finds by name or code; only the shop's webhook secret is rotated (it
is write-only, so a run cannot read the old one) and a new Odoo token is made.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from ingest.cli import create_erp_endpoint
from schemas.settings import Settings

COMPANY = "demo"  # the demo company's slug (its `company` at login)
OWNER_PASSWORD = "demo-owner-password"  # a local demo's: printed by `refstream demo`
MANAGER_PASSWORD = "demo-manager-password"
TEAMS = ("North team", "South team")
# key (link code prefix, coupon code), name, team (index into TEAMS)
AGENTS = (("ana", "Ana Lima", 0), ("bo", "Bo Berg", 0), ("chen", "Chen Wu", 1),
          ("dara", "Dara Okafor", 1))  # fmt: skip
RULES = {"currency": "USD", "base": {"kind": "percent", "value": "10"}}


class DemoError(RuntimeError):
    """The API refused a step of the setup; the message names the step and the API's answer."""


@dataclass(frozen=True, slots=True)
class Login:
    company: str
    email: str
    password: str
    role: str
    unit: str  # the unit the role is held on


@dataclass(frozen=True, slots=True)
class DemoAgent:
    key: str
    id: str
    name: str
    team: str
    link: str
    coupon: str


@dataclass(frozen=True, slots=True)
class DemoSetup:
    tenant_id: str
    slug: str
    shop: str
    secret: str
    odoo_token: str
    owner: Login
    manager: Login
    agents: tuple[DemoAgent, ...]

    @property
    def link_codes(self) -> tuple[str, ...]:
        return tuple(a.link for a in self.agents)

    @property
    def coupons(self) -> tuple[str, ...]:
        return tuple(a.coupon for a in self.agents)

    def agent(self, key: str) -> DemoAgent:
        return next(a for a in self.agents if a.key == key)

    @property
    def names(self) -> dict[str, str]:
        """Agent id → name."""
        return {a.id: a.name for a in self.agents}


def api_url(settings: Settings) -> str:
    return f"http://{settings.api_host}:{settings.api_port}"


def set_up(
    settings: Settings,
    *,
    slug: str = COMPANY,
    shop: str | None = None,
    owner_password: str = OWNER_PASSWORD,
    manager_password: str = MANAGER_PASSWORD,
) -> DemoSetup:
    """Sign up (or reuse) the company `slug` and create its demo configuration through the API.

    Raises `DemoError` when the API refuses a step, e.g. when `slug` is taken by a company whose
    owner login is not the demo's."""
    shop = (shop or f"{slug}.myshopify.com").lower()
    owner = Login(slug, f"owner@{slug}.example", owner_password, "owner", "the root unit")
    manager = Login(slug, f"manager@{slug}.example", manager_password, "manager", TEAMS[0])
    with httpx.Client(base_url=api_url(settings), timeout=30) as client:
        api = _Api(client)
        reused = _sign_up(api, owner)
        login = client.post("/v1/auth/login", json={
            "company": slug, "email": owner.email, "password": owner.password,
        })  # fmt: skip
        if login.status_code != 200:
            known = f"the company {slug!r} exists but " if reused else ""
            raise DemoError(
                f"{known}the demo owner login {owner.email} failed ({_problem(login)}); "
                "choose another --company"
            )
        token = login.json()["access_token"]
        client.headers["Authorization"] = f"Bearer {token}"
        tenant_id = api.call("read the company", "GET", "/v1/companies/me")["id"]
        teams = _teams(api)
        _manager(api, manager, teams[TEAMS[0]])
        program = _program(api, shop)
        agents = tuple(_agent(api, slug, program, key, name, TEAMS[team], teams[TEAMS[team]])
                       for key, name, team in AGENTS)  # fmt: skip
        secret = _shop(api, shop)
    odoo_token = create_erp_endpoint(settings, tenant_id)
    return DemoSetup(tenant_id, slug, shop, secret, odoo_token, owner, manager, agents)


class _Api:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def call(self, step: str, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code not in (200, 201, 202):
            raise DemoError(f"{step}: {method} {path} answered {_problem(response)}")
        return response.json()

    def exists(self, path: str) -> bool:
        return self.client.get(path).status_code == 200


def _problem(response: httpx.Response) -> str:
    """The status and the problem+json `detail` and field errors (or the body) of a refusal."""
    try:
        problem = response.json()
    except ValueError:
        return f"{response.status_code} {response.text}"
    fields = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in problem.get("errors", []))
    return f"{response.status_code} {problem.get('detail', response.text)}" + (
        f" ({fields})" if fields else ""
    )


def _sign_up(api: _Api, owner: Login) -> bool:
    """Sign the company up; returns whether it existed already."""
    response = api.client.post("/v1/companies", json={
        "name": "Demo Office Supply", "slug": owner.company, "owner_email": owner.email,
        "owner_name": "Olivia Owner", "owner_password": owner.password,
    })  # fmt: skip
    if response.status_code == 409:
        return True  # an earlier run's company: reused (its owner login is checked next)
    if response.status_code != 201:
        raise DemoError(f"sign up the demo company: {_problem(response)}")
    return False


def _teams(api: _Api) -> dict[str, str]:
    """Team name → unit id, creating the teams missing under the root unit."""
    units = api.call("list units", "GET", "/v1/units")
    root = next(u["id"] for u in units if u["parent_id"] is None)
    found = {u["name"]: u["id"] for u in units if u["parent_id"] == root}
    for name in TEAMS:
        if name not in found:
            found[name] = api.call(f"create the unit {name}", "POST", "/v1/units",
                                   json={"parent_id": root, "name": name})["id"]  # fmt: skip
    return found


def _manager(api: _Api, manager: Login, unit_id: str) -> None:
    users = api.call("list users", "GET", "/v1/users")
    if any(u["email"] == manager.email for u in users):
        return
    api.call("create the manager", "POST", "/v1/users", json={
        "email": manager.email, "display_name": "Max Manager", "password": manager.password,
        "unit_id": unit_id, "role": "manager",
    })  # fmt: skip


def _program(api: _Api, shop: str) -> str:
    """The program's id, with 10 % commission rules (created when missing)."""
    programs = api.call("list programs", "GET", "/v1/programs", params={"limit": 200})["items"]
    program = next((p["id"] for p in programs if p["name"] == "Office partners"), None)
    if program is None:
        program = api.call("create the program", "POST", "/v1/programs", json={
            "name": "Office partners", "landing_url": f"https://{shop}/collections/office",
            "currency": "USD",
        })["id"]  # fmt: skip
    if not api.call("list rules", "GET", f"/v1/programs/{program}/rules"):
        api.call("store the commission rules", "POST", f"/v1/programs/{program}/rules",
                 json={"rules": RULES})  # fmt: skip
    return str(program)


def _agent(
    api: _Api, slug: str, program: str, key: str, name: str, team: str, unit_id: str
) -> DemoAgent:
    agents = api.call("list agents", "GET", "/v1/agents", params={"limit": 200})["items"]
    agent = next((a["id"] for a in agents if a["name"] == name), None)
    if agent is None:
        agent = api.call(f"create the agent {name}", "POST", "/v1/agents", json={
            "name": name, "unit_id": unit_id, "email": f"{key}@agents.example",
        })["id"]  # fmt: skip
    link, coupon = f"{key}-{slug}", key.upper()
    if not api.call("find a link", "GET", "/v1/links", params={"code": link})["items"]:
        api.call(f"create the link {link}", "POST", "/v1/links",
                 json={"program_id": program, "agent_id": agent, "code": link})  # fmt: skip
    if not api.exists(f"/v1/coupons/{coupon}"):
        api.call(f"create the coupon {coupon}", "POST", "/v1/coupons",
                 json={"code": coupon, "program_id": program, "agent_id": agent})  # fmt: skip
    return DemoAgent(key, str(agent), name, team, link, coupon)


def _shop(api: _Api, domain: str) -> str:
    """Register the shop with a new webhook secret (a rotation when it exists); returns it.

    A new shop is a custom-app claim (`POST /v1/shops` answers 202): the demo's first webhook,
    signed with this secret, proves it at the ingress and makes it the company's shop."""
    secret = secrets.token_hex(16)
    if api.exists(f"/v1/shops/{domain}"):
        api.call("rotate the shop's secret", "PATCH", f"/v1/shops/{domain}",
                 json={"secret": secret})  # fmt: skip
    else:
        api.call("register the shop", "POST", "/v1/shops",
                 json={"domain": domain, "secret": secret})  # fmt: skip
    return secret
