"""The audit log: written with every mutation in the same transaction, chained per company,
readable by owners, and tampering is detected by verify and by `refstream audit verify`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import psycopg
from httpx import ASGITransport, AsyncClient
from typer.testing import CliRunner

from api.app import create_app
from api.audit import record, verify_chain
from api.audit.chain import entry_hash
from api.cli import load_entries
from api.context import Meta
from api.db import WriteSession
from api.errors import Conflict
from deploy.cli import app as refstream_cli
from schemas.settings import Settings
from tests.api.factories import bearer, build_world, create_company
from tests.fixtures.postgres import PgTarget


def chain_problems(pg_url: str, tenant_id: str) -> list[str]:
    return [str(p) for p in verify_chain(load_entries(pg_url, tenant_id))]


async def test_mutations_are_audited_with_who_what_before_after(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    response = await client.patch(
        f"/v1/agents/{world.team_agent_id}",
        json={"name": "Renamed"},
        headers={**bearer(world.tokens["manager"]), "X-Request-Id": "audit-me"},
    )
    assert response.status_code == 200
    page = await client.get(
        f"/v1/audit?entity_id={world.team_agent_id}", headers=bearer(world.tokens["owner"])
    )
    latest = page.json()["items"][0]
    assert latest["action"] == "agent.update"
    assert latest["actor"] == f"user:{world.users['manager']}"
    assert latest["before"]["name"] == "Team agent"
    assert latest["after"]["name"] == "Renamed"
    assert latest["request_id"] == "audit-me"
    assert latest["source_ip"] == "198.51.100.7"
    assert chain_problems(pg_url, world.company_id) == []


async def test_a_request_failing_after_its_audit_write_leaves_no_entry(
    api_settings: Settings, pg_url: str
) -> None:
    app = create_app(api_settings)

    @app.post("/probe/{outcome}")
    async def probe(outcome: str, session: WriteSession, meta: Meta) -> dict[str, str]:
        await record(
            session, tenant_id=tenant_id, actor="user:probe", action="probe.run",
            entity_type="probe", entity_id=outcome, before=None, after={}, meta=meta,
        )  # fmt: skip
        if outcome == "fail":
            raise Conflict("failing after the audit write")
        return {"ok": outcome}

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        tenant_id = (await create_company(client))["company"]["id"]
        before = len(load_entries(pg_url, tenant_id))
        assert (await client.post("/probe/fail")).status_code == 409
        assert len(load_entries(pg_url, tenant_id)) == before
        assert (await client.post("/probe/succeed")).status_code == 200
        assert len(load_entries(pg_url, tenant_id)) == before + 1


async def test_concurrent_mutations_keep_the_chain_contiguous(
    client: AsyncClient, pg_url: str
) -> None:
    world = await build_world(client)
    responses = await asyncio.gather(
        *(
            client.post(
                "/v1/agents",
                json={"name": f"parallel {i}", "unit_id": world.team_unit_id},
                headers=bearer(world.tokens["owner"]),
            )
            for i in range(12)
        )
    )
    assert {r.status_code for r in responses} == {201}
    entries = load_entries(pg_url, world.company_id)
    assert [e.fields.seq for e in entries] == list(range(1, len(entries) + 1))
    assert chain_problems(pg_url, world.company_id) == []


async def test_audit_log_pages_newest_first(client: AsyncClient) -> None:
    world = await build_world(client)
    headers = bearer(world.tokens["owner"])
    first = (await client.get("/v1/audit?limit=3", headers=headers)).json()
    second = (
        await client.get(f"/v1/audit?limit=3&cursor={first['next_cursor']}", headers=headers)
    ).json()
    seqs = [e["seq"] for e in first["items"] + second["items"]]
    assert seqs == sorted(seqs, reverse=True)
    assert len(set(seqs)) == 6


async def test_tampering_is_detected_by_verify_and_the_cli(
    client: AsyncClient, pg_url: str, pg_target: PgTarget
) -> None:
    world = await build_world(client)
    runner = CliRunner()
    env = {"REFSTREAM_POSTGRES_URL": pg_url}
    intact = runner.invoke(
        refstream_cli, ["audit", "verify", "--tenant", world.company_id], env=env
    )
    assert intact.exit_code == 0, intact.output
    assert "intact" in intact.output

    with psycopg.connect(pg_target.superuser_url) as conn:
        # A superuser can bypass the append-only trigger; the chain still gives it away.
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE audit_log SET after = jsonb_set(after, '{name}', '\"Forged\"')"
            " WHERE tenant_id = %s AND seq = 4",
            (world.company_id,),
        )
    assert chain_problems(pg_url, world.company_id) == [
        f"tenant {world.company_id}: seq 4: hash does not match the content"
    ]
    broken = runner.invoke(
        refstream_cli, ["audit", "verify", "--tenant", world.company_id], env=env
    )
    assert broken.exit_code == 1
    assert "seq 4" in broken.output


async def test_a_forged_appended_entry_is_detected(client: AsyncClient, pg_url: str) -> None:
    world = await build_world(client)
    last = load_entries(pg_url, world.company_id)[-1]
    with psycopg.connect(pg_url) as conn:
        conn.execute(
            "INSERT INTO audit_log (tenant_id, seq, actor, action, entity_type, entity_id,"
            " created_at, prev_hash, hash) VALUES (%s, %s, 'user:x', 'payout.approve', 'payout',"
            " 'p1', now(), %s, 'f' || repeat('0', 63))",
            (world.company_id, last.fields.seq + 1, last.hash),
        )
    problems = chain_problems(pg_url, world.company_id)
    assert problems == [
        f"tenant {world.company_id}: seq {last.fields.seq + 1}: hash does not match the content"
    ]


def rewrite_from(superuser_url: str, tenant_id: str, seq: int) -> None:
    """The attack the anchor exists for: change entry `seq`, then recompute every hash after it
    (a superuser can bypass the append-only trigger; the hashing is public)."""
    with psycopg.connect(superuser_url) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE audit_log SET actor = 'user:nobody' WHERE tenant_id = %s AND seq = %s",
            (tenant_id, seq),
        )
        conn.commit()  # so that load_entries below reads the changed row
        prev = conn.execute(
            "SELECT hash FROM audit_log WHERE tenant_id = %s AND seq = %s", (tenant_id, seq - 1)
        ).fetchone()
        assert prev is not None
        prev_hash = prev[0]
        for entry in load_entries(superuser_url, tenant_id)[seq - 1 :]:
            fields = dataclasses.replace(entry.fields, prev_hash=prev_hash)
            prev_hash = entry_hash(fields)
            conn.execute(
                "UPDATE audit_log SET prev_hash = %s, hash = %s WHERE tenant_id = %s AND seq = %s",
                (fields.prev_hash, prev_hash, tenant_id, fields.seq),
            )


async def test_a_recomputed_chain_is_detected_by_the_anchor(
    client: AsyncClient, pg_target: PgTarget, tmp_path: Path
) -> None:
    world = await build_world(client)
    env = {
        "REFSTREAM_POSTGRES_URL": pg_target.url,
        "REFSTREAM_AUDIT_ANCHOR_KEY": "k" * 40,
        "REFSTREAM_AUDIT_ANCHOR_PATH": str(tmp_path / "anchor.json"),
    }
    verify = ["audit", "verify", "--tenant", world.company_id]
    first = CliRunner().invoke(refstream_cli, verify, env=env)
    assert first.exit_code == 0, first.output
    assert "first anchor written" in first.output

    rewrite_from(pg_target.superuser_url, world.company_id, seq=3)
    assert chain_problems(pg_target.url, world.company_id) == []  # the chain alone is fooled

    head = load_entries(pg_target.url, world.company_id)[-1].fields.seq
    caught = CliRunner().invoke(refstream_cli, verify, env=env)
    assert caught.exit_code == 1
    said = " ".join(caught.output.split())  # rich wraps long lines
    assert f"seq {head}: hash differs from the one anchored at" in said
    assert "(the chain was rewritten)" in said


async def test_the_anchor_cannot_be_moved_without_its_key(
    client: AsyncClient, pg_target: PgTarget, tmp_path: Path
) -> None:
    world = await build_world(client)
    path = tmp_path / "anchor.json"
    env = {
        "REFSTREAM_POSTGRES_URL": pg_target.url,
        "REFSTREAM_AUDIT_ANCHOR_KEY": "k" * 40,
        "REFSTREAM_AUDIT_ANCHOR_PATH": str(path),
    }
    verify = ["audit", "verify", "--tenant", world.company_id]
    assert CliRunner().invoke(refstream_cli, verify, env=env).exit_code == 0
    rewrite_from(pg_target.superuser_url, world.company_id, seq=2)
    # The forger also moves the anchored hash to the forged chain's head, but has no key.
    forged = load_entries(pg_target.url, world.company_id)[-1].hash
    document = json.loads(path.read_text())
    document["heads"][world.company_id]["hash"] = forged
    path.write_text(json.dumps(document))

    refused = CliRunner().invoke(refstream_cli, verify, env=env)
    assert refused.exit_code == 1
    said = " ".join(refused.output.split())
    assert "audit anchor refused" in said
    assert "signature does not match" in said


async def test_personal_data_sits_outside_the_chain_and_erasing_it_keeps_the_chain(
    client: AsyncClient, pg_url: str
) -> None:
    """Issue #17: an entry holds references to emails, people's names and the source IP; the
    values live in `audit_personal`, so erasing them leaves every hash as it was."""
    world = await build_world(client)
    response = await client.patch(
        f"/v1/agents/{world.team_agent_id}",
        json={"name": "Erin Erasable", "email": "erin@example.com"},
        headers=bearer(world.tokens["manager"]),
    )
    assert response.status_code == 200, response.text
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(
            "SELECT after::text, source_ip FROM audit_log WHERE tenant_id = %s "
            "AND entity_id = %s AND action = 'agent.update'",
            (world.company_id, world.team_agent_id),
        ).fetchone()
    assert stored is not None
    for value in ("Erin", "erin@example.com", "198.51.100.7"):
        assert value not in stored[0] + stored[1]
    assert stored[1].startswith("pd:")
    assert '"status": "active"' in stored[0]  # what is not personal stays inline

    entry = (
        await client.get(
            f"/v1/audit?entity_id={world.team_agent_id}", headers=bearer(world.tokens["owner"])
        )
    ).json()["items"][0]
    assert (entry["after"]["name"], entry["after"]["email"]) == (
        "Erin Erasable",
        "erin@example.com",
    )
    assert entry["source_ip"] == "198.51.100.7"

    env = {"REFSTREAM_POSTGRES_URL": pg_url}
    erased = CliRunner().invoke(
        refstream_cli, ["audit", "erase", "ERIN@example.com", "--tenant", world.company_id], env=env
    )
    assert erased.exit_code == 0, erased.output
    assert "1 audit reference(s) erased" in erased.output
    after = (
        await client.get(
            f"/v1/audit?entity_id={world.team_agent_id}", headers=bearer(world.tokens["owner"])
        )
    ).json()["items"][0]
    assert after["after"]["email"] is None
    assert after["after"]["name"] == "Erin Erasable"  # only the erased value is gone
    assert after["hash"] == entry["hash"]
    assert chain_problems(pg_url, world.company_id) == []
    verified = CliRunner().invoke(
        refstream_cli, ["audit", "verify", "--tenant", world.company_id], env=env
    )
    assert verified.exit_code == 0, verified.output
