"""Access tokens (JWT, HS256), opaque refresh tokens and API keys. Pure: time is a parameter.

Only hashes of refresh tokens and API keys are stored; the plaintext is shown once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

API_KEY_PREFIX = "rsk_"
REFRESH_TOKEN_PREFIX = "rrt_"
_ALGORITHM = "HS256"


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: str
    tenant_id: str
    expires_at: datetime
    family_id: str | None  # the refresh-token family (login session) it was issued in


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong kind."""


def issue_access_token(
    *,
    user_id: str,
    tenant_id: str,
    secret: str,
    issuer: str,
    ttl: timedelta,
    now: datetime,
    family_id: str | None = None,
) -> tuple[str, datetime]:
    """A signed access token and its expiry; `family_id` ties it to its login session, so
    revoking that session's refresh tokens ends it too."""
    expires_at = now + ttl
    claims = {
        "sub": user_id,
        "tid": tenant_id,
        "iss": issuer,
        "typ": "access",
        "iat": int(now.timestamp()),
        "exp": int(expires_at.timestamp()),
        "jti": secrets.token_hex(8),
    }
    if family_id is not None:
        claims["fam"] = family_id
    return jwt.encode(claims, secret, algorithm=_ALGORITHM), expires_at


def decode_access_token(token: str, *, secret: str, issuer: str, now: datetime) -> AccessClaims:
    """Verify signature, issuer, kind and expiry at `now`; raise `InvalidToken` otherwise."""
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[_ALGORITHM],
            issuer=issuer,
            options={"require": ["sub", "tid", "exp", "iat"], "verify_exp": False},
        )
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    expires_at = datetime.fromtimestamp(int(claims["exp"]), tz=now.tzinfo)
    if now >= expires_at:
        raise InvalidToken("token expired")
    family = claims.get("fam")
    return AccessClaims(
        user_id=claims["sub"],
        tenant_id=claims["tid"],
        expires_at=expires_at,
        family_id=family if isinstance(family, str) else None,
    )


def new_refresh_token() -> str:
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def secret_hash(plaintext: str) -> str:
    """SHA-256 of a high-entropy secret (a slow hash adds nothing for 256 random bits)."""
    return hashlib.sha256(plaintext.encode()).hexdigest()
