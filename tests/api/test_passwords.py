"""The production password-hashing profile (the other in-process API tests run with the cheaper
`tests.conftest.TEST_HASHER`, see the `production_hasher` fixture), and its upgrade at login."""

from __future__ import annotations

import psycopg
import pytest
from argon2 import PasswordHasher, Type
from httpx import AsyncClient

from api.auth import passwords
from tests.api.factories import PASSWORD, create_company, login


def test_production_hashes_are_argon2id_rfc_9106_low_memory(
    production_hasher: PasswordHasher,
) -> None:
    assert production_hasher.type is Type.ID
    profile = (production_hasher.time_cost, production_hasher.memory_cost)
    assert (*profile, production_hasher.parallelism) == (3, 65536, 4)
    stored = production_hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert production_hasher.verify(stored, PASSWORD)


async def test_a_login_upgrades_a_hash_of_a_cheaper_profile(
    client: AsyncClient,
    pg_owner_url: str,
    production_hasher: PasswordHasher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    company = await create_company(client)  # hashed with the tests' cheap profile
    slug, email = company["company"]["slug"], company["owner_email"]
    monkeypatch.setattr(passwords, "_hasher", production_hasher)
    await login(client, company=slug, email=email)  # verifies the old hash, stores a new one
    with psycopg.connect(pg_owner_url) as conn:
        row = conn.execute(
            "SELECT password_hash FROM users WHERE id = %s", (company["owner_user_id"],)
        ).fetchone()
    assert row is not None
    assert row[0].startswith("$argon2id$v=19$m=65536,t=3,p=4$"), row[0]
    await login(client, company=slug, email=email)  # the upgraded hash verifies
