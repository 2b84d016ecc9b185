"""What attribution and commission need from PostgreSQL, as a versioned in-memory snapshot.

Per tenant: programs (attribution policy, hold days, currency), agent-owned coupon codes,
agents (email for self-referral checks, parent chain for manager overrides), commission rule
sets (the newest version per program for new accruals, every version by `(rule_id, version)` so
an edit reprices with the rules the order was accrued under), and the reporting currency with
its exchange rates (`fx_rate`: the rate an order's conversion and entries are fixed at), and
each shop's collection membership (`product_collections`, see `dataflows.commission.collections`).

`load_snapshot` reads it in one transaction with the sync driver (psycopg); `PostgresConfig`
caches it and reloads it when it is older than `refresh_seconds` (on the next lookup, so a
quiet dataflow does not poll). A failed reload keeps the previous snapshot. Every ledger entry
records the `rule_id`/`rule_version` it was computed with, so a later rule change never
rewrites history. Listening to `refstream.config` for immediate reloads is not wired yet.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from functools import cached_property
from types import MappingProxyType
from typing import Any, Protocol

import psycopg
import structlog

from dataflows.attribution.logic import (
    AgentIdentity,
    AgentStatus,
    AttributionModel,
    AttributionPolicy,
    CouponOwner,
    StatusHistory,
)
from dataflows.commission.logic import override_chain
from schemas.commission_rules import CommissionRuleSet
from schemas.conversion import Conversion, normalise_coupon, normalise_email
from schemas.ids import derived_id

log = structlog.get_logger(__name__)

DEFAULT_POLICY = AttributionPolicy()
_EMPTY: Mapping[str, tuple[str, ...]] = MappingProxyType({})
MAX_CHAIN = 16  # manager levels followed up the hierarchy (guards against cycles)


@dataclass(frozen=True, slots=True)
class ProgramConfig:
    program_id: str
    policy: AttributionPolicy
    hold_days: int
    currency: str


@dataclass(frozen=True, slots=True)
class AgentConfig:
    agent_id: str
    parent_agent_id: str | None
    email: str | None
    statuses: StatusHistory = field(default_factory=StatusHistory)  # no changes: active


@dataclass(frozen=True)
class TenantConfig:
    """One tenant's slice of the snapshot. Unknown tenants get an empty one."""

    tenant_id: str
    programs: Mapping[str, ProgramConfig] = field(default_factory=dict)
    coupons: Mapping[str, CouponOwner] = field(default_factory=dict)
    agents: Mapping[str, AgentConfig] = field(default_factory=dict)
    rules: Mapping[str, CommissionRuleSet] = field(default_factory=dict)  # newest per program
    rule_versions: Mapping[tuple[str, int], CommissionRuleSet] = field(default_factory=dict)
    reporting_currency: str | None = None  # tenants.currency; None: the tenant is not known
    # currency → ((valid_from, rate), …) sorted by valid_from
    fx_rates: Mapping[str, tuple[tuple[datetime, Decimal], ...]] = field(default_factory=dict)
    # shop → product id → collection ids (sorted): the known collection membership
    collections: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def product_collections(self, shop_id: str | None) -> Mapping[str, tuple[str, ...]]:
        """Product id → ids of the collections it belongs to, in `shop_id`'s known membership
        (empty for a shop without any); `None` (an order without a shop) gets every shop's of
        the tenant (Shopify's product ids are global, so shops never collide)."""
        if shop_id is not None:
            return self.collections.get(shop_id, _EMPTY)
        return self._all_collections

    @cached_property
    def _all_collections(self) -> Mapping[str, tuple[str, ...]]:
        if len(self.collections) == 1:
            return next(iter(self.collections.values()))
        merged: dict[str, set[str]] = {}
        for membership in self.collections.values():
            for product_id, ids in membership.items():
                merged.setdefault(product_id, set()).update(ids)
        return MappingProxyType({p: tuple(sorted(ids)) for p, ids in merged.items()})

    @property
    def default_program(self) -> ProgramConfig | None:
        """The tenant's first program by id: its policy applies to referrals without a program
        (and its rules to decisions without one)."""
        return self.programs[min(self.programs)] if self.programs else None

    def policy(self) -> AttributionPolicy:
        """The default attribution policy (see `default_program`)."""
        program = self.default_program
        return program.policy if program is not None else DEFAULT_POLICY

    @cached_property
    def policies(self) -> Mapping[str, AttributionPolicy]:
        """Every program's own attribution policy, by program id."""
        return MappingProxyType({pid: p.policy for pid, p in self.programs.items()})

    def program_for(self, program_id: str | None) -> ProgramConfig | None:
        """`program_id`'s settings; the default program's for `None` or a program not
        configured (`None` only for a tenant without programs)."""
        program = self.programs.get(program_id) if program_id is not None else None
        return program or self.default_program

    def policy_for(self, program_id: str | None) -> AttributionPolicy:
        """`program_id`'s policy (see `program_for`)."""
        program = self.program_for(program_id)
        return program.policy if program is not None else DEFAULT_POLICY

    def max_lookback_days(self) -> int:
        days = [p.policy.lookback_days for p in self.programs.values()]
        return max(days, default=DEFAULT_POLICY.lookback_days)

    def rules_for(self, program_id: str | None) -> CommissionRuleSet | None:
        """Newest rule set of `program_id` (the default program when `None`)."""
        if program_id is None:
            default = self.default_program
            program_id = default.program_id if default is not None else None
        return self.rules.get(program_id) if program_id is not None else None

    def agent_chain(self, agent_id: str, at: datetime | None = None) -> tuple[str, ...]:
        """`(agent, manager, manager's manager, …)`, stopping at a repeat or `MAX_CHAIN`; with
        `at`, the managers not active at `at` are left out (`override_chain`)."""
        chain = [agent_id]
        current = self.agents.get(agent_id)
        while current is not None and current.parent_agent_id and len(chain) < MAX_CHAIN:
            if current.parent_agent_id in chain:
                break
            chain.append(current.parent_agent_id)
            current = self.agents.get(current.parent_agent_id)
        return tuple(chain) if at is None else override_chain(chain, self._statuses, at)

    def statuses(self, agent_ids: set[str]) -> dict[str, StatusHistory]:
        """Status histories of the given agents (those the configuration knows)."""
        known = self._statuses
        return {agent_id: known[agent_id] for agent_id in agent_ids if agent_id in known}

    @cached_property
    def _statuses(self) -> Mapping[str, StatusHistory]:
        return MappingProxyType({a: agent.statuses for a, agent in self.agents.items()})

    def identities(self, agent_ids: set[str]) -> dict[str, AgentIdentity]:
        """Self-referral identities of the given agents (those with an email)."""
        known = self._identities
        return {agent_id: known[agent_id] for agent_id in agent_ids if agent_id in known}

    @cached_property
    def _identities(self) -> Mapping[str, AgentIdentity]:
        # Built once per configuration snapshot, not per order.
        out: dict[str, AgentIdentity] = {}
        for agent_id, agent in self.agents.items():
            email = normalise_email(agent.email)
            if email is not None:
                out[agent_id] = AgentIdentity(agent_id=agent_id, emails=frozenset({email}))
        return MappingProxyType(out)

    def fx_rate(self, currency: str, at: datetime) -> Decimal | None:
        """Units of the reporting currency per 1 `currency` at instant `at` (aware): 1 for the
        reporting currency itself, else the rate with the latest `valid_from` ≤ `at`; `None`
        when none is known (never a guess: the caller decides what an unknown rate means)."""
        if currency == self.reporting_currency:
            return Decimal(1)
        rates = self.fx_rates.get(currency, ())
        index = bisect_right(rates, at, key=lambda r: r[0])
        return rates[index - 1][1] if index else None

    def cross_rate(self, source: str, target: str, at: datetime) -> Fraction | None:
        """Units of `target` per 1 `source` at instant `at`, exactly, through the reporting
        currency (`fx_rate(source) / fx_rate(target)`): how a rule set in `source` is applied
        to an order in `target`, at the rate fixed at the order's event time. 1 for one
        currency; `None` when either rate is unknown (or zero) at `at`."""
        if source == target:
            return Fraction(1)
        numerator, denominator = self.fx_rate(source, at), self.fx_rate(target, at)
        if numerator is None or not denominator:
            return None
        return Fraction(numerator) / Fraction(denominator)

    def rules_rate(self, rules: CommissionRuleSet, conversion: Conversion) -> Fraction | None:
        """The rate `rules`' amounts apply to `conversion` at: units of the order's currency per
        1 of the rules' currency at the order's event time (see `cross_rate`)."""
        return self.cross_rate(rules.currency, conversion.currency, conversion.occurred_at)


@dataclass(frozen=True)
class ConfigSnapshot:
    """Every tenant's configuration; `version` is a digest of the content (same rows → same
    version), so logs and metrics can say which configuration a decision used."""

    tenants: Mapping[str, TenantConfig]
    version: str

    def tenant(self, tenant_id: str) -> TenantConfig:
        return self.tenants.get(tenant_id) or TenantConfig(tenant_id=tenant_id)


class ConfigProvider(Protocol):
    """Where the dataflow gets a tenant's configuration from (PostgreSQL, or a test's snapshot)."""

    def tenant(self, tenant_id: str) -> TenantConfig: ...


def status_histories(
    agents: Sequence[tuple[Any, ...]], changes: Sequence[tuple[Any, ...]]
) -> dict[tuple[str, str], StatusHistory]:
    """`(tenant, agent)` → status history, from `agent_status_changes` rows `(tenant, agent,
    status, effective_at)` ordered by `effective_at` then recording order. An agent row
    `(tenant, agent, parent, email, status)` without any change (a row older than the history,
    or written without the API) has its `status` at all times; a 4-column agent row is active."""
    out: dict[tuple[str, str], StatusHistory] = {}
    per: dict[tuple[str, str], list[tuple[datetime, AgentStatus]]] = {}
    for tenant_id, agent_id, status, effective_at in changes:
        per.setdefault((tenant_id, agent_id), []).append((effective_at, AgentStatus(status)))
    for key, history in per.items():
        out[key] = StatusHistory(tuple(history))
    for tenant_id, agent_id, *_, status in (a for a in agents if len(a) > 4):
        if (tenant_id, agent_id) not in out and status != AgentStatus.ACTIVE:
            out[(tenant_id, agent_id)] = StatusHistory(initial=AgentStatus(status))
    return out


def collection_membership(
    rows: Sequence[tuple[Any, ...]],
) -> dict[tuple[str, str], Mapping[str, tuple[str, ...]]]:
    """`(tenant, shop)` → product id → collection ids (sorted, unique), from the rows `(tenant,
    shop, collection id, product ids)` of collections whose membership is known."""
    per: dict[tuple[str, str], dict[str, set[str]]] = {}
    for tenant_id, shop, collection_id, product_ids in rows:
        products = per.setdefault((tenant_id, shop), {})
        for product_id in product_ids:
            products.setdefault(product_id, set()).add(collection_id)
    return {
        key: MappingProxyType({p: tuple(sorted(ids)) for p, ids in products.items()})
        for key, products in per.items()
    }


def build_snapshot(
    programs: list[tuple[Any, ...]],
    coupons: list[tuple[Any, ...]],
    agents: list[tuple[Any, ...]],
    rules: list[tuple[Any, ...]],
    *,
    tenant_rows: Sequence[tuple[Any, ...]] = (),
    fx_rates: Sequence[tuple[Any, ...]] = (),
    agent_statuses: Sequence[tuple[Any, ...]] = (),
    collections: Sequence[tuple[Any, ...]] = (),
) -> ConfigSnapshot:
    """A snapshot from raw rows (the shapes `load_snapshot` selects). Rules come ordered so that
    the last row per program is its newest; rates so that each currency's are oldest first;
    status changes as `status_histories` says; collection rows `(tenant, shop, collection,
    product ids)` as `collection_membership` says."""
    per: dict[str, dict[str, Any]] = {}

    def slot(tenant_id: str) -> dict[str, Any]:
        return per.setdefault(
            tenant_id,
            {"programs": {}, "coupons": {}, "agents": {}, "rules": {}, "rule_versions": {}},
        )

    for tenant_id, pid, lookback, model, coupon_wins, binding, hold, currency in programs:
        policy = AttributionPolicy(
            lookback_days=lookback,
            model=AttributionModel(model),
            coupon_beats_cookie=coupon_wins,
            binding_months=binding,
        )
        slot(tenant_id)["programs"][pid] = ProgramConfig(pid, policy, hold, currency.strip())
    for tenant_id, code, pid, agent_id in coupons:
        key = normalise_coupon(code)
        slot(tenant_id)["coupons"][key] = CouponOwner(code=key, agent_id=agent_id, program_id=pid)
    histories = status_histories(agents, agent_statuses)
    for tenant_id, agent_id, parent, email, *_ in agents:
        history = histories.get((tenant_id, agent_id), StatusHistory())
        slot(tenant_id)["agents"][agent_id] = AgentConfig(agent_id, parent, email, history)
    for tenant_id, _rule_id, _version, program_id, body in rules:
        ruleset = CommissionRuleSet.model_validate(body)
        slot(tenant_id)["rules"][program_id] = ruleset
        slot(tenant_id)["rule_versions"][(ruleset.rule_id, ruleset.version)] = ruleset
    for tenant_id, currency in tenant_rows:
        slot(tenant_id)["reporting_currency"] = currency.strip()
    for tenant_id, currency, rate, valid_from in fx_rates:
        slot(tenant_id).setdefault("fx_rates", {}).setdefault(currency.strip(), []).append(
            (valid_from, rate)
        )
    for (tenant_id, shop), membership in collection_membership(collections).items():
        slot(tenant_id).setdefault("collections", {})[shop] = membership
    for parts in per.values():
        parts["fx_rates"] = {c: tuple(r) for c, r in parts.get("fx_rates", {}).items()}
    tenants = {t: TenantConfig(tenant_id=t, **parts) for t, parts in per.items()}
    digest = derived_id("cfg", repr((programs, coupons, agents, [r[:4] for r in rules])))
    if tenant_rows or fx_rates:  # reporting currencies and rates are configuration too
        digest = derived_id("cfg", digest, repr((list(tenant_rows), list(fx_rates))))
    if agent_statuses:  # so are agents' status changes
        digest = derived_id("cfg", digest, repr(list(agent_statuses)))
    if collections:  # and collection membership
        digest = derived_id("cfg", digest, repr(list(collections)))
    return ConfigSnapshot(tenants=tenants, version=digest)


def load_snapshot(postgres_url: str) -> ConfigSnapshot:
    """Read every tenant's configuration in one read-only transaction."""
    with psycopg.connect(postgres_url) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        programs = conn.execute(
            "SELECT tenant_id, id, lookback_days, attribution_model, coupon_beats_cookie,"
            " binding_months, hold_days, currency FROM programs ORDER BY tenant_id, id"
        ).fetchall()
        coupons = conn.execute(
            "SELECT tenant_id, code, program_id, agent_id FROM coupon_codes"
            " ORDER BY tenant_id, code"
        ).fetchall()
        # Every agent, whatever its status: a terminated agent's managers still get overrides.
        agents = conn.execute(
            "SELECT tenant_id, id, parent_agent_id, email, status FROM agents"
            " ORDER BY tenant_id, id"
        ).fetchall()
        agent_statuses = conn.execute(
            "SELECT tenant_id, agent_id, status, effective_at FROM agent_status_changes"
            " ORDER BY tenant_id, agent_id, effective_at, recorded_at, id"
        ).fetchall()
        # Only reviewed-and-activated versions are live; ordered so the newest active version of
        # each program comes last (it wins in build_snapshot).
        rules = conn.execute(
            "SELECT tenant_id, id, version, program_id, body FROM commission_rules"
            " WHERE status = 'active' ORDER BY tenant_id, program_id, created_at, version"
        ).fetchall()
        tenants = conn.execute("SELECT id, currency FROM tenants ORDER BY id").fetchall()
        fx_rates = conn.execute(
            "SELECT tenant_id, currency, rate, valid_from FROM fx_rates"
            " ORDER BY tenant_id, currency, valid_from"
        ).fetchall()
        collections = conn.execute(
            "SELECT tenant_id, shop, collection_id, product_ids FROM shop_collections"
            " WHERE NOT deleted AND product_ids IS NOT NULL"
            " ORDER BY tenant_id, shop, collection_id"
        ).fetchall()
    return build_snapshot(
        programs, coupons, agents, rules, tenant_rows=tenants, fx_rates=fx_rates,
        agent_statuses=agent_statuses, collections=collections,
    )  # fmt: skip


class StaticConfig:
    """A fixed snapshot (tests, replays of a recorded configuration)."""

    def __init__(self, snapshot: ConfigSnapshot) -> None:
        self.snapshot = snapshot

    def tenant(self, tenant_id: str) -> TenantConfig:
        return self.snapshot.tenant(tenant_id)


class PostgresConfig:
    """The snapshot from PostgreSQL, loaded lazily and reloaded when older than
    `refresh_seconds`. One per process; safe to share between the workers of a process."""

    def __init__(
        self,
        postgres_url: str,
        *,
        refresh_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = postgres_url
        self._refresh = refresh_seconds
        self._clock = clock
        self._snapshot: ConfigSnapshot | None = None
        self._loaded_at = 0.0

    def current(self) -> ConfigSnapshot:
        now = self._clock()
        if self._snapshot is None or now - self._loaded_at >= self._refresh:
            try:
                snapshot = load_snapshot(self._url)
            except psycopg.Error as exc:
                if self._snapshot is None:
                    raise
                log.warning("config.reload_failed", error=str(exc)[:300])
                self._loaded_at = now  # keep the old snapshot; try again after the interval
                return self._snapshot
            if self._snapshot is None or snapshot.version != self._snapshot.version:
                log.info("config.loaded", version=snapshot.version, tenants=len(snapshot.tenants))
            self._snapshot, self._loaded_at = snapshot, now
        return self._snapshot

    def tenant(self, tenant_id: str) -> TenantConfig:
        snapshot = self.current()
        # A tenant registered since the last load is found at once, not after the interval;
        # unknown tenants cause at most one extra load per second.
        if tenant_id not in snapshot.tenants and self._clock() - self._loaded_at >= 1.0:
            self._loaded_at = float("-inf")
            snapshot = self.current()
        return snapshot.tenant(tenant_id)
