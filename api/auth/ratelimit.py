"""Login rate limiting in Redis: fixed windows over four keys.

- every attempt per (company, email, client IP): one client guessing one password;
- every attempt per client IP: one client spraying many emails or companies;
- failed attempts per (company, email), from any IP: a distributed guess at one account;
- failed attempts per company: a distributed spray over one company's users.
The wider keys count failures only, so a busy office behind one address or a user who logs in
often is not limited by its own successes. Past any limit every attempt answers 429.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from api.errors import TooManyRequests
from schemas.settings import Settings

_PREFIX = "refstream:ratelimit:login"


@dataclass(frozen=True, slots=True)
class LoginLimits:
    per_client: int
    per_ip: int
    per_email_failures: int
    per_company_failures: int
    window_seconds: int

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        return cls(
            per_client=settings.login_rate_limit,
            per_ip=settings.login_rate_limit_per_ip,
            per_email_failures=settings.login_failure_limit_per_email,
            per_company_failures=settings.login_failure_limit_per_company,
            window_seconds=settings.login_rate_window_seconds,
        )


@dataclass(frozen=True, slots=True)
class LoginAttempt:
    company: str
    email: str
    client_ip: str


def _digest(*parts: str) -> str:
    """Keys carry no personal data: emails (and the company next to them) are hashed."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def login_keys(attempt: LoginAttempt) -> dict[str, str]:
    account = _digest(attempt.company, attempt.email.strip().lower())
    return {
        "client": f"{_PREFIX}:{account}:{attempt.client_ip}",
        "ip": f"{_PREFIX}:ip:{attempt.client_ip}",
        "email_failures": f"{_PREFIX}:failures:email:{account}",
        "company_failures": f"{_PREFIX}:failures:company:{_digest(attempt.company)}",
    }


def retry_after(counts: dict[str, tuple[int, int, int]]) -> int | None:
    """Seconds to wait when a counter is past its limit, else None. `counts` maps a counter
    to (count, limit, seconds left in its window)."""
    over = [max(ttl, 1) for count, limit, ttl in counts.values() if count > limit]
    return max(over) if over else None


async def check_login_rate(redis: Redis, attempt: LoginAttempt, limits: LoginLimits) -> None:
    """Count this attempt; raise `TooManyRequests` (with Retry-After) past any limit."""
    keys = login_keys(attempt)
    async with redis.pipeline(transaction=True) as pipe:
        for name in ("client", "ip"):
            pipe.incr(keys[name])
            pipe.expire(keys[name], limits.window_seconds, nx=True)
        for name in ("client", "ip", "email_failures", "company_failures"):
            pipe.get(keys[name])
            pipe.ttl(keys[name])
        results = await pipe.execute()
    values = results[4:]
    limit_of = {
        "client": limits.per_client,
        "ip": limits.per_ip,
        # The failures counted so far plus this attempt, which may fail too.
        "email_failures": limits.per_email_failures - 1,
        "company_failures": limits.per_company_failures - 1,
    }
    counts = {
        name: (int(values[2 * i] or 0), limit_of[name], int(values[2 * i + 1]))
        for i, name in enumerate(limit_of)
    }
    wait = retry_after(counts)
    if wait is not None:
        raise TooManyRequests(f"Too many login attempts; retry in {wait} s.", retry_after=wait)


async def count_login_failure(redis: Redis, attempt: LoginAttempt, limits: LoginLimits) -> None:
    keys = login_keys(attempt)
    async with redis.pipeline(transaction=True) as pipe:
        for name in ("email_failures", "company_failures"):
            pipe.incr(keys[name])
            pipe.expire(keys[name], limits.window_seconds, nx=True)
        await pipe.execute()
