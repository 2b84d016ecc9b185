"""Every decided order explained: the `conversions` row carries the decision's explanation and
every rejected candidate (ClickHouse 0006), built by the pure row function, emitted by the flow
for attributed and unattributed orders alike, and read back from the real ClickHouse."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from bytewax.testing import run_main

from api.conversions.repository import COLUMNS as READ_COLUMNS
from api.conversions.repository import order_sql
from api.conversions.service import decision_from
from dataflows.attribution.flow import build
from dataflows.sinks.clickhouse import COLUMNS, REJECTED_FIELDS, client_for, conversion_row
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CandidateKind,
    RejectedCandidate,
    RejectionCode,
)
from schemas.settings import Settings
from tests.dataflows.builders import T0, Tenant, click, click_id, days, order
from tests.dataflows.conftest import Topics, produce
from tests.dataflows.test_flow import TENANT, run


def a_fact(rejected: tuple[RejectedCandidate, ...]) -> AttributedConversion:
    return AttributedConversion(
        conversion_id="cv_1", tenant_id="t1", shop="s.myshopify.com", order_id="1001",
        order_name="#1001", occurred_at=T0, attributed_at=T0 + timedelta(seconds=5),
        rule=AttributionRule.UNATTRIBUTED, agent_id=None, program_id=None, currency="EUR",
        revenue=Decimal("10.00"), explanation="no eligible binding, coupon or click (2 ...)",
        source_event_id="ev_1", rejected=rejected,
    )  # fmt: skip


BOT = RejectedCandidate(
    kind=CandidateKind.CLICK, ref="clk_1", agent_id="a1", program_id="p1", link_code="spring",
    at=T0 - days(1), code=RejectionCode.BOT, reason="bot click",
)  # fmt: skip
COUPON = RejectedCandidate(
    kind=CandidateKind.COUPON, ref="TENOFF", agent_id="a2", program_id=None,
    code=RejectionCode.SELF_REFERRAL, reason="self-referral: agent a2 is the buyer (same email)",
)  # fmt: skip


def test_the_row_carries_the_explanation_and_every_rejected_candidate_in_order() -> None:
    row = dict(zip(COLUMNS["conversions"], conversion_row(a_fact((COUPON, BOT))), strict=True))
    assert row["rule"] == "unattributed"
    assert row["explanation"] == "no eligible binding, coupon or click (2 ...)"
    assert row["rejected"] == [
        ("coupon", "TENOFF", "a2", None, None, None, "self_referral",
         "self-referral: agent a2 is the buyer (same email)"),
        ("click", "clk_1", "a1", "p1", "spring", T0 - days(1), "bot", "bot click"),
    ]  # fmt: skip
    assert len(REJECTED_FIELDS) == len(row["rejected"][0])
    assert (
        dict(zip(COLUMNS["conversions"], conversion_row(a_fact(())), strict=True))["rejected"] == []
    )


def test_the_flow_explains_unattributed_orders_too() -> None:
    later, recent = click_id("later"), click_id("recent")
    result = run([
        click(TENANT, later, at=T0 + days(2)),
        click(TENANT, recent, at=T0),
        # Cites a click made after it (event time): nobody earns.
        order(TENANT, 1001, at=T0 + days(1), cites=later),
        # Cites one a day old: attributed, nothing rejected.
        order(TENANT, 1002, at=T0 + days(1), cites=recent),
    ])  # fmt: skip
    unattributed = result.last_conversion("1001")
    assert unattributed.rule is AttributionRule.UNATTRIBUTED
    assert unattributed.explanation.startswith("no eligible binding, coupon or click")
    assert [(r.kind, r.ref, r.agent_id, r.code, r.at) for r in unattributed.rejected] == [
        (CandidateKind.CLICK, later, "agt_ana", RejectionCode.AFTER_ORDER, T0 + days(2)),
    ]
    attributed = result.last_conversion("1002")
    assert (attributed.rule, attributed.click_id) == (AttributionRule.LAST_CLICK, recent)
    assert attributed.explanation.startswith(f"last_click click {recent} of agent agt_ana")
    assert attributed.rejected == ()


def test_pipeline_stores_the_decision_in_clickhouse_and_the_api_reads_it_back(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    early, late = click_id(f"{t.tenant_id}-early"), click_id(f"{t.tenant_id}-late")
    events = [
        (topics.clicks, click(t.tenant_id, early, at=T0, agent=t.ana, program=t.program)),
        (topics.clicks, click(t.tenant_id, late, at=T0 + days(2), agent=t.ana,
                              program=t.program)),
        # Ana's click and Bob's coupon: the coupon wins (coupon_beats_cookie).
        (topics.orders, order(t.tenant_id, 3001, at=T0 + days(3), cites=early,
                              coupon=t.coupon.lower(), lines=[(1, 1, "80.00")])),
        # Its only click comes after it: decided, unattributed, explained.
        (topics.orders, order(t.tenant_id, 3002, at=T0 + days(1), cites=late)),
    ]  # fmt: skip
    produce(stack_settings, events)
    run_main(build(stack_settings, tail=False, input_topics=topics.inputs,
                   deadletter_topic=topics.deadletter))  # fmt: skip

    client = client_for(stack_settings)
    try:

        def read(order_id: str) -> dict[str, object]:
            (row,) = client.query(*order_sql(t.tenant_id, order_id)).result_rows
            return dict(zip(READ_COLUMNS, row, strict=True))

        won = decision_from(read("3001"), None)
        lost = decision_from(read("3002"), None)
    finally:
        client.close()
    assert won.winner is not None
    assert (won.rule, won.agent_id, won.winner.kind, won.winner.ref) == (
        AttributionRule.COUPON, t.bob, CandidateKind.COUPON, t.coupon.upper(),
    )  # fmt: skip
    assert [(r.ref, r.agent_id, r.link_code, r.code, r.at) for r in won.rejected] == [
        (early, t.ana, f"link-{t.ana}", RejectionCode.COUPON_WINS, T0),
    ]
    assert won.explained
    assert won.revenue == "80.00"
    assert (lost.status, lost.winner, lost.explained) == ("unattributed", None, True)
    assert [(r.kind, r.ref, r.code, r.reason) for r in lost.rejected] == [
        (CandidateKind.CLICK, late, RejectionCode.AFTER_ORDER, "click after the order"),
    ]
