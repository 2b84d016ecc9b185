"""The pure parts of analytics: periods and buckets in a company's zone, reach narrowing, ratios
and the breakdown cursor. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from api.analytics.builder import batches
from api.analytics.periods import (
    MAX_BUCKETS,
    Bucket,
    PeriodError,
    bucket_start,
    bucket_starts,
    company_zone,
    resolve_period,
)
from api.analytics.rollups import (
    DAY_MS,
    HOUR_MS,
    Build,
    DayWork,
    Filters,
    Span,
    SpanWork,
    aligned,
    choose_cuboid,
    month_start,
    plan,
    span_end,
    stale_days,
    stale_spans,
    utc_ms,
    week_start,
)
from api.analytics.schemas import Dimension, Metric
from api.analytics.service import (
    decode_rank_cursor,
    encode_rank_cursor,
    money_text,
    narrow,
    ratio_text,
)
from api.errors import BadRequest

BERLIN = ZoneInfo("Europe/Berlin")
NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def test_default_period_is_the_30_days_before_now() -> None:
    assert resolve_period(None, None, now=NOW) == (NOW - timedelta(days=30), NOW)
    start = datetime(2026, 1, 1, 1, tzinfo=ZoneInfo("Europe/Berlin"))
    assert resolve_period(start, None, now=NOW)[0] == datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end"),
    [(NOW, NOW), (NOW, NOW - timedelta(seconds=1)), (datetime(1, 1, 2, tzinfo=UTC), NOW)],
)
def test_empty_inverted_or_out_of_range_periods_are_refused(start: datetime, end: datetime) -> None:
    with pytest.raises(PeriodError):
        resolve_period(start, end, now=NOW)


def test_a_late_utc_hour_is_the_next_day_in_berlin_and_the_same_day_in_new_york() -> None:
    late = datetime(2026, 10, 14, 23, 30, tzinfo=UTC)
    assert bucket_start(late, Bucket.day, BERLIN).isoformat() == "2026-10-15T00:00:00+02:00"
    new_york = bucket_start(late, Bucket.day, ZoneInfo("America/New_York"))
    assert new_york.isoformat() == "2026-10-14T00:00:00-04:00"


def test_day_buckets_start_at_local_midnight_across_a_dst_change() -> None:
    starts = bucket_starts(
        datetime(2026, 10, 24, tzinfo=UTC), datetime(2026, 10, 27, tzinfo=UTC), Bucket.day, BERLIN
    )
    assert [s.isoformat() for s in starts] == [
        "2026-10-24T00:00:00+02:00",
        "2026-10-25T00:00:00+02:00",  # 25 hours long
        "2026-10-26T00:00:00+01:00",
        "2026-10-27T00:00:00+01:00",
    ]


def test_hour_buckets_follow_half_hour_zones() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    starts = bucket_starts(
        datetime(2026, 1, 1, 0, 10, tzinfo=UTC),
        datetime(2026, 1, 1, 2, tzinfo=UTC),
        Bucket.hour,
        kolkata,
    )
    assert [s.astimezone(UTC).strftime("%H:%M") for s in starts] == ["23:30", "00:30", "01:30"]


def test_too_many_buckets_is_an_error() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert len(bucket_starts(start, start + timedelta(minutes=MAX_BUCKETS), Bucket.minute, BERLIN))
    with pytest.raises(PeriodError):
        bucket_starts(start, start + timedelta(days=30), Bucket.minute, BERLIN)


def test_unknown_zone_names_fall_back_to_utc() -> None:
    assert company_zone("Mars/Olympus").key == "UTC"
    assert company_zone("Europe/Berlin").key == "Europe/Berlin"


def test_filters_narrow_the_reach_and_never_widen_it() -> None:
    assert narrow(None) is None
    assert narrow(None, agent_id="a") == ("a",)
    assert narrow(("a", "b"), agent_id="c") == ()
    assert narrow(("a", "b"), unit_agents=("b", "c")) == ("b",)
    assert narrow(None, unit_agents=("b", "c")) == ("b", "c")
    assert narrow(("a", "b"), agent_id="a", unit_agents=("b",)) == ()


def test_ratios_and_money_round_half_even() -> None:
    assert ratio_text(1, 3) == "0.3333"
    assert ratio_text(Decimal("0.00005"), 1) == "0.0000"
    assert ratio_text(5, 0) is None
    assert money_text(Decimal("2.345000000000"), "EUR") == "2.34"
    assert money_text(Decimal("1234.5"), "JPY") == "1234"


def test_breakdown_cursor_round_trips_and_refuses_another_sort() -> None:
    cursor = encode_rank_cursor(Dimension.agent, Metric.revenue, Decimal("12.5"), "agt_x")
    assert decode_rank_cursor(cursor, Dimension.agent, Metric.revenue) == ("12.5", "agt_x")
    for by, sort in ((Dimension.unit, Metric.revenue), (Dimension.agent, Metric.clicks)):
        with pytest.raises(BadRequest):
            decode_rank_cursor(cursor, by, sort)
    for garbage in ("!!", "e30", encode_rank_cursor(Dimension.agent, Metric.clicks, 1, "k")[:-4]):
        with pytest.raises(BadRequest):
            decode_rank_cursor(garbage, Dimension.agent, Metric.clicks)


# --- rollups: where a period is read from, which days to build ------------------------------

H, D = HOUR_MS, DAY_MS
DAY0 = 20_000 * D  # some UTC midnight, in ms


def test_current_days_and_hours_come_from_rollups_and_the_rest_from_raw_rows() -> None:
    # Day 0 built whole at +30 h; day 1 built up to 05:00 at +30 h; hour 1:03 of day 0 touched
    # after its build (a late row), hour 1:02 of day 1 touched before it.
    builds = {
        DAY0: Build(DAY0 + 30 * H, DAY0 + D, 7),
        DAY0 + D: Build(DAY0 + 30 * H, DAY0 + D + 5 * H, 8),
    }
    touches = {DAY0 + 3 * H: DAY0 + 31 * H, DAY0 + D + 2 * H: DAY0 + 29 * H}
    start, end = DAY0 - 20 * 60_000, DAY0 + D + 7 * H + 10 * 60_000
    whole = plan(DAY0, DAY0 + D, "agent", builds, {}, grain="d")
    assert (whole.days, whole.hours, whole.raw, whole.gens) == ((DAY0,), (), (), (7,))
    split = plan(start, end, "total", builds, touches, grain="d")
    assert split.days == ()  # day 0 has a stale hour: its other hours come from hour rows
    assert split.hours == tuple(h for h in range(DAY0, DAY0 + D + 5 * H, H) if h != DAY0 + 3 * H)
    assert split.raw == ((start, DAY0), (DAY0 + 3 * H, DAY0 + 4 * H), (DAY0 + D + 5 * H, end))
    assert split.gens == (7, 8)
    minutes = plan(start, end, "total", builds, touches, grain="m")
    assert (minutes.hours, minutes.minutes) == (split.hours, True)
    # Shops have day rows only: their partial days are read raw.
    shop = plan(start, end, "shop", builds, touches, grain="d")
    assert (shop.days, shop.hours, shop.raw) == ((), (), ((start, end),))
    # Minute rows exist for totals only; a period inside one hour has no whole hour.
    assert plan(start, end, "agent", builds, touches, grain="m").raw == ((start, end),)
    assert plan(DAY0 + 60_000, DAY0 + H - 1, "total", builds, {}, grain="d").raw == (
        (DAY0 + 60_000, DAY0 + H - 1),
    )


OCT = utc_ms(datetime(2026, 10, 1, tzinfo=UTC))  # a Thursday
MON = utc_ms(datetime(2026, 10, 5, tzinfo=UTC))  # the first Monday of October 2026


def test_weeks_start_on_monday_and_months_on_the_first_in_utc() -> None:
    assert week_start(MON + 6 * D + 23 * H) == MON
    assert week_start(OCT) == MON - 7 * D
    assert month_start(MON + 3 * H) == OCT
    assert span_end("M", OCT) == utc_ms(datetime(2026, 11, 1, tzinfo=UTC))
    assert span_end("M", utc_ms(datetime(2026, 12, 1, tzinfo=UTC))) == utc_ms(
        datetime(2027, 1, 1, tzinfo=UTC)
    )
    assert span_end("w", MON) == MON + 7 * D


def _whole_days(first: int, n: int, gen: int = 1) -> dict[int, Build]:
    return {
        first + i * D: Build(first + i * D + 26 * H, first + (i + 1) * D, gen + i) for i in range(n)
    }


def test_whole_current_months_then_weeks_then_days_cover_a_period() -> None:
    # Sep 28 (Monday) to Nov 3 (37 days), every day built whole; the month of October and every week
    # summed exactly their days' current gens.
    first = MON - 7 * D
    builds = _whole_days(first, 37)
    month = Span(0, 900, tuple(builds[d].gen for d in range(OCT, OCT + 31 * D, D)))
    weeks = {
        ("w", w): Span(0, 800 + i, tuple(builds[d].gen for d in range(w, w + 7 * D, D)))
        for i, w in enumerate(range(first, first + 35 * D, 7 * D))
    }
    spans = {("M", OCT): month, **weeks}
    whole = plan(first, first + 37 * D, "total", builds, {}, grain="d", spans=spans)
    assert whole.months == (OCT,)
    # the week of Sep 28 overlaps October: its days before October are read as days
    assert whole.weeks == ()
    assert whole.days == tuple(first + i * D for i in (0, 1, 2, 34, 35, 36))  # Nov 1-3 too
    assert (whole.hours, whole.raw) == ((), ())
    assert 900 in whole.gens
    assert ("M", OCT, 900) in whole.pieces
    # October minus its first 4 days, to Nov 2: 4 weeks (Oct 5 to Nov 1), nothing else
    four = plan(MON, MON + 28 * D, "agent", builds, {}, grain="d", spans=spans)
    assert (four.months, four.weeks, four.days) == ((), tuple(range(MON, MON + 28 * D, 7 * D)), ())
    # A late row in an hour of Oct 14: its day reads hours, its week and month are not read.
    late = {MON + 9 * D + 5 * H: MON + 40 * D}
    stale = plan(first, first + 37 * D, "total", builds, late, grain="d", spans=spans)
    assert stale.months == ()
    assert stale.weeks == (first, MON, MON + 14 * D, MON + 21 * D)  # not the week of Oct 12
    assert MON + 9 * D not in stale.days
    assert MON + 9 * D + 5 * H not in stale.hours
    assert stale.raw == ((MON + 9 * D + 5 * H, MON + 9 * D + 6 * H),)
    # A day rebuilt since its week was summed (another gen): the week is not read.
    rebuilt = dict(builds) | {MON + 9 * D: Build(MON + 41 * D, MON + 10 * D, 77)}
    again = plan(first, first + 37 * D, "total", rebuilt, {}, grain="d", spans=spans)
    assert again.months == ()
    assert MON + 7 * D not in again.weeks
    assert MON + 9 * D in again.days
    assert ("d", MON + 9 * D, 77) in again.pieces
    # Hours and time series plans read no spans.
    assert plan(MON, MON + 28 * D, "total", builds, {}, grain="h", spans=spans).weeks == ()


def test_weeks_and_months_are_rebuilt_when_a_day_gen_changes_and_only_when_whole() -> None:
    first = MON - 7 * D
    builds = {("t", d): b for d, b in _whole_days(first, 37).items()}
    work = stale_spans(builds, {})
    weeks = [w.start_ms for w in work if w.grain == "w"]
    assert weeks == list(range(first, first + 35 * D, 7 * D))  # the week of Nov 2 is not whole
    assert [w.start_ms for w in work if w.grain == "M"] == [OCT]  # Sep and Nov are not whole
    spans = {(w.tenant_id, w.grain, w.start_ms): Span(0, 1, w.gens) for w in work}
    assert stale_spans(builds, spans) == []
    builds[("t", MON + 9 * D)] = Build(0, MON + 10 * D, 99)
    again = stale_spans(builds, spans)
    assert [(w.grain, w.start_ms) for w in again] == [("M", OCT), ("w", MON + 7 * D)]
    week = range(MON + 7 * D, MON + 14 * D, D)
    gens = tuple(99 if d == MON + 9 * D else builds[("t", d)].gen for d in week)
    assert again[1] == SpanWork("t", "w", MON + 7 * D, gens)
    # a day built only up to the open hour leaves its week and month unbuilt
    builds[("t", MON + 9 * D)] = Build(0, MON + 9 * D + 5 * H, 100)
    assert stale_spans(builds, spans) == []


def test_the_cuboid_has_every_dimension_asked_for() -> None:
    assert choose_cuboid(Filters(), None) == "total"
    assert choose_cuboid(Filters(agents=("a",)), "agent") == "agent"
    assert choose_cuboid(Filters(coupon_code="C"), None) == "coupon"
    assert choose_cuboid(Filters(agents=()), "shop") == "full"
    assert choose_cuboid(Filters(program_id="p", shop="s"), None) == "full"


def test_stale_days_are_those_with_a_closed_hour_unbuilt_or_touched_after_the_build() -> None:
    builds = {("t", DAY0): Build(DAY0 + 30 * H, DAY0 + D, 1),
              ("t", DAY0 + D): Build(DAY0 + 30 * H, DAY0 + D + 5 * H, 2)}  # fmt: skip
    closed = DAY0 + D + 8 * H
    touches = [
        ("t", DAY0 + 2 * H, DAY0 + 29 * H),  # built after: current
        ("t", DAY0 + D + 6 * H, DAY0 + 31 * H),  # closed since the build: stale
        ("t", DAY0 + D + 9 * H, DAY0 + 33 * H),  # the open hour and later: not yet
        ("u", DAY0 + 4 * H, 0),  # another tenant, never built
    ]
    assert stale_days(touches, builds, closed) == [
        DayWork("t", DAY0 + D, closed), DayWork("u", DAY0, DAY0 + D)
    ]  # fmt: skip
    late = [("t", DAY0 + 2 * H, DAY0 + 31 * H)]
    assert stale_days(late, builds, closed) == [DayWork("t", DAY0, DAY0 + D)]


def test_consecutive_whole_days_of_a_tenant_are_built_together() -> None:
    work = [DayWork("t", DAY0 + i * D, DAY0 + (i + 1) * D) for i in range(9)]
    work += [DayWork("t", DAY0 + 9 * D, DAY0 + 9 * D + 3 * H), DayWork("u", DAY0, DAY0 + D)]
    assert [len(b) for b in batches(work, days=4)] == [4, 4, 2, 1]
    assert batches(work, days=4)[2][-1].until_ms == DAY0 + 9 * D + 3 * H


def test_rollup_hours_serve_time_series_only_in_zones_on_whole_hours() -> None:
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 10, 4, tzinfo=UTC)
    for zone, whole in (("Europe/Berlin", True), ("Asia/Kolkata", False), ("UTC", True)):
        starts = bucket_starts(start, end, Bucket.day, ZoneInfo(zone))
        assert aligned(starts) is whole
