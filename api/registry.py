"""Announcing registration changes (shops, links) to the ingress, which reloads its cache."""

from __future__ import annotations

import structlog
from fastapi import Request
from redis.asyncio import Redis

from schemas.registry import REGISTRY_CHANGED_CHANNEL

log = structlog.get_logger(__name__)


async def announce_registry_change(request: Request) -> None:
    """Publish on `REGISTRY_CHANGED_CHANNEL`. Runs after commit; a lost announcement only delays
    the ingress until its periodic reload, so a failure is logged, not raised."""
    redis: Redis = request.app.state.redis
    try:
        await redis.publish(REGISTRY_CHANGED_CHANNEL, b"changed")
    except Exception as exc:  # the periodic reload is the safety net
        log.warning("registry.announce_failed", error=str(exc))
