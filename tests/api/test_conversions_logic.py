"""The pure parts of /v1/conversions: the widening windows of a page, what a restricted reader
sees of a decision (redaction), and a row's winner and status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from api.conversions.repository import WINDOWS, OrderQuery, keys_sql, windows
from api.conversions.schemas import ConversionStatus, RejectedRead
from api.conversions.service import CODE_TEXT, decision_from, redact, winner_of
from schemas.ledger import CandidateKind, RejectionCode

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def q(**kw: Any) -> OrderQuery:
    return OrderQuery(**({"tenant_id": "t1", "agents": None} | kw))


def test_a_page_widens_from_the_anchor_and_ends_unbounded() -> None:
    tries = windows(q(), NOW)
    spans = [w for w in WINDOWS if w is not None]
    assert [t.start for t in tries] == [*(NOW - s for s in spans), None]
    # The anchor is the cursor, else `to`, else now.
    cursor = (datetime(2026, 5, 1, tzinfo=UTC), "cv_9")
    assert windows(q(after=cursor), NOW)[0].start == cursor[0] - spans[0]
    end = datetime(2026, 7, 1, tzinfo=UTC)
    assert windows(q(end=end), NOW)[0].start == end - spans[0]


def test_a_window_never_reaches_before_from_and_the_last_try_is_the_query() -> None:
    start = NOW - timedelta(days=10)
    tries = windows(q(start=start), NOW)
    assert [t.start for t in tries] == [NOW - timedelta(days=1), NOW - timedelta(days=7), start]
    assert tries[-1] == q(start=start)
    within = NOW - timedelta(hours=2)
    assert windows(q(start=within), NOW) == [q(start=within)]
    # An order lookup uses its bloom filters: one try.
    assert windows(q(order="#1001"), NOW) == [q(order="#1001")]


def test_values_travel_as_parameters_never_in_the_sql() -> None:
    hostile = "x' OR 1=1 --"
    sql, params = keys_sql(q(order=hostile, agents=(hostile,), program_id=hostile))
    assert hostile not in sql
    assert params["order"] == hostile
    assert params["agents"] == [hostile]


def rejected(agent: str | None, ref: str, code: RejectionCode, reason: str) -> RejectedRead:
    return RejectedRead(kind=CandidateKind.CLICK, ref=ref, agent_id=agent, program_id="p1",
                        code=code, reason=reason)  # fmt: skip


def test_redaction_hides_whoever_is_outside_the_reach_and_any_text_naming_them() -> None:
    mine = rejected("a1", "clk_1", RejectionCode.ATTRIBUTION_MODEL, "last_click: clk_3 is later")
    theirs = rejected("b1", "clk_2", RejectionCode.ANOTHER_PROGRAM,
                      "program p2's click clk_2 is more recent")  # fmt: skip
    loose = rejected(None, "clk_4", RejectionCode.NO_AGENT, "click has no agent")
    naming = rejected("a1", "clk_5", RejectionCode.ANOTHER_PROGRAM,
                      "program p2's click clk_2 is more recent")  # fmt: skip
    text = "last_click click clk_3 of agent a1 beats click clk_2 of agent b1"
    winner = winner_of({"rule": "last_click", "agent_id": "a1", "program_id": "p1",
                        "click_id": "clk_3", "link_code": "spring", "coupon_code": None,
                        "customer_id": None})  # fmt: skip

    everything = redact(text, [mine, theirs, loose, naming], winner, None)
    assert everything == (text, [mine, theirs, loose, naming])

    explanation, shown = redact(text, [mine, theirs, loose, naming], winner, ("a1",))
    assert explanation == "click clk_3 of agent a1 via link spring"
    assert shown[0] == mine
    assert shown[1].model_dump() == {
        "kind": CandidateKind.CLICK, "ref": None, "agent_id": None, "program_id": "p1",
        "link_code": None, "at": None, "code": RejectionCode.ANOTHER_PROGRAM,
        "reason": CODE_TEXT[RejectionCode.ANOTHER_PROGRAM], "redacted": True,
    }  # fmt: skip
    assert shown[2] == loose
    # One's own candidate whose reason names the hidden click keeps its data, not the words.
    assert (shown[3].ref, shown[3].reason, shown[3].redacted) == (
        "clk_5", CODE_TEXT[RejectionCode.ANOTHER_PROGRAM], False,
    )  # fmt: skip
    assert "b1" not in str(shown)
    assert "clk_2" not in str(shown)


def test_every_code_has_generic_words() -> None:
    assert set(CODE_TEXT) == set(RejectionCode)


def row(**kw: Any) -> dict[str, Any]:
    at = datetime(2026, 10, 1, 12, tzinfo=UTC)
    return {
        "conversion_id": "cv_1", "order_id": "1", "order_name": None, "shop": None,
        "occurred_at": at.replace(tzinfo=None), "attributed_at": at, "rule": "coupon",
        "agent_id": "a1", "program_id": "p1", "click_id": None, "link_code": None,
        "coupon_code": "SPRING", "customer_id": "c9", "currency": "JPY",
        "revenue": Decimal("1200.0000"), "is_new_customer": 0, "explanation": "",
        "rejected": [],
    } | kw  # fmt: skip


def test_a_row_written_before_decisions_were_stored_is_marked_unexplained() -> None:
    decision = decision_from(row(), None)
    assert (decision.explained, decision.explanation, decision.rejected) == (False, "", [])
    assert decision.winner is not None
    assert (decision.winner.kind, decision.winner.ref) == (CandidateKind.COUPON, "SPRING")
    assert decision.revenue == "1200"  # yen have no minor unit
    assert decision.occurred_at.tzinfo is not None  # naive from the driver: it is UTC


def test_winner_by_rule() -> None:
    bound = decision_from(row(rule="customer_binding", coupon_code=None), None)
    assert bound.winner is not None
    assert (bound.winner.kind, bound.winner.ref) == (CandidateKind.BINDING, "c9")
    nobody = decision_from(row(rule="unattributed", agent_id=None, program_id=None), None)
    assert (nobody.status, nobody.winner) == (ConversionStatus.unattributed, None)


def test_a_code_from_a_newer_writer_reads_as_other() -> None:
    element = {
        "kind": "click", "ref": "clk_1", "agent_id": "a1", "program_id": None,
        "link_code": None, "at": None, "code": "brand_new", "reason": "new words",
    }  # fmt: skip
    (shown,) = decision_from(row(rejected=[element], explanation="x"), None).rejected
    assert (shown.code, shown.reason) == (RejectionCode.OTHER, "new words")
