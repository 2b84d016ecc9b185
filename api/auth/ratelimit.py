"""Login rate limiting in Redis: a fixed window per (company, email, client IP)."""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis

from api.errors import TooManyRequests


def login_key(company: str, email: str, client_ip: str) -> str:
    """The Redis key; the email is hashed so keys carry no personal data."""
    digest = hashlib.sha256(f"{company}\x1f{email.strip().lower()}".encode()).hexdigest()[:32]
    return f"refstream:ratelimit:login:{digest}:{client_ip}"


async def check_login_rate(
    redis: Redis, *, company: str, email: str, client_ip: str, limit: int, window_seconds: int
) -> None:
    """Count one attempt; raise `TooManyRequests` (with Retry-After) past `limit` per window."""
    key = login_key(company, email, client_ip)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, window_seconds, nx=True)
        pipe.ttl(key)
        attempts, _, ttl = await pipe.execute()
    if int(attempts) > limit:
        retry_after = max(int(ttl), 1)
        raise TooManyRequests(
            f"Too many login attempts; retry in {retry_after} s.", retry_after=retry_after
        )
