"""What a replay covers, what it counts and returns, and the configuration it runs with
(`--what-if` rule sets)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from dataflows.config import (
    ConfigProvider,
    ConfigSnapshot,
    StaticConfig,
    TenantConfig,
)
from dataflows.stages.base import Tuning
from schemas.commission_rules import CommissionRuleSet

DAY = timedelta(days=1)
# Orders wait for a cited click until it arrives or the input ends, never for wall-clock time
# (the live flow's 15-minute processing-time wait would make a slow replay decide differently).
REPLAY_TUNING = Tuning(order_wait_wall_ms=10 * 365 * 86_400_000, holds=False, snapshots=False)
PAGE_ROWS = 20_000

ReplaySource = Literal["archive", "kafka"]


@dataclass(frozen=True)
class ReplayScope:
    """Which part of a tenant's history a replay covers (see the module docstring)."""

    tenant_id: str
    since: datetime | None = None  # event time, inclusive
    until: datetime | None = None  # event time, exclusive
    shops: tuple[str, ...] = ()
    programs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for bound in (self.since, self.until):
            if bound is not None and bound.utcoffset() is None:
                raise ValueError("replay time bounds must be timezone-aware")

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.astimezone(UTC).isoformat() if self.since else None,
            "until": self.until.astimezone(UTC).isoformat() if self.until else None,
            "shops": sorted(self.shops),
            "programs": sorted(self.programs),
        }


@dataclass
class ReplayCounters:
    """Filled while the replay runs (same process): events read, entries and orders written,
    dead letters by reason prefix."""

    events: int = 0
    entries: int = 0
    orders: int = 0
    dead: dict[str, int] = field(default_factory=dict)

    @property
    def dead_letters(self) -> int:
        return sum(self.dead.values())


@dataclass(frozen=True)
class ReplayResult:
    replay_id: str
    events: int
    entries: int
    orders: int
    dead: dict[str, int]
    ledger_digest: str
    config_version: str


# --- configuration ------------------------------------------------------------------------


class WhatIfConfig:
    """`base`'s configuration with `rules` as the newest rule set of its program for `tenant_id`
    (what a proposed rule set would have produced)."""

    def __init__(self, base: ConfigProvider, tenant_id: str, rules: CommissionRuleSet) -> None:
        self._base = base
        self._tenant_id = tenant_id
        self._rules = rules
        self._cache: tuple[TenantConfig, TenantConfig] | None = None

    def tenant(self, tenant_id: str) -> TenantConfig:
        cfg = self._base.tenant(tenant_id)
        if tenant_id != self._tenant_id:
            return cfg
        if self._cache is not None and self._cache[0] is cfg:
            return self._cache[1]
        rules = self._rules
        changed = replace(
            cfg,
            rules={**cfg.rules, rules.program_id: rules},
            rule_versions={**cfg.rule_versions, (rules.rule_id, rules.version): rules},
        )
        self._cache = (cfg, changed)
        return changed


def replay_config(
    snapshot: ConfigSnapshot, tenant_id: str, what_if: CommissionRuleSet | None
) -> ConfigProvider:
    static = StaticConfig(snapshot)
    return static if what_if is None else WhatIfConfig(static, tenant_id, what_if)
