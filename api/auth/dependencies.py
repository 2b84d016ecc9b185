"""Who is calling: resolve a `Principal` from `Authorization: Bearer <jwt|rsk_…>` or `X-API-Key`.

Grants are loaded from the database on every request, so a changed role, a disabled user or a
revoked login session (the access token names its refresh-token family) takes effect at once,
whatever the access token's remaining lifetime.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.auth import repository, tokens
from api.authz.permissions import Role
from api.authz.policies import Grant, Principal
from api.db import ReadSession
from api.errors import Unauthorized
from schemas.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="JWT access token or rsk_… API key")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)

BearerCredentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
ApiKeyHeader = Annotated[str | None, Depends(_api_key_header)]


async def principal_for_api_key(session: ReadSession, key: str) -> Principal:
    found = await repository.api_key_with_unit(session, tokens.secret_hash(key))
    if found is None:
        raise Unauthorized("Unknown or revoked API key.")
    api_key, unit_path = found
    grant = Grant(unit_id=api_key.unit_id, unit_path=unit_path, role=Role(api_key.role))
    return Principal(kind="api_key", id=api_key.id, tenant_id=api_key.tenant_id, grants=(grant,))


async def principal_for_user(
    session: ReadSession, *, user_id: str, tenant_id: str, family_id: str | None = None
) -> Principal:
    user = await repository.active_user(session, user_id=user_id, tenant_id=tenant_id)
    if user is None:
        raise Unauthorized("The user no longer exists or is disabled.")
    if family_id is not None and await repository.family_revoked(session, family_id):
        raise Unauthorized("This session was signed out or revoked; log in again.")
    rows = await repository.user_grants(session, user_id=user_id, tenant_id=tenant_id)
    grants = tuple(Grant(unit_id=u, unit_path=p, role=Role(r)) for u, p, r in rows)
    return Principal(
        kind="user", id=user_id, tenant_id=tenant_id, grants=grants, session_id=family_id
    )


async def authenticate(
    request: Request, bearer: BearerCredentials, api_key: ApiKeyHeader
) -> Principal:
    """The calling principal, or `Unauthorized`."""
    settings: Settings = request.app.state.settings
    maker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    credential = bearer.credentials if bearer else api_key
    if not credential:
        raise Unauthorized("Send `Authorization: Bearer <token>` or `X-API-Key`.")
    # A short read-only session of its own: released before the endpoint's session is opened.
    async with maker() as session:
        if credential.startswith(tokens.API_KEY_PREFIX):
            principal = await principal_for_api_key(session, credential)
        else:
            try:
                claims = tokens.decode_access_token(
                    credential,
                    secret=settings.jwt_secret.get_secret_value(),
                    issuer=settings.jwt_issuer,
                    now=datetime.now(UTC),
                )
            except tokens.InvalidToken as exc:
                raise Unauthorized("Invalid or expired access token.") from exc
            principal = await principal_for_user(
                session,
                user_id=claims.user_id,
                tenant_id=claims.tenant_id,
                family_id=claims.family_id,
            )
        await session.rollback()
    request.state.principal_actor = principal.actor
    return principal


Authenticated = Annotated[Principal, Depends(authenticate)]
