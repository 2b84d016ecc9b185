from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataflows.attribution.logic import (
    AgentIdentity,
    AgentStatus,
    AttributionModel,
    AttributionPolicy,
    ClickCandidate,
    CouponOwner,
    CustomerBinding,
    KnownReferrals,
    StatusHistory,
    add_months,
    attribute,
    attributed_conversion,
    binding_from,
    reason_code,
    rejected_candidates,
)
from schemas.conversion import Conversion, ConversionLine
from schemas.events.click import ClickEvent
from schemas.ledger import AttributionRule, CandidateKind, RejectedCandidate, RejectionCode

ORDER_AT = datetime(2025, 3, 10, 12, 0, tzinfo=UTC)


def a_conversion(
    *,
    occurred_at: datetime = ORDER_AT,
    coupons: Iterable[str] = (),
    click_ids: Iterable[str] = (),
    visitor_id: str | None = "v1",
    customer_id: str | None = "c1",
    email: str | None = "Buyer@Example.com ",
) -> Conversion:
    return Conversion(
        tenant_id="t1",
        order_id="1001",
        occurred_at=occurred_at,
        currency="USD",
        customer_id=customer_id,
        customer_email=email,
        coupon_codes=tuple(coupons),
        click_ids=tuple(click_ids),
        visitor_id=visitor_id,
        lines=(ConversionLine(line_id="l1", quantity=2, unit_price=Decimal("50.00")),),
        source_event_id="evt_1",
    )


def click_id(n: int) -> str:
    return f"clk_{n:032x}"


def a_click(
    n: int,
    *,
    agent: str | None = "a1",
    before_order: timedelta = timedelta(days=1),
    visitor: str | None = "v1",
    is_bot: bool = False,
    is_duplicate: bool = False,
) -> ClickCandidate:
    return ClickCandidate(
        click_id=click_id(n),
        agent_id=agent,
        program_id="p1",
        link_code=f"link-{agent}",
        occurred_at=ORDER_AT - before_order,
        is_bot=is_bot,
        is_duplicate=is_duplicate,
        visitor_id=visitor,
    )


def known(
    *,
    clicks: Iterable[ClickCandidate] = (),
    coupons: Mapping[str, str] | None = None,
    bindings: Iterable[CustomerBinding] = (),
    identities: Iterable[AgentIdentity] = (),
    statuses: Mapping[str, StatusHistory] | None = None,
) -> KnownReferrals:
    return KnownReferrals(
        clicks=tuple(clicks),
        coupons={
            code: CouponOwner(code=code, agent_id=agent, program_id="p1")
            for code, agent in (coupons or {}).items()
        },
        bindings={b.customer_id: b for b in bindings},
        identities={i.agent_id: i for i in identities},
        statuses=statuses or {},
    )


def a_binding(*, agent: str = "a9", bound_at: datetime, months: int = 12) -> CustomerBinding:
    return CustomerBinding(
        customer_id="c1", agent_id=agent, program_id="p1", bound_at=bound_at, months=months
    )


DEFAULT = AttributionPolicy()


# --- clicks ----------------------------------------------------------------------------------


def test_last_click_wins_by_default() -> None:
    clicks = [
        a_click(1, agent="a1", before_order=timedelta(days=5)),
        a_click(2, agent="a2", before_order=timedelta(days=2)),
    ]
    decision = attribute(a_conversion(), known(clicks=clicks), DEFAULT)
    assert decision.rule is AttributionRule.LAST_CLICK
    assert (decision.agent_id, decision.click_id) == ("a2", click_id(2))
    assert decision.rejected == ((clicks[0], f"last_click: click {click_id(2)} is later"),)


def test_first_click_option() -> None:
    clicks = [
        a_click(1, agent="a1", before_order=timedelta(days=5)),
        a_click(2, agent="a2", before_order=timedelta(days=2)),
    ]
    policy = AttributionPolicy(model=AttributionModel.FIRST_CLICK)
    decision = attribute(a_conversion(), known(clicks=clicks), policy)
    assert decision.rule is AttributionRule.FIRST_CLICK
    assert (decision.agent_id, decision.click_id) == ("a1", click_id(1))


def test_click_after_order_never_counts() -> None:
    late = a_click(1, before_order=-timedelta(seconds=1))
    decision = attribute(a_conversion(), known(clicks=[late]), DEFAULT)
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert decision.rejected == ((late, "click after the order"),)


def test_window_expiry_is_measured_in_event_time() -> None:
    policy = AttributionPolicy(lookback_days=7)
    at_edge = a_click(1, agent="a1", before_order=timedelta(days=7))
    just_outside = a_click(2, agent="a2", before_order=timedelta(days=7, seconds=1))

    decision = attribute(a_conversion(), known(clicks=[at_edge]), policy)
    assert decision.agent_id == "a1"

    decision = attribute(a_conversion(), known(clicks=[just_outside]), policy)
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert decision.rejected == ((just_outside, "outside the 7-day lookback window"),)

    # The same order arriving a year late (processing time) is judged on its own event time.
    late_order = a_conversion(occurred_at=ORDER_AT + timedelta(days=1))
    assert attribute(late_order, known(clicks=[at_edge]), policy).rule is (
        AttributionRule.UNATTRIBUTED
    )


def test_bots_and_duplicates_never_win() -> None:
    genuine = a_click(1, agent="a1", before_order=timedelta(days=3))
    bot = a_click(2, agent="a2", before_order=timedelta(hours=2), is_bot=True)
    duplicate = a_click(3, agent="a3", before_order=timedelta(hours=1), is_duplicate=True)
    decision = attribute(a_conversion(), known(clicks=[bot, duplicate, genuine]), DEFAULT)
    assert decision.agent_id == "a1"
    assert dict(decision.rejected) == {
        bot: "bot click",
        duplicate: "duplicate of an earlier click",
    }

    only_noise = attribute(a_conversion(), known(clicks=[bot, duplicate]), DEFAULT)
    assert only_noise.rule is AttributionRule.UNATTRIBUTED


def test_bot_clicks_count_when_bot_exclusion_is_off() -> None:
    bot = a_click(2, agent="a2", is_bot=True)
    decision = attribute(a_conversion(), known(clicks=[bot]), AttributionPolicy(exclude_bots=False))
    assert decision.agent_id == "a2"


def test_same_timestamp_ties_are_broken_by_click_id() -> None:
    clicks = [a_click(7, agent="a7"), a_click(3, agent="a3")]  # same occurred_at
    assert attribute(a_conversion(), known(clicks=clicks), DEFAULT).click_id == click_id(7)
    first = AttributionPolicy(model=AttributionModel.FIRST_CLICK)
    assert attribute(a_conversion(), known(clicks=clicks), first).click_id == click_id(3)


def test_only_clicks_cited_by_the_order_or_from_its_visitor_count() -> None:
    cited = a_click(1, agent="a1", visitor="someone-else", before_order=timedelta(days=2))
    same_visitor = a_click(2, agent="a2", visitor="v1", before_order=timedelta(days=3))
    stranger = a_click(3, agent="a3", visitor="v2", before_order=timedelta(days=1))
    conversion = a_conversion(click_ids=[click_id(1)])
    decision = attribute(conversion, known(clicks=[cited, same_visitor, stranger]), DEFAULT)
    assert decision.click_id == click_id(1)
    assert dict(decision.rejected)[stranger] == "not cited by the order and not from its visitor"


def test_click_without_agent_cannot_win() -> None:
    orphan = a_click(1, agent=None)
    decision = attribute(a_conversion(), known(clicks=[orphan]), DEFAULT)
    assert decision.rejected == ((orphan, "click has no agent"),)


# --- coupons ---------------------------------------------------------------------------------


def test_coupon_beats_cookie_within_window() -> None:
    click = a_click(1, agent="a2")
    decision = attribute(
        a_conversion(coupons=["tenoff"]),
        known(clicks=[click], coupons={"TENOFF": "a1"}),
        DEFAULT,
    )
    assert decision.rule is AttributionRule.COUPON
    assert (decision.agent_id, decision.coupon_code, decision.click_id) == ("a1", "TENOFF", None)
    assert decision.explanation == (
        f"coupon TENOFF owned by agent a1 beats click {click_id(1)} of agent a2 "
        "(coupon_beats_cookie)"
    )
    assert decision.rejected == ((click, "coupon TENOFF wins (coupon_beats_cookie)"),)


def test_cookie_beats_coupon_when_configured() -> None:
    policy = AttributionPolicy(coupon_beats_cookie=False)
    decision = attribute(
        a_conversion(coupons=["TENOFF"]),
        known(clicks=[a_click(1, agent="a2")], coupons={"TENOFF": "a1"}),
        policy,
    )
    assert decision.rule is AttributionRule.LAST_CLICK
    assert decision.agent_id == "a2"
    assert "(cookie beats coupon)" in decision.explanation


def test_coupon_wins_alone_even_without_cookie_preference() -> None:
    policy = AttributionPolicy(coupon_beats_cookie=False)
    decision = attribute(a_conversion(coupons=["TENOFF"]), known(coupons={"TENOFF": "a1"}), policy)
    assert (decision.rule, decision.agent_id) == (AttributionRule.COUPON, "a1")


def test_codes_no_agent_owns_are_not_referrals() -> None:
    decision = attribute(a_conversion(coupons=["BLACKFRIDAY"]), known(), DEFAULT)
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert decision.rejected == ()


def test_first_owned_coupon_on_the_order_wins() -> None:
    decision = attribute(
        a_conversion(coupons=["SPRING", "TENOFF"]),
        known(coupons={"TENOFF": "a1", "SPRING": "a2"}),
        DEFAULT,
    )
    assert decision.coupon_code == "SPRING"
    assert [reason for _, reason in decision.rejected] == ["coupon SPRING comes first on the order"]


# --- self-referral ---------------------------------------------------------------------------


def test_self_referral_is_blocked() -> None:
    earlier = a_click(1, agent="a1", before_order=timedelta(days=4))
    own = a_click(2, agent="a2", before_order=timedelta(days=1))
    buyer_is_a2 = AgentIdentity(agent_id="a2", emails=frozenset({"BUYER@example.com"}))
    decision = attribute(
        a_conversion(), known(clicks=[earlier, own], identities=[buyer_is_a2]), DEFAULT
    )
    assert decision.agent_id == "a1"  # falls to the next candidate
    assert dict(decision.rejected)[own] == "self-referral: agent a2 is the buyer (same email)"


def test_self_referral_by_customer_id_leaves_the_order_unattributed() -> None:
    own_coupon = AgentIdentity(agent_id="a1", customer_ids=frozenset({"c1"}))
    decision = attribute(
        a_conversion(coupons=["TENOFF"], email=None),
        known(coupons={"TENOFF": "a1"}, identities=[own_coupon]),
        DEFAULT,
    )
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert [reason for _, reason in decision.rejected] == [
        "self-referral: agent a1 is the buyer (customer c1)"
    ]


# --- customer binding ------------------------------------------------------------------------


def test_customer_binding_wins_for_n_months() -> None:
    binding = a_binding(agent="a9", bound_at=ORDER_AT - timedelta(days=100), months=6)
    referrals = known(clicks=[a_click(1, agent="a2")], coupons={"TENOFF": "a1"}, bindings=[binding])
    decision = attribute(a_conversion(coupons=["TENOFF"]), referrals, DEFAULT)
    assert (decision.rule, decision.agent_id) == (AttributionRule.CUSTOMER_BINDING, "a9")
    assert "beats coupon TENOFF owned by agent a1, click" in decision.explanation
    assert {reason for _, reason in decision.rejected} == {"customer c1 is bound to agent a9"}

    after_expiry = a_conversion(coupons=["TENOFF"], occurred_at=add_months(binding.bound_at, 6))
    decision = attribute(after_expiry, referrals, DEFAULT)
    assert (decision.rule, decision.agent_id) == (AttributionRule.COUPON, "a1")
    assert decision.rejected[0] == (binding, "binding expired at 2025-05-30T12:00:00+00:00")


def test_binding_months_are_calendar_months_clamped_to_month_end() -> None:
    jan31 = datetime(2024, 1, 31, 9, tzinfo=UTC)
    assert add_months(jan31, 1) == datetime(2024, 2, 29, 9, tzinfo=UTC)
    assert add_months(jan31, 13) == datetime(2025, 2, 28, 9, tzinfo=UTC)
    assert add_months(jan31, 0) == jan31


def test_self_referral_also_blocks_a_binding() -> None:
    binding = a_binding(agent="a9", bound_at=ORDER_AT - timedelta(days=1))
    me = AgentIdentity(agent_id="a9", customer_ids=frozenset({"c1"}))
    referrals = known(clicks=[a_click(1, agent="a2")], bindings=[binding], identities=[me])
    assert attribute(a_conversion(), referrals, DEFAULT).agent_id == "a2"


def test_first_attributed_order_binds_the_customer() -> None:
    policy = AttributionPolicy(binding_months=12)
    conversion = a_conversion(coupons=["TENOFF"])
    decision = attribute(conversion, known(coupons={"TENOFF": "a1"}), policy)
    binding = binding_from(conversion, decision, policy)
    assert binding == CustomerBinding(
        customer_id="c1",
        agent_id="a1",
        program_id="p1",
        bound_at=ORDER_AT,
        months=12,
        conversion_id=conversion.conversion_id,
    )
    assert binding_from(conversion, decision, AttributionPolicy(binding_months=0)) is None
    # An active binding is not replaced, and a binding-attributed order does not extend it.
    assert binding_from(conversion, decision, policy, existing=binding) is None
    by_binding = attribute(conversion, known(bindings=[binding]), policy)
    assert by_binding.rule is AttributionRule.CUSTOMER_BINDING
    assert binding_from(conversion, by_binding, policy) is None


def test_an_expired_binding_can_be_replaced() -> None:
    policy = AttributionPolicy(binding_months=1)
    old = a_binding(agent="a9", bound_at=ORDER_AT - timedelta(days=60), months=1)
    conversion = a_conversion(coupons=["TENOFF"])
    decision = attribute(conversion, known(coupons={"TENOFF": "a1"}, bindings=[old]), policy)
    new = binding_from(conversion, decision, policy, existing=old)
    assert new is not None
    assert new.agent_id == "a1"


def test_unattributed_and_anonymous_orders_bind_nobody() -> None:
    policy = AttributionPolicy(binding_months=12)
    nothing = a_conversion()
    assert binding_from(nothing, attribute(nothing, known(), policy), policy) is None
    anonymous = a_conversion(customer_id=None, coupons=["TENOFF"])
    decision = attribute(anonymous, known(coupons={"TENOFF": "a1"}), policy)
    assert binding_from(anonymous, decision, policy) is None


# --- output ----------------------------------------------------------------------------------


def test_attributed_conversion_carries_the_decision() -> None:
    conversion = a_conversion(coupons=["TENOFF"])
    decision = attribute(conversion, known(coupons={"TENOFF": "a1"}), DEFAULT)
    processed = ORDER_AT + timedelta(minutes=3)
    fact = attributed_conversion(
        conversion,
        decision,
        attributed_at=processed,
        is_new_customer=True,
        fx_rate=Decimal("0.92"),
    )
    assert fact.conversion_id == conversion.conversion_id
    assert (fact.rule, fact.agent_id, fact.coupon_code) == (AttributionRule.COUPON, "a1", "TENOFF")
    assert (fact.occurred_at, fact.attributed_at) == (ORDER_AT, processed)
    assert fact.revenue == Decimal("100.00")
    assert fact.explanation == decision.explanation


def test_only_a_click_decision_names_a_link_and_the_fact_carries_it() -> None:
    conversion = a_conversion(coupons=["TENOFF"])
    clicks = [a_click(1, agent="a1", before_order=timedelta(days=2)), a_click(2, agent="a2")]
    by_click = attribute(conversion, known(clicks=clicks), DEFAULT)
    assert (by_click.click_id, by_click.link_code) == (click_id(2), "link-a2")
    fact = attributed_conversion(
        conversion, by_click, attributed_at=ORDER_AT, is_new_customer=False
    )
    assert (fact.click_id, fact.link_code) == (click_id(2), "link-a2")
    by_coupon = attribute(conversion, known(clicks=clicks, coupons={"TENOFF": "a3"}), DEFAULT)
    assert (by_coupon.rule, by_coupon.link_code) == (AttributionRule.COUPON, None)
    nobody = attribute(a_conversion(), known(), DEFAULT)
    assert nobody.link_code is None


def test_click_candidate_from_a_recorded_click() -> None:
    event = ClickEvent(
        click_id=click_id(5),
        tenant_id="t1",
        link_code="spring",
        occurred_at=ORDER_AT,
        visitor_id="v1",
        program_id="p1",
        agent_id="a1",
        is_bot=True,
    )
    candidate = ClickCandidate.from_event(event)
    assert (candidate.click_id, candidate.agent_id, candidate.is_bot) == (click_id(5), "a1", True)


# --- properties ------------------------------------------------------------------------------

agents = st.sampled_from(["a1", "a2", "a3", None])
one_click = st.builds(
    a_click,
    st.integers(min_value=0, max_value=30),
    agent=agents,
    before_order=st.timedeltas(min_value=timedelta(days=-3), max_value=timedelta(days=40)),
    visitor=st.sampled_from(["v1", "v2", None]),
    is_bot=st.booleans(),
    is_duplicate=st.booleans(),
)
clicks_strategy = st.lists(one_click, max_size=12)  # may repeat a click id with other content
unique_clicks = st.lists(one_click, max_size=12, unique_by=lambda c: c.click_id)
policies = st.builds(
    AttributionPolicy,
    lookback_days=st.integers(min_value=1, max_value=45),
    model=st.sampled_from(AttributionModel),
    coupon_beats_cookie=st.booleans(),
    exclude_bots=st.booleans(),
)


@given(clicks=clicks_strategy, policy=policies, data=st.data())
def test_attribution_is_invariant_under_permutation_of_candidate_clicks(
    clicks: list[ClickCandidate], policy: AttributionPolicy, data: st.DataObject
) -> None:
    conversion = a_conversion(coupons=["TENOFF"], click_ids=[click_id(3), click_id(4)])
    self_referrer = AgentIdentity(agent_id="a3", emails=frozenset({"buyer@example.com"}))
    shuffled = data.draw(st.permutations(clicks))
    repeated = data.draw(st.lists(st.sampled_from(clicks), max_size=3)) if clicks else []

    def decide(candidates: list[ClickCandidate]) -> object:
        referrals = known(clicks=candidates, coupons={"TENOFF": "a2"}, identities=[self_referrer])
        return attribute(conversion, referrals, policy)

    assert decide(clicks) == decide(shuffled) == decide(shuffled + repeated)


@given(clicks=unique_clicks, policy=policies)
def test_a_winning_click_is_always_eligible(
    clicks: list[ClickCandidate], policy: AttributionPolicy
) -> None:
    decision = attribute(a_conversion(), known(clicks=clicks), policy)
    if decision.click_id is None:
        return
    winner = next(c for c in clicks if c.click_id == decision.click_id)
    assert ORDER_AT - timedelta(days=policy.lookback_days) <= winner.occurred_at <= ORDER_AT
    assert not winner.is_duplicate
    assert not (winner.is_bot and policy.exclude_bots)
    assert winner.agent_id == decision.agent_id is not None


# --- policies per program ------------------------------------------------------------------------


def program_click(n: int, program: str, days_before: float, agent: str = "a1") -> ClickCandidate:
    return replace(a_click(n, agent=agent, before_order=timedelta(days=days_before)),
                   program_id=program)  # fmt: skip


def test_each_click_is_judged_by_its_own_programs_lookback() -> None:
    programs = {"short": AttributionPolicy(lookback_days=7), "long": AttributionPolicy()}
    clicks = [program_click(1, "short", 10, agent="a1"), program_click(2, "long", 20, agent="a2")]

    decision = attribute(a_conversion(), known(clicks=clicks), AttributionPolicy(),
                         programs=programs)  # fmt: skip

    assert (decision.agent_id, decision.program_id) == ("a2", "long")
    assert dict(decision.rejected)[clicks[0]] == "outside the 7-day lookback window"


def test_the_program_of_the_latest_click_governs_with_its_own_model() -> None:
    programs = {
        "first": AttributionPolicy(model=AttributionModel.FIRST_CLICK),
        "last": AttributionPolicy(),
    }
    clicks = [
        program_click(1, "last", 5, agent="a1"),
        program_click(2, "first", 4, agent="a2"),
        program_click(3, "first", 1, agent="a3"),  # the latest click: program "first" governs
    ]

    decision = attribute(a_conversion(), known(clicks=clicks), AttributionPolicy(),
                         programs=programs)  # fmt: skip

    assert (decision.rule, decision.agent_id) == (AttributionRule.FIRST_CLICK, "a2")
    reasons = dict(decision.rejected)
    assert reasons[clicks[0]] == f"program first's click {click_id(3)} is more recent"
    assert reasons[clicks[2]] == f"first_click: click {click_id(2)} is earlier"


def test_the_coupons_program_decides_whether_it_beats_a_cookie() -> None:
    programs = {
        "coupons": AttributionPolicy(coupon_beats_cookie=False),
        "links": AttributionPolicy(),
    }
    referrals = KnownReferrals(
        clicks=(program_click(1, "links", 2, agent="a1"),),
        coupons={"SAVE": CouponOwner(code="SAVE", agent_id="a2", program_id="coupons")},
    )

    decision = attribute(a_conversion(coupons=["SAVE"]), referrals, AttributionPolicy(),
                         programs=programs)  # fmt: skip

    assert (decision.rule, decision.agent_id) == (AttributionRule.LAST_CLICK, "a1")


def test_one_program_decides_as_the_single_policy_does() -> None:
    policy = AttributionPolicy(model=AttributionModel.FIRST_CLICK, lookback_days=3)
    clicks = [a_click(1, before_order=timedelta(days=2)), a_click(2, agent="a2"),
              a_click(3, agent="a3", before_order=timedelta(days=4))]  # fmt: skip
    alone = attribute(a_conversion(), known(clicks=clicks), policy)
    per_program = attribute(a_conversion(), known(clicks=clicks), AttributionPolicy(),
                            programs={"p1": policy})  # fmt: skip
    assert per_program == alone


# --- agent status in event time ------------------------------------------------------------


def history(*changes: tuple[timedelta, AgentStatus]) -> StatusHistory:
    """Changes at `ORDER_AT - offset` (positive offsets: before the order)."""
    return StatusHistory(tuple(sorted((ORDER_AT - ago, status) for ago, status in changes)))


TERMINATED_2D_AGO = history((timedelta(days=2), AgentStatus.TERMINATED))


def test_an_agent_terminated_before_the_order_loses_coupon_and_click_to_the_next_candidate() -> (
    None
):
    click = a_click(1, agent="a2", before_order=timedelta(days=5))  # before the termination
    referrals = known(clicks=[click], coupons={"TENOFF": "a1"}, statuses={"a1": TERMINATED_2D_AGO})
    decision = attribute(a_conversion(coupons=["TENOFF"]), referrals, DEFAULT)

    assert (decision.rule, decision.agent_id) == (AttributionRule.LAST_CLICK, "a2")
    ((coupon, reason),) = decision.rejected
    assert coupon.code == "TENOFF"
    assert reason == (
        "agent a1 is terminated since 2025-03-08T12:00:00+00:00 (not active at the order's time)"
    )
    # The terminated agent's own click (made while active) does not count either.
    own = a_click(2, agent="a1", before_order=timedelta(days=5))
    decision = attribute(a_conversion(), known(clicks=[own], statuses={"a1": TERMINATED_2D_AGO}),
                         DEFAULT)  # fmt: skip
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert "a1 is terminated" in decision.rejected[0][1]


def test_status_is_judged_at_the_orders_event_time_not_now() -> None:
    # Paused 10 days before the order, active again 1 day before: the order earns; an order
    # placed during the pause does not, whenever it is processed.
    paused = history(
        (timedelta(days=10), AgentStatus.PAUSED), (timedelta(days=1), AgentStatus.ACTIVE)
    )
    referrals = known(coupons={"TENOFF": "a1"}, statuses={"a1": paused})
    assert attribute(a_conversion(coupons=["TENOFF"]), referrals, DEFAULT).agent_id == "a1"
    during = a_conversion(coupons=["TENOFF"], occurred_at=ORDER_AT - timedelta(days=5))
    decision = attribute(during, referrals, DEFAULT)
    assert decision.rule is AttributionRule.UNATTRIBUTED
    assert decision.rejected[0][1].startswith("agent a1 is paused since 2025-02-28T12:00:00")
    # Terminated *after* the order: the order still earns.
    later = StatusHistory(((ORDER_AT + timedelta(seconds=1), AgentStatus.TERMINATED),))
    assert attribute(a_conversion(coupons=["TENOFF"]),
                     known(coupons={"TENOFF": "a1"}, statuses={"a1": later}),
                     DEFAULT).agent_id == "a1"  # fmt: skip


def test_an_inactive_agents_binding_yields_to_the_coupon_and_applies_again_once_active() -> None:
    binding = a_binding(agent="a9", bound_at=ORDER_AT - timedelta(days=100))
    paused = history((timedelta(days=3), AgentStatus.PAUSED))
    referrals = known(coupons={"TENOFF": "a1"}, bindings=[binding], statuses={"a9": paused})
    decision = attribute(a_conversion(coupons=["TENOFF"]), referrals, DEFAULT)
    assert (decision.rule, decision.agent_id) == (AttributionRule.COUPON, "a1")
    assert decision.rejected[0][0] == binding
    before_pause = a_conversion(coupons=["TENOFF"], occurred_at=ORDER_AT - timedelta(days=4))
    assert attribute(before_pause, referrals, DEFAULT).agent_id == "a9"


def test_status_history_order_ties_and_initial_status() -> None:
    at = ORDER_AT
    same_instant = StatusHistory(((at, AgentStatus.PAUSED), (at, AgentStatus.ACTIVE)))
    assert same_instant.at(at) == (AgentStatus.ACTIVE, at)  # the later recorded wins
    assert same_instant.at(at - timedelta(microseconds=1)) == (AgentStatus.ACTIVE, None)
    legacy = StatusHistory(initial=AgentStatus.TERMINATED)  # terminated before history existed
    assert legacy.at(at) == (AgentStatus.TERMINATED, None)
    assert not legacy.is_active_at(at)


# --- stored explanation: every rejected candidate as data ------------------------------------


def test_the_fact_stores_every_rejected_candidate_with_its_code_even_unattributed() -> None:
    bot = a_click(1, agent="a2", is_bot=True)
    old = a_click(2, agent="a3", before_order=timedelta(days=40))
    binding = a_binding(agent="a9", bound_at=ORDER_AT - timedelta(days=500))  # expired
    self_ref = AgentIdentity(agent_id="a1", emails=frozenset({"buyer@example.com"}))
    conversion = a_conversion(coupons=["TENOFF"])
    referrals = known(clicks=[bot, old], coupons={"TENOFF": "a1"}, bindings=[binding],
                      identities=[self_ref])  # fmt: skip
    decision = attribute(conversion, referrals, DEFAULT)
    assert decision.rule is AttributionRule.UNATTRIBUTED
    fact = attributed_conversion(conversion, decision, attributed_at=ORDER_AT,
                                 is_new_customer=False)  # fmt: skip
    assert fact.explanation == "no eligible binding, coupon or click (4 candidates rejected)"
    assert fact.rejected == (
        RejectedCandidate(
            kind=CandidateKind.BINDING, ref="c1", agent_id="a9", program_id="p1",
            at=binding.bound_at, code=RejectionCode.BINDING_EXPIRED,
            reason="binding expired at 2024-10-27T12:00:00+00:00",
        ),
        RejectedCandidate(
            kind=CandidateKind.COUPON, ref="TENOFF", agent_id="a1", program_id="p1",
            code=RejectionCode.SELF_REFERRAL,
            reason="self-referral: agent a1 is the buyer (same email)",
        ),
        RejectedCandidate(
            kind=CandidateKind.CLICK, ref=click_id(2), agent_id="a3", program_id="p1",
            link_code="link-a3", at=old.occurred_at, code=RejectionCode.OUTSIDE_WINDOW,
            reason="outside the 30-day lookback window",
        ),
        RejectedCandidate(
            kind=CandidateKind.CLICK, ref=click_id(1), agent_id="a2", program_id="p1",
            link_code="link-a2", at=bot.occurred_at, code=RejectionCode.BOT, reason="bot click",
        ),
    )  # fmt: skip


def test_an_attributed_fact_lists_what_the_winner_beat() -> None:
    conversion = a_conversion(coupons=["TENOFF"])
    clicks = [a_click(1, agent="a1", before_order=timedelta(days=3)), a_click(2, agent="a2")]
    decision = attribute(conversion, known(clicks=clicks, coupons={"TENOFF": "a3"}), DEFAULT)
    fact = attributed_conversion(conversion, decision, attributed_at=ORDER_AT,
                                 is_new_customer=False)  # fmt: skip
    assert (fact.rule, fact.coupon_code) == (AttributionRule.COUPON, "TENOFF")
    assert [(r.kind, r.ref, r.code) for r in fact.rejected] == [
        (CandidateKind.CLICK, click_id(1), RejectionCode.ATTRIBUTION_MODEL),
        (CandidateKind.CLICK, click_id(2), RejectionCode.COUPON_WINS),
    ]


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("not cited by the order and not from its visitor", RejectionCode.NOT_CITED),
        ("click after the order", RejectionCode.AFTER_ORDER),
        ("outside the 7-day lookback window", RejectionCode.OUTSIDE_WINDOW),
        ("duplicate of an earlier click", RejectionCode.DUPLICATE),
        ("bot click", RejectionCode.BOT),
        ("click has no agent", RejectionCode.NO_AGENT),
        (
            "agent a1 is terminated since 2025-03-08T12:00:00+00:00 (not active at the order's "
            "time)",
            RejectionCode.AGENT_INACTIVE,
        ),
        ("agent a1 is paused (not active at the order's time)", RejectionCode.AGENT_INACTIVE),
        ("self-referral: agent a2 is the buyer (same email)", RejectionCode.SELF_REFERRAL),
        ("self-referral: agent a2 is the buyer (customer c1)", RejectionCode.SELF_REFERRAL),
        ("binding starts after the order", RejectionCode.BINDING_NOT_STARTED),
        ("binding expired at 2025-05-30T12:00:00+00:00", RejectionCode.BINDING_EXPIRED),
        ("customer c1 is bound to agent a9", RejectionCode.BOUND_CUSTOMER),
        ("coupon TENOFF wins (coupon_beats_cookie)", RejectionCode.COUPON_WINS),
        ("click clk_1 wins (cookie beats coupon)", RejectionCode.CLICK_WINS),
        ("coupon SPRING comes first on the order", RejectionCode.ANOTHER_COUPON),
        ("program p2's click clk_9 is more recent", RejectionCode.ANOTHER_PROGRAM),
        ("last_click: click clk_2 is later", RejectionCode.ATTRIBUTION_MODEL),
        ("first_click: click clk_1 is earlier", RejectionCode.ATTRIBUTION_MODEL),
        ("a reason this version never writes", RejectionCode.OTHER),
    ],
)
def test_every_reason_has_its_code(reason: str, code: RejectionCode) -> None:
    assert reason_code(reason) is code


statuses = st.sampled_from([AgentStatus.ACTIVE, AgentStatus.PAUSED, AgentStatus.TERMINATED])


@given(
    clicks=unique_clicks,
    policy=policies,
    coupon_owners=st.lists(agents.filter(lambda a: a is not None), max_size=2),
    bound=st.one_of(st.none(), st.integers(min_value=-30, max_value=800)),
    status=statuses,
    self_referrer=st.sampled_from(["a1", "a2", "a3", "nobody"]),
    second_program=st.booleans(),
)
def test_every_reason_attribute_writes_has_a_code(
    clicks: list[ClickCandidate],
    policy: AttributionPolicy,
    coupon_owners: list[str],
    bound: int | None,
    status: AgentStatus,
    self_referrer: str,
    second_program: bool,
) -> None:
    """Whatever the candidates, no rejection is left `other`, and the stored list is the
    decision's, in its order."""
    codes = [f"C{i}" for i in range(len(coupon_owners))]
    if second_program:
        clicks = [replace(c, program_id="p2") if i % 2 else c for i, c in enumerate(clicks)]
    bindings = (
        [a_binding(agent="a3", bound_at=ORDER_AT - timedelta(days=bound), months=12)]
        if bound is not None
        else []
    )
    referrals = known(
        clicks=clicks, coupons=dict(zip(codes, coupon_owners, strict=True)), bindings=bindings,
        identities=[AgentIdentity(agent_id=self_referrer, customer_ids=frozenset({"c1"}))],
        statuses={"a2": history((timedelta(days=1), status))},
    )  # fmt: skip
    conversion = a_conversion(coupons=codes, click_ids=[click_id(3), click_id(4)])
    decision = attribute(conversion, referrals, policy, programs={"p2": AttributionPolicy()})
    stored = rejected_candidates(decision)
    assert [r.reason for r in stored] == [reason for _, reason in decision.rejected]
    assert all(r.code is not RejectionCode.OTHER for r in stored), stored
