"""Every /v1 route called as every role, another company's owner and anonymous, against the
declared matrix in rbac_matrix.yaml; mutations must leave exactly one audit trail when they
succeed and none when they fail."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg
import yaml
from fastapi import FastAPI
from httpx import AsyncClient
from starlette.datastructures import Headers
from starlette.types import Message

from schemas.settings import Settings
from tests.api.factories import (
    PASSWORD,
    ROLES,
    World,
    approve,
    bearer,
    build_world,
    create_agent,
    create_company,
    create_coupon,
    create_link,
    create_note,
    create_payout,
    create_program,
    create_shop,
    create_user,
    insert_decided_order,
    insert_exception,
    insert_ledger_entry,
    insert_proposed_rule_version,
    login,
)

MATRIX_FILE = Path(__file__).with_name("rbac_matrix.yaml")
CALLERS = (*ROLES, "other_company", "anonymous")


def load_matrix() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = yaml.safe_load(MATRIX_FILE.read_text())
    return rows


def v1_routes(app: FastAPI) -> set[str]:
    """Every operation under /v1, read from the OpenAPI document (which includes routers)."""
    return {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        if path.startswith("/v1/")
        for method in operations
    }


def test_matrix_covers_every_v1_route_and_caller(app: FastAPI) -> None:
    matrix = load_matrix()
    declared = [row["route"] for row in matrix]
    assert len(declared) == len(set(declared)), "a route is declared twice"
    assert set(declared) == v1_routes(app)
    for row in matrix:
        assert set(row["expect"]) == set(CALLERS), row["route"]


def fill(template: Any, values: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format_map(values)
    if isinstance(template, dict):
        return {k: fill(v, values) for k, v in template.items()}
    return template


async def test_every_route_answers_every_caller_as_declared(
    app: FastAPI, client: AsyncClient, pg_url: str, api_settings: Settings
) -> None:
    world = await build_world(client)
    other = await create_company(client)
    other_slug = other["company"]["slug"]
    other_tokens = await login(client, company=other_slug, email=other["owner_email"])
    target_user = await create_user(
        client,
        world.tokens["owner"],
        email=f"target@{world.slug}.example",
        unit_id=world.team_unit_id,
        role="observer",
    )
    key = await client.post(
        "/v1/api-keys",
        json={"name": "to revoke", "role": "observer", "unit_id": world.team_unit_id},
        headers=bearer(world.tokens["owner"]),
    )
    owner = world.tokens["owner"]
    program_id = await create_program(client, owner)
    rules = await client.post(
        f"/v1/programs/{program_id}/rules", json={"rules": RULES}, headers=bearer(owner)
    )
    assert rules.status_code == 201, rules.text
    path_params = {
        "agent_id": world.team_agent_id,
        "unit_id": world.team_unit_id,
        "user_id": target_user,
        "key_id": key.json()["id"],
        "program_id": program_id,
        "version": "1",
        "link_id": await create_link(
            client, owner, program_id=program_id, agent_id=world.team_agent_id
        ),
        "code": await create_coupon(
            client, owner, program_id=program_id, agent_id=world.team_agent_id
        ),
        "domain": await create_shop(client, owner, pg_url),
        "collection_id": "841564295",
        "note_id": await create_note(client, owner, agent_id=world.team_agent_id),
        "entry_id": insert_ledger_entry(
            pg_url, tenant_id=world.company_id, agent_id=world.team_agent_id
        ),
        "payout_id": (await fresh_payout(client, pg_url, world, program_id))["id"],
        "order_id": insert_decided_order(
            api_settings, tenant_id=world.company_id, agent_id=world.team_agent_id
        ),
    }
    logins = {role: (world.slug, world.emails[role]) for role in ROLES}
    logins["other_company"] = (other_slug, other["owner_email"])
    tokens = {**world.tokens, "other_company": other_tokens["access_token"]}

    mismatches: list[str] = []
    for row in load_matrix():
        method, path = row["route"].split(" ", 1)
        for caller in CALLERS:
            params = path_params | await fresh_params(client, pg_url, world, row, program_id)
            status, audited = await call(
                app, client, pg_url, world, row, method, path.format_map(params), caller,
                logins=logins, tokens=tokens, params=params,
            )  # fmt: skip
            expected = row["expect"][caller]
            if status != expected:
                mismatches.append(f"{row['route']} as {caller}: {status}, expected {expected}")
            should_audit = (
                row.get("audited", False)
                and 200 <= status < 300
                and caller not in row.get("unaudited_for", [])
            )
            if audited != should_audit:
                mismatches.append(
                    f"{row['route']} as {caller}: audit entry {'written' if audited else 'missing'}"
                )
    assert mismatches == []


RULES = {"currency": "USD", "base": {"kind": "percent", "value": "10"}}


async def fresh_payout(
    client: AsyncClient, pg_url: str, world: World, program_id: str
) -> dict[str, Any]:
    agent_id = (
        await fresh_params(client, pg_url, world, {"fresh": ["payable_agent_id"]}, program_id)
    )["payable_agent_id"]
    return await create_payout(client, world.tokens["owner"], agent_id=agent_id)


async def fresh_params(
    client: AsyncClient, pg_url: str, world: World, row: dict[str, Any], program_id: str
) -> dict[str, str]:
    """New objects for the row's `fresh` parameters, so each caller acts on one of its own (a
    deleted or approved object cannot be deleted or approved again)."""
    owner = world.tokens["owner"]
    team_agent = world.team_agent_id
    made: dict[str, str] = {}
    for name in row.get("fresh", []):
        if name == "program_id":
            made[name] = await create_program(client, owner)
        elif name == "link_id":
            made[name] = await create_link(
                client, owner, program_id=program_id, agent_id=team_agent
            )
        elif name == "code":
            made[name] = await create_coupon(
                client, owner, program_id=program_id, agent_id=team_agent
            )
        elif name == "domain":
            made[name] = await create_shop(client, owner, pg_url)
        elif name == "note_id":
            made[name] = await create_note(client, owner, agent_id=team_agent)
        elif name == "entry_id":
            made[name] = insert_ledger_entry(
                pg_url, tenant_id=world.company_id, agent_id=team_agent
            )
        elif name == "payable_agent_id":
            agent = await create_agent(client, owner, unit_id=world.team_unit_id, name="Payable")
            entry = insert_ledger_entry(pg_url, tenant_id=world.company_id, agent_id=agent)
            await approve(client, owner, entry)
            made[name] = agent
        elif name == "version":
            made[name] = str(
                insert_proposed_rule_version(
                    pg_url, tenant_id=world.company_id, program_id=program_id
                )
            )
        elif name == "exception_id":
            made[name] = insert_exception(pg_url, tenant_id=world.company_id)
        elif name == "payout_id":
            made[name] = (await fresh_payout(client, pg_url, world, program_id))["id"]
        else:
            raise AssertionError(f"no fresh factory for {name!r}")
    return made


async def call(
    app: FastAPI,
    client: AsyncClient,
    pg_url: str,
    world: World,
    row: dict[str, Any],
    method: str,
    path: str,
    caller: str,
    *,
    logins: dict[str, tuple[str, str]],
    tokens: dict[str, str],
    params: dict[str, str],
) -> tuple[int, bool]:
    """(status, whether an audit entry carries this request's id)."""
    values = {
        **params,
        "uniq": uuid.uuid4().hex[:10],
        "root_unit_id": world.root_unit_id,
        "region_unit_id": world.region_unit_id,
        "team_unit_id": world.team_unit_id,
    }
    anonymous = caller == "anonymous"
    company, email = (world.slug, "nobody@example.com") if anonymous else logins[caller]
    values |= {"login_company": company, "login_email": email}
    body = row.get("body")
    if body and "{fresh_refresh_token}" in str(body):
        values["fresh_refresh_token"] = (
            "rrt_made-up"
            if anonymous
            else (await login(client, company=company, email=email))["refresh_token"]
        )
    request_id = f"rbac-{uuid.uuid4().hex}"
    headers = {"X-Request-Id": request_id, "Idempotency-Key": f"rbac-{uuid.uuid4().hex}"}
    if not anonymous:
        headers |= bearer(tokens[caller])
    response_headers: Mapping[str, str]
    if row.get("stream"):
        status, response_headers = await stream_head(app, method, path, headers)
    else:
        response = await client.request(
            method, path, json=fill(body, values) if body else None, headers=headers
        )
        status, response_headers = response.status_code, response.headers
    assert response_headers["X-Request-Id"] == request_id
    if status >= 400:
        assert response_headers["content-type"] == "application/problem+json", path
    with psycopg.connect(pg_url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM audit_log WHERE request_id = %s", (request_id,)
        ).fetchone()
    return status, bool(found and found[0])


async def stream_head(
    app: FastAPI, method: str, path: str, headers: dict[str, str]
) -> tuple[int, Headers]:
    """Status and headers of a streaming response, then a client disconnect (httpx's ASGI
    transport waits for the end of the body, which an event stream never reaches)."""
    started = asyncio.Event()
    head: dict[str, Any] = {}
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await started.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            head["status"] = message["status"]
            head["headers"] = Headers(raw=message["headers"])
            started.set()

    raw_path, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": method, "scheme": "http", "path": raw_path, "raw_path": raw_path.encode(),
        "query_string": query.encode(), "root_path": "", "client": ("198.51.100.7", 40000),
        "server": ("testserver", 80),
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }  # fmt: skip
    await asyncio.wait_for(app(scope, receive, send), 10)
    return head["status"], head["headers"]


def test_password_constant_is_long_enough() -> None:
    assert len(PASSWORD) >= 12
