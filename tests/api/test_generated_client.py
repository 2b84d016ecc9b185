"""A client generated from the live OpenAPI document, driven like a client team would: sign up,
log in, who-am-I, create an agent, a program and a link, read the ledger and analytics, handle a
typed problem and a 304. A contract change that breaks generated clients fails here.

The generator (openapi-python-client, pinned in tests/api/sdkgen/requirements.txt) lives in its
own venv, `.venv-sdkgen` (built on first use, or by `make sdkgen`): it pins httpx<0.29 and
typer<0.28, refstream uses newer ones. The generated code runs in refstream's own venv, against
the app with the real PostgreSQL, Redis and ClickHouse of the test session.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from tests.api.factories import PASSWORD, unique_slug

ROOT = Path(__file__).resolve().parents[2]
SDKGEN_VENV = ROOT / ".venv-sdkgen"
SDKGEN_REQUIREMENTS = Path(__file__).parent / "sdkgen" / "requirements.txt"
PACKAGE = "refstream_client"


def sdk_generator() -> Path:
    """The openapi-python-client executable of `.venv-sdkgen`, installed from the pins if absent."""
    executable = SDKGEN_VENV / "bin" / "openapi-python-client"
    stamp = SDKGEN_VENV / ".requirements"
    wanted = SDKGEN_REQUIREMENTS.read_text()
    if executable.exists() and stamp.exists() and stamp.read_text() == wanted:
        return executable
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(SDKGEN_VENV)], check=True)
    pip = [str(SDKGEN_VENV / "bin" / "pip"), "install", "--quiet"]
    subprocess.run([*pip, "--no-deps", "-r", str(SDKGEN_REQUIREMENTS)], check=True)
    stamp.write_text(wanted)
    return executable


async def live_document(app: FastAPI) -> dict[str, Any]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c:
        response = await c.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture
async def sdk(app: FastAPI, tmp_path: Path) -> Iterator[ModuleType]:
    generator = sdk_generator()
    spec = tmp_path / "openapi.json"
    spec.write_text(json.dumps(await live_document(app)))
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = ["generate", "--path", str(spec), "--meta", "none", "--output-path"]
    generated = subprocess.run(
        [str(generator), *command, str(tmp_path / PACKAGE)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert generated.returncode == 0, generated.stdout + generated.stderr
    # Nothing of the document may be skipped: a skipped operation is a broken SDK method.
    assert "Unable to" not in generated.stdout + generated.stderr, generated.stdout
    sys.path.insert(0, str(tmp_path))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def load(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.{name}")


async def test_a_generated_client_drives_the_journey(app: FastAPI, sdk: ModuleType) -> None:
    models = load("models")
    transport = {"transport": ASGITransport(app=app, client=("198.51.100.40", 40000))}
    anonymous = sdk.Client(base_url="http://testserver", httpx_args=transport)

    slug = unique_slug("sdk")
    email = f"owner@{slug}.example"
    signup = models.CompanyCreate(
        name="SDK Co", slug=slug, owner_email=email, owner_password=PASSWORD
    )
    created = await load("api.companies.companies_create").asyncio(client=anonymous, body=signup)
    assert isinstance(created, models.CompanyCreated), created
    login = models.LoginRequest(company=slug, email=email, password=PASSWORD)
    tokens = await load("api.auth.auth_login").asyncio(client=anonymous, body=login)
    assert isinstance(tokens, models.TokenPair), tokens

    client = sdk.AuthenticatedClient(
        base_url="http://testserver", token=tokens.access_token, httpx_args=transport
    )
    me = await load("api.me.me_get").asyncio(client=client)
    assert isinstance(me, models.Me), me
    assert me.company.slug == slug
    root = me.grants[0]
    assert (root.role.value, root.unit_id) == ("owner", created.root_unit_id)
    assert root.unit_id in me.permissions["agents.write"]

    agent = await load("api.agents.agents_create").asyncio(
        client=client, body=models.AgentCreate(name="Ada", unit_id=root.unit_id)
    )
    assert isinstance(agent, models.AgentRead), agent
    program = await load("api.programs.programs_create").asyncio(
        client=client,
        body=models.ProgramCreate(name="Spring", landing_url="https://shop.example/spring"),
    )
    assert isinstance(program, models.ProgramRead), program
    link = await load("api.links.links_create").asyncio(
        client=client,
        body=models.LinkCreate(program_id=program.id, agent_id=agent.id, code=f"ada-{slug[-6:]}"),
    )
    assert isinstance(link, models.LinkRead), link

    links = load("api.links.links_list")
    listed = await links.asyncio_detailed(client=client, agent_id=agent.id)
    assert listed.status_code == 200
    assert [item.id for item in listed.parsed.items] == [link.id]
    again = await links.asyncio_detailed(
        client=client, agent_id=agent.id, if_none_match=listed.headers["etag"]
    )
    assert again.status_code == 304

    ledger = await load("api.ledger.ledger_list_entries").asyncio(client=client, agent_id=agent.id)
    assert isinstance(ledger, models.LedgerPage), ledger
    assert (ledger.items, ledger.totals) == ([], [])
    summary = await load("api.analytics.analytics_summary").asyncio(client=client)
    assert isinstance(summary, models.Summary), summary
    assert summary.clicks == 0

    missing = await load("api.notes.notes_get").asyncio(client=client, note_id="note_missing")
    assert isinstance(missing, models.Problem), missing
    assert (missing.status, missing.code) == (404, "not-found")
