"""Attribution: which agent, if any, caused an order. Pure: no I/O, no clock, no globals.

`attribute(conversion, known, policy, programs=...)` decides; `binding_from(...)` derives the
customer binding that decision creates; `attributed_conversion(...)` turns a decision into the
ledger-side fact, with every rejected candidate as structured data (`rejected_candidates`).

**Policies are per program** (`programs`: program id → its policy; `policy` is the default, for
candidates without a program or of a program not listed). Each candidate is judged by the
policy of *its* program: a click's lookback window and bot rule are its program's; whether a
coupon beats a cookie is the coupon's program's setting; a binding keeps the months it was
created with. Among clicks of several programs, the program of the most recent eligible click
**governs** (the shopper's latest referral came through it), and that program's model (last or
first click) picks among its own clicks; the other programs' clicks are rejected with that
reason. With one program this is exactly the single-policy behaviour below.

Precedence (first that applies wins):
1. An **active customer binding** (lifetime commission): the buyer was bound to an agent by an
   earlier attributed order and this order falls in `[bound_at, bound_at + months)`. It beats
   coupons and clicks, because the binding is the commercial promise the agent was given. The
   binding keeps the `months` it was created with; changing the program later does not shorten
   promises already made.
2. **Coupon vs cookie**: with `coupon_beats_cookie` (default) an agent-owned coupon on the order
   beats any click; without it the chosen click beats the coupon. Either one alone wins. Among
   several owned coupons the first on the order (the source's order) is used.
3. **Click**: among eligible clicks, sorted by `(occurred_at, click_id)`, `last_click` (default)
   takes the last and `first_click` the first; equal timestamps are thus ordered by click id.
4. Otherwise `UNATTRIBUTED`.

Eligibility: a click counts only if the order cites its id or it comes from the order's visitor,
it happened within `[order time - lookback_days, order time]` in **event time** (a click after the
order never counts), it is not a duplicate (a duplicate is a repeat of a touch already counted,
never a touch of its own), not a bot (unless `exclude_bots` is off) and names an agent. Any
candidate (binding, coupon, click) whose agent is **not active at the order's event time**
(`paused` or `terminated` by the agent's status history, `KnownReferrals.statuses`) is rejected
with that reason, and so is one whose agent is the buyer (same normalised email or customer id,
a **self-referral**); the next candidate in precedence is then tried. A rejected binding stays:
it applies again to orders after the agent is active again, within its months.

Every candidate that did not win is listed in `AttributionDecision.rejected` with the reason, in
a canonical order (binding, coupons in order, clicks by `(occurred_at, click_id)`), so the
decision does not depend on the order candidates were passed in.
"""

from __future__ import annotations

import calendar
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from schemas.compact import trusted
from schemas.conversion import Conversion, normalise_email
from schemas.events.click import ClickEvent
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CandidateKind,
    RejectedCandidate,
    RejectionCode,
)
from schemas.money import quantize


class AttributionModel(StrEnum):
    LAST_CLICK = "last_click"
    FIRST_CLICK = "first_click"


class AttributionPolicy(BaseModel):
    """A program's attribution settings (the `programs` row)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lookback_days: Annotated[int, Field(gt=0)] = 30
    model: AttributionModel = AttributionModel.LAST_CLICK
    coupon_beats_cookie: bool = True
    binding_months: Annotated[int, Field(ge=0)] = 0
    exclude_bots: bool = True


@dataclass(frozen=True, slots=True)
class ClickCandidate:
    """A recorded click that might have caused the order."""

    click_id: str
    agent_id: str | None
    program_id: str | None
    link_code: str
    occurred_at: datetime
    is_bot: bool = False
    is_duplicate: bool = False
    visitor_id: str | None = None

    @classmethod
    def from_event(cls, event: ClickEvent) -> ClickCandidate:
        """The candidate view of a recorded click."""
        return cls(
            click_id=event.click_id,
            agent_id=event.agent_id,
            program_id=event.program_id,
            link_code=event.link_code,
            occurred_at=event.occurred_at,
            is_bot=event.is_bot,
            is_duplicate=event.is_duplicate,
            visitor_id=event.visitor_id,
        )


@dataclass(frozen=True, slots=True)
class CouponOwner:
    """An agent-owned coupon code (upper-cased, as `Conversion.coupon_codes`)."""

    code: str
    agent_id: str
    program_id: str | None


def add_months(when: datetime, months: int) -> datetime:
    """`when` plus calendar months, the day clamped to the target month (Jan 31 + 1 → Feb 28)."""
    years, month_index = divmod(when.month - 1 + months, 12)
    year, month = when.year + years, month_index + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


@dataclass(frozen=True, slots=True)
class CustomerBinding:
    """The customer is bound to an agent for `months` from `bound_at` (lifetime commission)."""

    customer_id: str
    agent_id: str
    program_id: str | None
    bound_at: datetime
    months: int
    conversion_id: str | None = None  # the order that created the binding

    @property
    def expires_at(self) -> datetime:
        """First instant the binding no longer applies."""
        return add_months(self.bound_at, self.months)

    def is_active_at(self, when: datetime) -> bool:
        """True iff `bound_at <= when < expires_at`."""
        return self.bound_at <= when < self.expires_at


class AgentStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class StatusHistory:
    """An agent's status changes `(effective_at, status)`, sorted by `effective_at` (changes of
    one instant in the order they were recorded: the later one wins), and `initial`, the status
    before the first change (active, unless the agent's record predates its history)."""

    changes: tuple[tuple[datetime, AgentStatus], ...] = ()
    initial: AgentStatus = AgentStatus.ACTIVE

    def at(self, when: datetime) -> tuple[AgentStatus, datetime | None]:
        """The status at instant `when` and since when: the last change effective at or before
        `when`; before the first change `initial`, since `None`."""
        index = bisect_right(self.changes, when, key=lambda c: c[0])
        if index == 0:
            return self.initial, None
        since, status = self.changes[index - 1]
        return status, since

    def is_active_at(self, when: datetime) -> bool:
        return self.at(when)[0] is AgentStatus.ACTIVE


def inactive_reason(agent_id: str, history: StatusHistory | None, when: datetime) -> str | None:
    """Why `agent_id` cannot earn at `when` (not active by `history`), or `None` if it can.
    No history: active."""
    if history is None:
        return None
    status, since = history.at(when)
    if status is AgentStatus.ACTIVE:
        return None
    since_text = f" since {since.isoformat()}" if since is not None else ""
    return f"agent {agent_id} is {status.value}{since_text} (not active at the order's time)"


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """How to recognise an agent as a buyer: normalised emails and shop customer ids."""

    agent_id: str
    emails: frozenset[str] = frozenset()
    customer_ids: frozenset[str] = frozenset()


@dataclass(frozen=True)
class KnownReferrals:
    """What the tenant knows that could explain an order.

    `clicks`: candidate clicks (typically those the order cites plus its visitor's);
    `coupons`: upper-cased code → owner; `bindings`: customer id → binding;
    `identities`: agent id → identity, for self-referral checks; `statuses`: agent id → status
    history (an agent without one is active).
    """

    clicks: Sequence[ClickCandidate] = ()
    coupons: Mapping[str, CouponOwner] = field(default_factory=dict)
    bindings: Mapping[str, CustomerBinding] = field(default_factory=dict)
    identities: Mapping[str, AgentIdentity] = field(default_factory=dict)
    statuses: Mapping[str, StatusHistory] = field(default_factory=dict)


Candidate = ClickCandidate | CouponOwner | CustomerBinding


@dataclass(frozen=True)
class AttributionDecision:
    """The outcome: who gets the order and why, plus every losing candidate with its reason.

    `agent_id`/`program_id` are `None` exactly when `rule` is `UNATTRIBUTED`; `click_id` and
    `link_code` (the winning click's link) are set for click rules, `coupon_code` for the coupon
    rule.
    """

    rule: AttributionRule
    agent_id: str | None
    program_id: str | None
    click_id: str | None
    coupon_code: str | None
    explanation: str
    rejected: tuple[tuple[Candidate, str], ...] = ()
    # Last, with a default: decisions pickled in recovery snapshots before it existed read None.
    link_code: str | None = None

    @property
    def attributed(self) -> bool:
        return self.rule is not AttributionRule.UNATTRIBUTED


def _agent_check(
    conversion: Conversion,
    identities: Mapping[str, AgentIdentity],
    statuses: Mapping[str, StatusHistory],
) -> Callable[[str], str | None]:
    """Why a candidate's agent cannot have this order: not active at its time, or the buyer."""
    email = normalise_email(conversion.customer_email)

    def check(agent_id: str) -> str | None:
        inactive = inactive_reason(agent_id, statuses.get(agent_id), conversion.occurred_at)
        if inactive is not None:
            return inactive
        identity = identities.get(agent_id)
        if identity is None:
            return None
        if email is not None and email in {normalise_email(e) for e in identity.emails}:
            return f"self-referral: agent {agent_id} is the buyer (same email)"
        if conversion.customer_id is not None and conversion.customer_id in identity.customer_ids:
            return (
                f"self-referral: agent {agent_id} is the buyer (customer {conversion.customer_id})"
            )
        return None

    return check


PolicyOf = Callable[[str | None], AttributionPolicy]


def _click_ineligibility(
    click: ClickCandidate,
    conversion: Conversion,
    policy: AttributionPolicy,
    agent_check: Callable[[str], str | None],
) -> str | None:
    cited = click.click_id in conversion.click_ids
    same_visitor = conversion.visitor_id is not None and click.visitor_id == conversion.visitor_id
    if not (cited or same_visitor):
        return "not cited by the order and not from its visitor"
    if click.occurred_at > conversion.occurred_at:
        return "click after the order"
    if click.occurred_at < conversion.occurred_at - timedelta(days=policy.lookback_days):
        return f"outside the {policy.lookback_days}-day lookback window"
    if click.is_duplicate:
        return "duplicate of an earlier click"
    if click.is_bot and policy.exclude_bots:
        return "bot click"
    if click.agent_id is None:
        return "click has no agent"
    return agent_check(click.agent_id)


def _describe(candidate: Candidate) -> str:
    if isinstance(candidate, CustomerBinding):
        return f"customer binding to agent {candidate.agent_id}"
    if isinstance(candidate, CouponOwner):
        return f"coupon {candidate.code} owned by agent {candidate.agent_id}"
    return f"click {candidate.click_id} of agent {candidate.agent_id}"


def _choose_binding(
    conversion: Conversion,
    known: KnownReferrals,
    agent_check: Callable[[str], str | None],
    reasons: dict[Candidate, str],
) -> CustomerBinding | None:
    if conversion.customer_id is None:
        return None
    binding = known.bindings.get(conversion.customer_id)
    if binding is None:
        return None
    if conversion.occurred_at < binding.bound_at:
        reasons[binding] = "binding starts after the order"
    elif not binding.is_active_at(conversion.occurred_at):
        reasons[binding] = f"binding expired at {binding.expires_at.isoformat()}"
    elif (reason := agent_check(binding.agent_id)) is not None:
        reasons[binding] = reason
    else:
        return binding
    return None


def _choose_coupon(
    conversion: Conversion,
    known: KnownReferrals,
    agent_check: Callable[[str], str | None],
    reasons: dict[Candidate, str],
) -> tuple[CouponOwner | None, list[CouponOwner]]:
    owners = [known.coupons[c] for c in conversion.coupon_codes if c in known.coupons]
    chosen: CouponOwner | None = None
    for owner in owners:
        if (reason := agent_check(owner.agent_id)) is not None:
            reasons[owner] = reason
        elif chosen is None:
            chosen = owner
        else:
            reasons[owner] = f"coupon {chosen.code} comes first on the order"
    return chosen, owners


def _choose_click(
    conversion: Conversion,
    clicks: list[ClickCandidate],
    policy_of: PolicyOf,
    agent_check: Callable[[str], str | None],
    reasons: dict[Candidate, str],
) -> ClickCandidate | None:
    eligible: list[ClickCandidate] = []
    for click in clicks:
        reason = _click_ineligibility(click, conversion, policy_of(click.program_id), agent_check)
        if reason is None:
            eligible.append(click)
        else:
            reasons[click] = reason
    if not eligible:
        return None
    governing = eligible[-1].program_id  # `clicks` is sorted by (occurred_at, click_id)
    policy = policy_of(governing)
    own = [c for c in eligible if c.program_id == governing]
    last = policy.model is AttributionModel.LAST_CLICK
    chosen = own[-1] if last else own[0]
    for click in eligible:
        if click.program_id != governing:
            reasons[click] = f"program {governing}'s click {eligible[-1].click_id} is more recent"
        elif click is not chosen:
            word = "later" if last else "earlier"
            reasons[click] = f"{policy.model.value}: click {chosen.click_id} is {word}"
    return chosen


def _ago(conversion: Conversion, click: ClickCandidate) -> str:
    delta = conversion.occurred_at - click.occurred_at
    days, seconds = delta.days, delta.seconds
    return f"{days} d {seconds // 3600} h before the order"


def _in_order(clicks: Iterable[ClickCandidate]) -> list[ClickCandidate]:
    """Distinct clicks by time and id; two different records of one id at one time (rare) are
    ordered by their whole contents, so the order never depends on the input's."""
    clicks = list(clicks)
    if len(clicks) < 2:  # most orders: nothing to order or to deduplicate
        return clicks
    distinct = set(clicks)
    ordered = sorted(distinct, key=lambda c: (c.occurred_at, c.click_id))
    if len({(c.occurred_at, c.click_id) for c in ordered}) < len(ordered):
        ordered.sort(key=lambda c: (c.occurred_at, c.click_id, repr(c)))
    return ordered


def attribute(
    conversion: Conversion,
    known: KnownReferrals,
    policy: AttributionPolicy,
    *,
    programs: Mapping[str, AttributionPolicy] | None = None,
) -> AttributionDecision:
    """Decide which agent (if any) gets `conversion`, following the module's precedence rules,
    each candidate judged by its program's policy in `programs` (`policy` for the others).

    Deterministic and invariant under any permutation (or repetition) of `known.clicks`.
    """
    by_program = programs or {}

    def policy_of(program_id: str | None) -> AttributionPolicy:
        return by_program.get(program_id, policy) if program_id is not None else policy

    reasons: dict[Candidate, str] = {}
    agent_check = _agent_check(conversion, known.identities, known.statuses)
    clicks = _in_order(known.clicks)

    binding = _choose_binding(conversion, known, agent_check, reasons)
    coupon, coupons = _choose_coupon(conversion, known, agent_check, reasons)
    click = _choose_click(conversion, clicks, policy_of, agent_check, reasons)
    coupon_wins = coupon is not None and policy_of(coupon.program_id).coupon_beats_cookie

    # The decision's fields, set by the branch that decides; the decision is made once, with
    # the reasons the branches give the losers (a frozen dataclass made twice cost 5 µs).
    agent_id = program_id = click_id = coupon_code = link_code = None
    if binding is not None:
        beaten = [c for c in (coupon, click) if c is not None]
        for loser in beaten:
            reasons[loser] = f"customer {binding.customer_id} is bound to agent {binding.agent_id}"
        beats = f" beats {', '.join(_describe(c) for c in beaten)}" if beaten else ""
        rule, agent_id, program_id = (
            AttributionRule.CUSTOMER_BINDING, binding.agent_id, binding.program_id
        )  # fmt: skip
        explanation = (
            f"customer {binding.customer_id} bound to agent {binding.agent_id} from "
            f"{binding.bound_at.isoformat()} until {binding.expires_at.isoformat()}{beats}"
        )
    elif coupon is not None and (click is None or coupon_wins):
        beats = ""
        if click is not None:
            reasons[click] = f"coupon {coupon.code} wins (coupon_beats_cookie)"
            beats = f" beats {_describe(click)} (coupon_beats_cookie)"
        rule, agent_id, program_id = AttributionRule.COUPON, coupon.agent_id, coupon.program_id
        coupon_code = coupon.code
        explanation = f"{_describe(coupon)}{beats}"
    elif click is not None:
        policy = policy_of(click.program_id)
        beats = ""
        if coupon is not None:
            reasons[coupon] = f"click {click.click_id} wins (cookie beats coupon)"
            beats = f" beats {_describe(coupon)} (cookie beats coupon)"
        rule = (
            AttributionRule.LAST_CLICK
            if policy.model is AttributionModel.LAST_CLICK
            else AttributionRule.FIRST_CLICK
        )
        agent_id, program_id, click_id = click.agent_id, click.program_id, click.click_id
        link_code = click.link_code
        explanation = (
            f"{policy.model.value} {_describe(click)} via link {click.link_code}, "
            f"{_ago(conversion, click)} (lookback {policy.lookback_days} d){beats}"
        )
    else:
        rule = AttributionRule.UNATTRIBUTED
        explanation = f"no eligible binding, coupon or click ({len(reasons)} candidates rejected)"

    ordered: list[Candidate] = []
    if conversion.customer_id is not None and conversion.customer_id in known.bindings:
        ordered.append(known.bindings[conversion.customer_id])
    ordered.extend(coupons)
    ordered.extend(clicks)
    rejected = tuple((c, reasons[c]) for c in ordered if c in reasons)
    return AttributionDecision(
        rule=rule, agent_id=agent_id, program_id=program_id, click_id=click_id,
        coupon_code=coupon_code, explanation=explanation, rejected=rejected, link_code=link_code,
    )  # fmt: skip


def binding_from(
    conversion: Conversion,
    decision: AttributionDecision,
    policy: AttributionPolicy,
    existing: CustomerBinding | None = None,
) -> CustomerBinding | None:
    """The binding this attributed order creates, or `None`.

    An order attributed by coupon or click binds its customer to the agent for
    `policy.binding_months` from the order's event time, when that is > 0, the customer is
    known and no binding (`existing`) is active at the order's time. An order attributed *by* a
    binding never extends it; after a binding expires the next attributed order may bind anew.
    """
    if policy.binding_months == 0 or conversion.customer_id is None:
        return None
    if decision.agent_id is None or decision.rule in (
        AttributionRule.UNATTRIBUTED,
        AttributionRule.CUSTOMER_BINDING,
    ):
        return None
    if existing is not None and existing.is_active_at(conversion.occurred_at):
        return None
    return CustomerBinding(
        customer_id=conversion.customer_id,
        agent_id=decision.agent_id,
        program_id=decision.program_id,
        bound_at=conversion.occurred_at,
        months=policy.binding_months,
        conversion_id=conversion.conversion_id,
    )


def attributed_conversion(
    conversion: Conversion,
    decision: AttributionDecision,
    *,
    attributed_at: datetime,
    is_new_customer: bool,
    fx_rate: Decimal = Decimal(1),
) -> AttributedConversion:
    """The ledger-side fact for a decision, attributed or not, with its explanation and every
    rejected candidate (so "why was this order credited, or not?" is answered from storage).
    `attributed_at` is processing time (a parameter, never read from a clock); `revenue` is the
    order's net merchandise revenue, quantized. Made from validated models without validating
    again (`trusted`), but for the exchange rate, which must be positive."""
    if not fx_rate > 0 or attributed_at.tzinfo is None:
        raise ValueError(f"exchange rate {fx_rate} not positive or {attributed_at} naive")
    return trusted(
        AttributedConversion,
        conversion_id=conversion.conversion_id,
        tenant_id=conversion.tenant_id,
        shop=conversion.shop,
        order_id=conversion.order_id,
        order_name=conversion.order_name,
        occurred_at=conversion.occurred_at,
        attributed_at=attributed_at,
        rule=decision.rule,
        agent_id=decision.agent_id,
        program_id=decision.program_id,
        click_id=decision.click_id,
        link_code=decision.link_code,
        coupon_code=decision.coupon_code,
        customer_id=conversion.customer_id,
        is_new_customer=is_new_customer,
        currency=conversion.currency,
        revenue=quantize(conversion.net_revenue, conversion.currency),
        fx_rate=fx_rate,
        explanation=decision.explanation,
        source_event_id=conversion.source_event_id,
        rejected=rejected_candidates(decision),
    )


# The reasons `attribute` writes, by their fixed wording: the text is what people read (and what
# decisions pickled in recovery snapshots hold), the code is what programs filter on. Keyed by
# the reason's first word (so a reason is matched against one to three patterns, not all), each
# pattern anchored at the start. `tests/dataflows/test_attribution_logic.py` drives every branch
# of `attribute` and checks that none is left `other`.
_REASONS: tuple[tuple[str, RejectionCode], ...] = (
    (r"not cited by the order", RejectionCode.NOT_CITED),
    (r"click after the order", RejectionCode.AFTER_ORDER),
    (r"click has no agent", RejectionCode.NO_AGENT),
    (r"click \S+ wins \(cookie beats coupon\)", RejectionCode.CLICK_WINS),
    (r"outside the \d+-day lookback window", RejectionCode.OUTSIDE_WINDOW),
    (r"duplicate of an earlier click", RejectionCode.DUPLICATE),
    (r"bot click", RejectionCode.BOT),
    (r"agent .* is (paused|terminated)", RejectionCode.AGENT_INACTIVE),
    (r"self-referral:", RejectionCode.SELF_REFERRAL),
    (r"binding starts after the order", RejectionCode.BINDING_NOT_STARTED),
    (r"binding expired at", RejectionCode.BINDING_EXPIRED),
    (r"customer .* is bound to agent", RejectionCode.BOUND_CUSTOMER),
    (r"coupon .* wins \(coupon_beats_cookie\)", RejectionCode.COUPON_WINS),
    (r"coupon .* comes first on the order", RejectionCode.ANOTHER_COUPON),
    (r"program .*'s click .* is more recent", RejectionCode.ANOTHER_PROGRAM),
    (r"last_click: click .* is later", RejectionCode.ATTRIBUTION_MODEL),
    (r"first_click: click .* is earlier", RejectionCode.ATTRIBUTION_MODEL),
)


def _by_first_word(
    reasons: Sequence[tuple[str, RejectionCode]],
) -> dict[str, tuple[tuple[re.Pattern[str], RejectionCode], ...]]:
    index: dict[str, tuple[tuple[re.Pattern[str], RejectionCode], ...]] = {}
    for pattern, code in reasons:
        first = pattern.split(" ", 1)[0]
        index[first] = (*index.get(first, ()), (re.compile(pattern), code))
    return index


_REASON_CODES = _by_first_word(_REASONS)


def reason_code(reason: str) -> RejectionCode:
    """The machine-readable code of a rejection reason written by `attribute`; `other` for a
    text it never writes (so a reworded reason degrades to `other`, never to a wrong code)."""
    for pattern, code in _REASON_CODES.get(reason.split(" ", 1)[0], ()):
        if pattern.match(reason):
            return code
    return RejectionCode.OTHER


def rejected_candidate(candidate: Candidate, reason: str) -> RejectedCandidate:
    """One losing candidate of a decision as stored data: what it was, whose, when, and why."""
    code = reason_code(reason)
    if isinstance(candidate, CustomerBinding):
        return RejectedCandidate(
            kind=CandidateKind.BINDING, ref=candidate.customer_id, agent_id=candidate.agent_id,
            program_id=candidate.program_id, at=candidate.bound_at, code=code, reason=reason,
        )  # fmt: skip
    if isinstance(candidate, CouponOwner):
        return RejectedCandidate(
            kind=CandidateKind.COUPON, ref=candidate.code, agent_id=candidate.agent_id,
            program_id=candidate.program_id, code=code, reason=reason,
        )  # fmt: skip
    return RejectedCandidate(
        kind=CandidateKind.CLICK, ref=candidate.click_id, agent_id=candidate.agent_id,
        program_id=candidate.program_id, link_code=candidate.link_code,
        at=candidate.occurred_at, code=code, reason=reason,
    )  # fmt: skip


def rejected_candidates(decision: AttributionDecision) -> tuple[RejectedCandidate, ...]:
    """Every losing candidate of `decision`, in its canonical order."""
    return tuple(rejected_candidate(c, reason) for c, reason in decision.rejected)
