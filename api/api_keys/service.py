from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from api.api_keys.repository import ApiKeyRepository
from api.api_keys.schemas import ApiKeyCreate, ApiKeyCreated, ApiKeyRead
from api.audit import record
from api.auth import tokens
from api.authz.policies import Principal, can
from api.context import RequestMeta
from api.errors import Conflict, Forbidden
from api.models import ApiKey
from api.snapshots import snapshot
from api.units.repository import UnitRepository
from schemas.ids import random_id


async def create_api_key(
    session: AsyncSession, principal: Principal, body: ApiKeyCreate, meta: RequestMeta
) -> ApiKeyCreated:
    unit = await UnitRepository(session, principal, "api_keys.manage").get(body.unit_id)
    if not can(principal, "api_keys.manage", unit.path):
        raise Forbidden("You cannot create API keys for this unit.")
    key = tokens.new_api_key()
    api_key = ApiKey(
        id=random_id("key"),
        tenant_id=principal.tenant_id,
        unit_id=unit.id,
        role=body.role,
        name=body.name,
        key_prefix=key[:12],
        key_hash=tokens.secret_hash(key),
        created_by=principal.actor,
        created_at=meta.now,
    )
    session.add(api_key)
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="api_key.create",
        entity_type="api_key",
        entity_id=api_key.id,
        before=None,
        after=snapshot(api_key),
        meta=meta,
    )
    return ApiKeyCreated(**ApiKeyRead.model_validate(api_key).model_dump(), key=key)


async def revoke_api_key(
    session: AsyncSession, principal: Principal, key_id: str, meta: RequestMeta
) -> None:
    api_key = await ApiKeyRepository(session, principal, "api_keys.manage").get(key_id)
    if api_key.revoked_at is not None:
        raise Conflict("The key is already revoked.")
    before = snapshot(api_key)
    api_key.revoked_at = meta.now
    await session.flush()
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="api_key.revoke",
        entity_type="api_key",
        entity_id=api_key.id,
        before=before,
        after=snapshot(api_key),
        meta=meta,
    )
