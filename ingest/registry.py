"""In-memory registrations for the hot path: shops (webhook secrets), Odoo tokens, links.

Loaded from PostgreSQL (owned by the business core) at start, reloaded when a change is
announced on Redis (`REGISTRY_CHANGED_CHANNEL`) and every `refresh_seconds` as a safety net,
so a request never queries the database for a registration it knows. A shop domain it does not
know is looked up once, by itself (`Registry.shop`): a shop created a moment ago is accepted on
its first webhook, without waiting for the announcement; a domain found nowhere is remembered as
unknown for `ingest_unknown_shop_ttl_seconds`, so a stream of bad domains costs PostgreSQL at
most one query per domain per that time (and at most `LOOKUPS_PER_SECOND` per worker). Other
unknown keys trigger at most one early reload per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import redis.asyncio as aioredis
import structlog

from ingest.claims import ClaimRecord
from ingest.clicks import ClickPolicy
from schemas.registry import REGISTRY_CHANGED_CHANNEL

log = structlog.get_logger("ingest.registry")

# Single-shop lookups a worker makes per second at most (a burst of made-up domains must not
# become a burst of database queries); beyond that an unknown domain is refused unasked.
LOOKUPS_PER_SECOND = 20
_SHOP_COLUMNS = (
    "SELECT domain, tenant_id, secret, previous_secret, install,"
    " uninstalled_at IS NOT NULL AS uninstalled FROM shops"
)


def _shop_record(r: Any, app_secret: str | None) -> ShopRecord:
    """A `shops` row as the ingress checks it: an OAuth shop's webhooks are signed with the
    app's client secret, a custom app's with its own (and the previous one during rotation)."""
    own = app_secret if r["install"] == "oauth" else r["secret"]
    return ShopRecord(
        domain=r["domain"],
        tenant_id=r["tenant_id"],
        secrets=tuple(s for s in (own, r["previous_secret"]) if s),
        install=r["install"],
        uninstalled=r["uninstalled"],
    )


@dataclass(frozen=True, slots=True)
class ShopRecord:
    domain: str
    tenant_id: str
    secrets: tuple[str, ...]  # current first, then the previous one during rotation
    install: str = "custom"  # custom: its own app's secret; oauth: the app's client secret
    uninstalled: bool = False  # `app/uninstalled` came: its webhooks are refused


@dataclass(frozen=True, slots=True)
class LinkRecord:
    code: str
    link_id: str
    tenant_id: str
    program_id: str
    agent_id: str
    landing_url: str
    policy: ClickPolicy  # the program's, shared by its links


@dataclass(frozen=True, slots=True)
class Snapshot:
    shops: dict[str, ShopRecord]
    erp_tokens: dict[str, str]  # token hash -> tenant id
    links: dict[str, LinkRecord]
    # Browser origins of the shops' storefronts, for the pixel's CORS: `https://{domain}`.
    origins: dict[str, ShopRecord] = field(default_factory=dict)
    # Custom-app claims waiting for their first signed webhook (`ingest.claims`), by domain.
    claims: dict[str, tuple[ClaimRecord, ...]] = field(default_factory=dict)


def storefront_origin(domain: str) -> str:
    """The browser `Origin` of a registered shop's storefront (HTTPS, default port)."""
    return f"https://{domain.lower()}"


async def load_snapshot(dsn: str, app_secret: str | None = None) -> Snapshot:
    """Everything registered. `app_secret` is the Shopify app's client secret, which signs the
    webhooks of every shop installed through OAuth (None: no OAuth shop can be verified)."""
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        shops = {
            r["domain"]: _shop_record(r, app_secret)
            for r in await conn.fetch(_SHOP_COLUMNS + " WHERE active")
        }
        claims: dict[str, list[ClaimRecord]] = {}
        for r in await conn.fetch(
            "SELECT domain, tenant_id, secret FROM shop_claims WHERE expires_at > now()"
            " ORDER BY created_at"
        ):
            claims.setdefault(r["domain"], []).append(
                ClaimRecord(r["domain"], r["tenant_id"], r["secret"])
            )
        tokens = {
            r["token_hash"]: r["tenant_id"]
            for r in await conn.fetch("SELECT token_hash, tenant_id FROM erp_endpoints")
        }
        links = {}
        policies: dict[str, ClickPolicy] = {}  # one per program, shared by its links
        for r in await conn.fetch(
            "SELECT l.code, l.id, l.tenant_id, l.program_id, l.agent_id, p.landing_url,"
            " p.click_max_age_hours, p.bot_user_agents, p.relay_token_hash, p.relay_ips"
            " FROM links l JOIN programs p ON p.id = l.program_id"
        ):
            policy = policies.get(r["program_id"])
            if policy is None:
                policy = policies[r["program_id"]] = ClickPolicy.from_settings(
                    max_age_hours=r["click_max_age_hours"],
                    bot_user_agents=r["bot_user_agents"],
                    relay_token_hash=r["relay_token_hash"],
                    relay_ips=r["relay_ips"],
                )
            links[r["code"]] = LinkRecord(
                code=r["code"],
                link_id=r["id"],
                tenant_id=r["tenant_id"],
                program_id=r["program_id"],
                agent_id=r["agent_id"],
                landing_url=r["landing_url"],
                policy=policy,
            )
    finally:
        await conn.close()
    origins = {
        storefront_origin(shop.domain): shop for shop in shops.values() if not shop.uninstalled
    }
    return Snapshot(
        shops=shops,
        erp_tokens=tokens,
        links=links,
        origins=origins,
        claims={domain: tuple(found) for domain, found in claims.items()},
    )


class Registry:
    def __init__(
        self,
        dsn: str,
        redis: aioredis.Redis,
        refresh_seconds: float,
        unknown_shop_ttl_seconds: float = 5.0,
        app_secret: str | None = None,
    ) -> None:
        self._dsn = dsn
        self._app_secret = app_secret
        self._redis = redis
        self._refresh = refresh_seconds
        self._unknown_ttl = unknown_shop_ttl_seconds
        self._unknown_shops: dict[str, float] = {}  # domain -> monotonic time it expires
        self._lookups: dict[str, asyncio.Future[ShopRecord | None]] = {}  # in flight
        self._lookup_window = (0, 0)  # (second, lookups made in it)
        self._pool: asyncpg.Pool | None = None
        self._snapshot = Snapshot({}, {}, {})
        self._last_load = 0.0
        self._lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        await self.reload()
        self._tasks = [
            asyncio.create_task(self._listen(), name="registry-listen"),
            asyncio.create_task(self._periodic(), name="registry-refresh"),
        ]

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._tasks = []
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def reload(self) -> None:
        async with self._lock:
            self._snapshot = await load_snapshot(self._dsn, self._app_secret)
            self._last_load = time.monotonic()
            self._unknown_shops.clear()  # a reload knows every shop that exists

    async def shop(self, domain: str) -> ShopRecord | None:
        found = self._snapshot.shops.get(domain)
        if found is not None:
            return found
        expires = self._unknown_shops.get(domain)
        if expires is not None and time.monotonic() < expires:
            return None
        pending = self._lookups.get(domain)
        if pending is not None:  # the same domain asked by concurrent requests: one query
            return await asyncio.shield(pending)
        if not self._may_look_up():
            return None
        future: asyncio.Future[ShopRecord | None] = asyncio.get_running_loop().create_future()
        self._lookups[domain] = future
        try:
            found = await self._look_up_shop(domain)
            future.set_result(found)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: concurrent waiters may be none
            raise
        finally:
            del self._lookups[domain]
        return found

    def _may_look_up(self) -> bool:
        second = int(time.monotonic())
        window, made = self._lookup_window
        made = made + 1 if window == second else 1
        self._lookup_window = (second, made)
        return made <= LOOKUPS_PER_SECOND

    async def _look_up_shop(self, domain: str) -> ShopRecord | None:
        """The active shop `domain` from PostgreSQL, kept in the snapshot when found (the next
        reload has it anyway); remembered as unknown for a while when not. None, without
        remembering, when the database does not answer."""
        try:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn, min_size=0, max_size=2, timeout=5, command_timeout=5
                )
            row = await self._pool.fetchrow(_SHOP_COLUMNS + " WHERE domain = $1 AND active", domain)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            log.warning("registry.shop_lookup_failed", domain=domain, error=str(exc))
            return None
        if row is None:
            if len(self._unknown_shops) > 10_000:  # bounded: a flood of made-up domains
                self._unknown_shops.clear()
            self._unknown_shops[domain] = time.monotonic() + self._unknown_ttl
            return None
        shop = _shop_record(row, self._app_secret)
        self._snapshot.shops[shop.domain] = shop
        self._snapshot.origins[storefront_origin(shop.domain)] = shop
        log.info("registry.shop_found", domain=domain)
        return shop

    async def claims(self, domain: str) -> tuple[ClaimRecord, ...]:
        """The pending custom-app claims of `domain` (a claim filed a moment ago included)."""
        found = self._snapshot.claims.get(domain)
        if found is None and await self._early_reload():
            found = self._snapshot.claims.get(domain)
        return found or ()

    async def storefront(self, origin: str) -> ShopRecord | None:
        """The active shop whose storefront is the browser origin `origin` (None: none is)."""
        key = origin.strip().lower()
        found = self._snapshot.origins.get(key)
        if found is None and await self._early_reload():
            found = self._snapshot.origins.get(key)
        return found

    async def erp_tenant(self, token_hash: str) -> str | None:
        found = self._snapshot.erp_tokens.get(token_hash)
        if found is None and await self._early_reload():
            found = self._snapshot.erp_tokens.get(token_hash)
        return found

    async def link(self, code: str) -> LinkRecord | None:
        found = self._snapshot.links.get(code)
        if found is None and await self._early_reload():
            found = self._snapshot.links.get(code)
        return found

    async def _early_reload(self) -> bool:
        if time.monotonic() - self._last_load < 1.0:
            return False
        try:
            await self.reload()
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("registry.reload_failed", error=str(exc))
            return False
        return True

    async def _listen(self) -> None:
        while not self._stopping.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(REGISTRY_CHANGED_CHANNEL)
                while not self._stopping.is_set():
                    # redis-py's get_message can swallow a cancellation: the flag ends the loop.
                    message = await pubsub.get_message(timeout=0.5)
                    if message is not None:
                        await self.reload()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("registry.listen_failed", error=str(exc))
                await asyncio.sleep(1)
            finally:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(pubsub.aclose(), 1.0)

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self._refresh)
            try:
                await self.reload()
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("registry.reload_failed", error=str(exc))
