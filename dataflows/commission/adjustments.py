"""Adjustments: refunds, cancellations and order edits as *new* ledger entries. Pure.

Every function takes the order's existing entries (its ledger) and one event, and returns only
new entries; nothing is ever updated. Entries are grouped per **key** `(line, level, agent)`:
- its **basis** is the sum of its ACCRUAL, OVERRIDE and REPRICE entries (what was earned);
- its **reversed** amount is minus the sum of its REVERSAL entries.

Refund (`reverse_refund`): for each refunded line the target reversal is
`basis * min(units refunded so far, quantity) / quantity`, rounded half-even, where "so far"
counts this refund and every earlier one (by refund id, so a re-delivered refund counts once).
The new REVERSAL is `target - reversed`, clamped to `[0, basis - reversed]`: partial refunds
accumulate, rounding never drifts (the last unit reverses the exact remainder, so a full refund
nets every key to exactly 0), and nothing is ever reversed twice. Manager overrides are keys
like any other, so they are reversed in the same proportion. A refund already in the ledger
gives `[]`; replaying it from the same prior ledger gives the same entry ids.

Cancellation (`reverse_cancellation`): a REVERSAL of whatever each key still nets (all kinds),
so afterwards the order nets to exactly 0.

Order edit (`reprice`): REPRICE = new commission - basis, per key, only where they differ.
Reversals are deliberately *not* part of what is compared: refunds are tracked against the
basis separately (the edited order's quantities are units sold, before refunds), so
subtracting them here would count a refund twice. A cancelled order is never repriced.

New entries copy what analytics groups by (agent, program, shop, coupon, link) from the entry
they adjust, so a refund's reversal counts under the same shop, coupon and link as the accrual.
An entry accrued before those fields existed (restored from an older snapshot) gives its
adjustments the order's shop from the conversion; its coupon and link stay unknown.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from dataflows.commission.logic import CommissionError, entry_id, round_half_even
from schemas.conversion import Conversion, OrderRefund
from schemas.ledger import CommissionAccrual, EntryKind
from schemas.money import decimal_to_text

Key = tuple[str | None, int, str]  # (line_item_id, level, agent_id)
BASIS_KINDS = frozenset({EntryKind.ACCRUAL, EntryKind.OVERRIDE, EntryKind.REPRICE})


def _key(entry: CommissionAccrual) -> Key:
    return (entry.line_item_id, entry.level, entry.agent_id)


def _sort_key(key: Key) -> tuple[str, int, str]:
    return (key[0] or "", key[1], key[2])


def _by_key(entries: Iterable[CommissionAccrual]) -> dict[Key, list[CommissionAccrual]]:
    groups: dict[Key, list[CommissionAccrual]] = {}
    for entry in entries:
        groups.setdefault(_key(entry), []).append(entry)
    return {key: groups[key] for key in sorted(groups, key=_sort_key)}


def _basis(entries: Iterable[CommissionAccrual]) -> Decimal:
    return sum((e.amount for e in entries if e.kind in BASIS_KINDS), Decimal(0))


def _reversed(entries: Iterable[CommissionAccrual]) -> Decimal:
    return -sum((e.amount for e in entries if e.kind is EntryKind.REVERSAL), Decimal(0))


def _template(entries: Sequence[CommissionAccrual]) -> CommissionAccrual:
    # Copy program, conversion, rule, currency and fx rate from what was earned, deterministically.
    earned = [e for e in entries if e.kind in BASIS_KINDS] or list(entries)
    return min(earned, key=lambda e: e.entry_id)


def _single_order(
    entries: Iterable[CommissionAccrual], conversion: Conversion | None = None
) -> None:
    orders = {(e.tenant_id, e.order_id) for e in entries}
    if conversion is not None:
        orders.add((conversion.tenant_id, conversion.order_id))
    if len(orders) > 1:
        raise CommissionError(f"entries of several orders given: {sorted(orders)}")


def _new_entry(
    template: CommissionAccrual,
    *,
    entry_id_: str,
    kind: EntryKind,
    amount: Decimal,
    occurred_at: datetime,
    reason: str,
    source_event_id: str,
    shop: str | None = None,
) -> CommissionAccrual:
    update: dict[str, object] = {
        "entry_id": entry_id_,
        "kind": kind,
        "amount": amount,
        "occurred_at": occurred_at,
        "reason": reason,
        "source_event_id": source_event_id,
    }
    if template.shop is None and shop is not None:  # an entry accrued before the field existed
        update["shop"] = shop
    return template.model_copy(update=update)


def _cancel_id(key: Key, entries: Sequence[CommissionAccrual]) -> str:
    line_id, level, agent_id = key
    first = entries[0]
    return entry_id(
        first.tenant_id, first.order_id, line_id, EntryKind.REVERSAL, level, agent_id, "cancel"
    )


def reverse_refund(
    existing: Sequence[CommissionAccrual],
    refund: OrderRefund,
    conversion: Conversion,
    earlier_refunds: Sequence[OrderRefund] = (),
) -> list[CommissionAccrual]:
    """New REVERSAL entries for `refund` (see the module docstring for the arithmetic).

    `existing`: every entry of the order so far; `conversion`: the order's current facts (its
    line quantities are the denominators); `earlier_refunds`: the order's other refunds known
    so far (the current one may be among them). Entries are dated at the refund's event time.
    `CommissionError` if the entries or the refund belong to another order.
    """
    if refund.order_id != conversion.order_id:
        raise CommissionError(f"refund of order {refund.order_id} for {conversion.order_id}")
    _single_order(existing, conversion)
    groups = _by_key(existing)
    ids = {e.entry_id for e in existing}

    def reversal_id(key: Key) -> str:
        line_id, level, agent_id = key
        return entry_id(
            conversion.tenant_id, conversion.order_id, line_id, EntryKind.REVERSAL, level,
            agent_id, "refund", refund.refund_id,
        )  # fmt: skip

    if any(reversal_id(key) in ids for key in groups):
        return []  # this refund is already in the ledger
    history = {r.refund_id: r for r in earlier_refunds if r.order_id == refund.order_id}
    history[refund.refund_id] = refund
    refunded_so_far: dict[str, int] = {}
    for past in history.values():
        for refunded_line, quantity in past.quantities().items():
            refunded_so_far[refunded_line] = refunded_so_far.get(refunded_line, 0) + quantity
    now_refunded = refund.quantities()

    out: list[CommissionAccrual] = []
    for key, entries in groups.items():
        line = conversion.line(key[0]) if key[0] is not None else None
        if line is None or line.quantity == 0 or now_refunded.get(line.line_id, 0) == 0:
            continue
        basis, already = _basis(entries), _reversed(entries)
        if basis <= 0:
            continue
        units = min(refunded_so_far[line.line_id], line.quantity)
        template = _template(entries)
        target = round_half_even(Fraction(basis) * units / line.quantity, template.currency)
        amount = min(target - already, basis - already)
        if amount <= 0:
            continue
        out.append(
            _new_entry(
                template,
                entry_id_=reversal_id(key),
                kind=EntryKind.REVERSAL,
                amount=-amount,
                occurred_at=refund.occurred_at,
                reason=(
                    f"refund {refund.refund_id}: {units} of {line.quantity} units refunded, "
                    f"reversing {decimal_to_text(target)} of {decimal_to_text(basis)} in total"
                ),
                source_event_id=refund.source_event_id,
                shop=conversion.shop,
            )
        )
    return out


def reverse_cancellation(
    existing: Sequence[CommissionAccrual],
    *,
    occurred_at: datetime,
    source_event_id: str,
    reason: str = "order cancelled",
) -> list[CommissionAccrual]:
    """New REVERSAL entries bringing every key of the order to a net of exactly 0.

    Keys already netting to 0 get nothing; a key already reversed by a cancellation is never
    reversed again (so a repeated cancellation gives `[]`). Entries are dated `occurred_at`
    (the cancellation's event time). `CommissionError` if `existing` spans several orders.
    """
    _single_order(existing)
    ids = {e.entry_id for e in existing}
    out: list[CommissionAccrual] = []
    for key, entries in _by_key(existing).items():
        net = sum((e.amount for e in entries), Decimal(0))
        cancel_id = _cancel_id(key, entries)
        if net == 0 or cancel_id in ids:
            continue
        out.append(
            _new_entry(
                _template(entries),
                entry_id_=cancel_id,
                kind=EntryKind.REVERSAL,
                amount=-net,
                occurred_at=occurred_at,
                reason=f"{reason}: reversing the remaining {decimal_to_text(net)}",
                source_event_id=source_event_id,
            )
        )
    return out


def reprice(
    existing: Sequence[CommissionAccrual],
    target: Sequence[CommissionAccrual],
    *,
    edit_id: str,
    occurred_at: datetime,
    source_event_id: str,
) -> list[CommissionAccrual]:
    """New REPRICE entries moving each key's basis to the edited order's commission.

    `target` is what `accrue` gives for the edited order with the sale-time inputs (same
    decision, rule version, period volume, new-customer flag and fx rate); it is compared, never
    written. Keys missing from `target` are repriced to 0, new keys from 0. Entries are dated
    `occurred_at` (the edit's event time) and their ids include `edit_id`, so the same edit
    applied twice adds nothing. `[]` for a cancelled order. `CommissionError` if `existing` and
    `target` are not entries of one order.
    """
    _single_order([*existing, *target])
    existing_groups = _by_key(existing)
    if any(_cancel_id(k, es) in {e.entry_id for e in es} for k, es in existing_groups.items()):
        return []
    target_groups = _by_key(target)
    ids = {e.entry_id for e in existing}
    out: list[CommissionAccrual] = []
    for key in sorted({*existing_groups, *target_groups}, key=_sort_key):
        before = _basis(existing_groups.get(key, ()))
        after = _basis(target_groups.get(key, ()))
        template = _template(target_groups.get(key) or existing_groups[key])
        line_id, level, agent_id = key
        new_id = entry_id(
            template.tenant_id, template.order_id, line_id, EntryKind.REPRICE, level, agent_id,
            "edit", edit_id,
        )  # fmt: skip
        if after == before or new_id in ids:
            continue
        out.append(
            _new_entry(
                template,
                entry_id_=new_id,
                kind=EntryKind.REPRICE,
                amount=after - before,
                occurred_at=occurred_at,
                reason=(
                    f"edit {edit_id}: commission {decimal_to_text(before)} → "
                    f"{decimal_to_text(after)}"
                ),
                source_event_id=source_event_id,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class Cancellation:
    """An order's cancellation: its event time and the event that reported it."""

    occurred_at: datetime
    source_event_id: str


def _step_key(step: OrderRefund | Cancellation) -> tuple[datetime, str]:
    return (step.occurred_at, step.source_event_id)


def settle(
    existing: Sequence[CommissionAccrual],
    conversion: Conversion,
    refunds: Sequence[OrderRefund],
    cancellation: Cancellation | None,
    *,
    trigger: str,
) -> list[CommissionAccrual]:
    """New entries that make the order's reversals what its refunds and its cancellation give
    when applied **in event-time order** (`(occurred_at, source_event_id)`), whatever order they
    arrived in: the same sum per key, kind and day, so monthly statements never depend on
    arrival order.

    The canonical reversals are computed with `reverse_refund` and `reverse_cancellation` on the
    order's earned entries (ACCRUAL, OVERRIDE, REPRICE) and compared with the REVERSAL entries
    already booked, per `(key, event time)`. Where they differ: the canonical entry itself when
    nothing of it is booked yet (a refund arriving after a later cancellation books its own
    reversal, with its own id and date), else a correction (REVERSAL, dated like the entry it
    corrects, id from the group and `trigger`, the event that made it necessary). So a late
    earlier refund books its reversal and a correction of the cancellation dated like it.
    `[]` when the ledger already is canonical (a re-delivered event adds nothing).
    """
    _single_order(existing, conversion)
    earned = [e for e in existing if e.kind is not EntryKind.REVERSAL]
    canonical = list(earned)
    applied: list[OrderRefund] = []
    steps: list[OrderRefund | Cancellation] = [*refunds]
    if cancellation is not None:
        steps.append(cancellation)
    for step in sorted(steps, key=_step_key):
        if isinstance(step, OrderRefund):
            applied.append(step)
            canonical += reverse_refund(canonical, step, conversion, applied)
        else:
            canonical += reverse_cancellation(
                canonical, occurred_at=step.occurred_at, source_event_id=step.source_event_id
            )
    want = _by_group(e for e in canonical if e.kind is EntryKind.REVERSAL)
    have = _by_group(e for e in existing if e.kind is EntryKind.REVERSAL)
    ids = {e.entry_id for e in existing}
    out: list[CommissionAccrual] = []
    for group in sorted({*want, *have}, key=lambda g: (_sort_key(g[0]), g[1])):
        wanted, booked = want.get(group, []), have.get(group, [])
        diff = sum((e.amount for e in wanted), Decimal(0)) - sum(
            (e.amount for e in booked), Decimal(0)
        )
        if diff == 0:
            continue
        if not booked and all(e.entry_id not in ids for e in wanted):
            out.extend(wanted)
            continue
        (line_id, level, agent_id), at = group
        template = (wanted or booked)[0]
        correction_id = entry_id(
            template.tenant_id, template.order_id, line_id, EntryKind.REVERSAL, level, agent_id,
            "correction", at.isoformat(), trigger,
        )  # fmt: skip
        out.append(
            _new_entry(
                template,
                entry_id_=correction_id,
                kind=EntryKind.REVERSAL,
                amount=diff,
                occurred_at=at,
                reason=(
                    f"correction of the reversals dated {at.isoformat()} by "
                    f"{decimal_to_text(diff)}: a refund or cancellation that happened earlier "
                    "arrived later (the order's reversals follow event time)"
                ),
                source_event_id=template.source_event_id,
                shop=conversion.shop,
            )
        )
    return out


def _by_group(
    entries: Iterable[CommissionAccrual],
) -> dict[tuple[Key, datetime], list[CommissionAccrual]]:
    groups: dict[tuple[Key, datetime], list[CommissionAccrual]] = {}
    for entry in entries:
        groups.setdefault((_key(entry), entry.occurred_at), []).append(entry)
    return groups
