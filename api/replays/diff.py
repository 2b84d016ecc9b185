"""Pure comparison of the live ledger with a replay's shadow version, and the adjustments that
make the live totals equal the shadow's. No I/O, no clock.

Entries are compared by **target**: a live entry is its own target, a promotion adjustment
targets the entry it corrected, so the live view of an entry is the entry plus its corrections
and a second promotion of the same shadow finds nothing to book. Money is compared per
`(agent, currency)` of each target (an entry whose agent changed is a minus for the old agent
and a plus for the new one). Other fields (rule version, status) are not compared: promotion can
only book money.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from schemas.ids import derived_id

Money = tuple[str, str]  # (agent_id, currency)


class ChangeKind(StrEnum):
    CHANGED = "changed"  # in both, with different money
    ADDED = "added"  # only in the shadow
    MISSING = "missing"  # only in the live ledger


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """One ledger row as the diff sees it. `target_id` is `entry_id` except for promotion
    adjustments, where it is the corrected entry's id."""

    entry_id: str
    target_id: str
    agent_id: str
    currency: str
    amount: Decimal
    program_id: str | None
    conversion_id: str
    order_id: str
    line_item_id: str | None
    level: int
    fx_rate: Decimal
    rule_id: str | None
    rule_version: int | None
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class EntryChange:
    target_id: str
    kind: ChangeKind
    live: Mapping[Money, Decimal]
    shadow: Mapping[Money, Decimal]
    template: EntryFacts  # the shadow's entry when there is one, else the live entry

    def deltas(self) -> dict[Money, Decimal]:
        """shadow - live per (agent, currency), zeros left out."""
        keys = sorted(set(self.live) | set(self.shadow))
        out = {k: self.shadow.get(k, Decimal(0)) - self.live.get(k, Decimal(0)) for k in keys}
        return {k: v for k, v in out.items() if v != 0}


@dataclass(frozen=True, slots=True)
class AgentTotal:
    agent_id: str
    currency: str
    live: Decimal
    shadow: Decimal

    @property
    def delta(self) -> Decimal:
        return self.shadow - self.live


@dataclass(frozen=True, slots=True)
class LedgerDiff:
    totals: list[AgentTotal]  # by (agent, currency)
    changes: list[EntryChange]  # by target id

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for c in self.changes if c.kind is kind)


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A live-ledger entry that promotion books (kind `adjustment`)."""

    entry_id: str
    target_id: str
    agent_id: str
    currency: str
    amount: Decimal
    template: EntryFacts
    reason: str


def _by_target(entries: Iterable[EntryFacts]) -> dict[str, list[EntryFacts]]:
    out: dict[str, list[EntryFacts]] = defaultdict(list)
    for entry in entries:
        out[entry.target_id].append(entry)
    return out


def _money(entries: Iterable[EntryFacts]) -> dict[Money, Decimal]:
    out: dict[Money, Decimal] = defaultdict(Decimal)
    for entry in entries:
        out[(entry.agent_id, entry.currency)] += entry.amount
    return {k: v for k, v in out.items() if v != 0}


def diff_ledgers(live: Iterable[EntryFacts], shadow: Iterable[EntryFacts]) -> LedgerDiff:
    """Per-agent totals and the changed/added/missing targets between `live` (entries with
    their corrections) and `shadow`."""
    live_by, shadow_by = _by_target(live), _by_target(shadow)
    totals: dict[Money, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    changes: list[EntryChange] = []
    for target in sorted(set(live_by) | set(shadow_by)):
        live_money = _money(live_by.get(target, ()))
        shadow_money = _money(shadow_by.get(target, ()))
        for key, amount in live_money.items():
            totals[key][0] += amount
        for key, amount in shadow_money.items():
            totals[key][1] += amount
        if live_money == shadow_money:
            continue
        if live_money and shadow_money:
            kind = ChangeKind.CHANGED
        else:
            kind = ChangeKind.ADDED if shadow_money else ChangeKind.MISSING
        template = (shadow_by.get(target) or live_by[target])[0]
        changes.append(EntryChange(target, kind, live_money, shadow_money, template))
    rows = [
        AgentTotal(agent, currency, live_sum, shadow_sum)
        for (agent, currency), (live_sum, shadow_sum) in sorted(totals.items())
    ]
    return LedgerDiff(totals=rows, changes=changes)


def plan_adjustments(tenant_id: str, replay_id: str, diff: LedgerDiff) -> list[Adjustment]:
    """The entries that make every target's live money equal the shadow's. Ids derive from the
    replay, the target and the (agent, currency), so booking the plan twice books it once."""
    out: list[Adjustment] = []
    for change in diff.changes:
        for (agent, currency), amount in change.deltas().items():
            entry_id = derived_id(
                "le", tenant_id, "replay", replay_id, change.target_id, agent, currency
            )
            reason = f"replay {replay_id}: {change.kind.value} entry {change.target_id}"
            out.append(
                Adjustment(entry_id, change.target_id, agent, currency, amount, change.template,
                           reason)
            )  # fmt: skip
    return out
