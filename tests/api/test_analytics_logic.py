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
    MonthBuild,
    MonthWork,
    aligned,
    choose_cuboid,
    next_month,
    plan,
    read_settings,
    read_state,
    reads_agent_table,
    rollup_facts,
    stale_days,
    stale_months,
    utc_ms,
    whole_months,
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
    assert whole.day_gens == (7,)  # each day is read under its own build's gen
    split = plan(start, end, "total", builds, touches, grain="d")
    assert split.days == ()  # day 0 has a stale hour: its other hours come from hour rows
    assert split.hours == tuple(h for h in range(DAY0, DAY0 + D + 5 * H, H) if h != DAY0 + 3 * H)
    assert split.raw == ((start, DAY0), (DAY0 + 3 * H, DAY0 + 4 * H), (DAY0 + D + 5 * H, end))
    assert split.gens == (7, 8)
    assert split.hour_gens == tuple(7 if h < DAY0 + D else 8 for h in split.hours)
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


# --- month rows of the totals ---------------------------------------------------------------


def _ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return utc_ms(datetime(year, month, day, hour, tzinfo=UTC))


def test_whole_months_are_the_utc_months_inside_a_period() -> None:
    assert whole_months(_ms(2026, 5, 29), _ms(2026, 11, 25)) == [
        _ms(2026, m, 1) for m in range(6, 11)
    ]
    assert whole_months(_ms(2026, 6, 1), _ms(2026, 7, 1)) == [_ms(2026, 6, 1)]
    assert whole_months(_ms(2026, 6, 1, 1), _ms(2026, 8, 1)) == [_ms(2026, 7, 1)]
    assert whole_months(_ms(2026, 6, 1), _ms(2026, 6, 30, 23)) == []
    assert next_month(_ms(2026, 12, 1)) == _ms(2027, 1, 1)
    assert whole_months(_ms(2026, 11, 30), _ms(2027, 2, 1)) == [_ms(2026, 12, 1), _ms(2027, 1, 1)]


def _built_days(first: int, last: int, gen: int = 5) -> dict[int, Build]:
    return {d: Build(last + D, d + D, gen) for d in range(first, last, D)}


def test_a_month_is_read_from_its_month_rows_only_while_all_its_days_are_of_their_gens() -> None:
    june, july = _ms(2026, 6, 1), _ms(2026, 7, 1)
    start, end = june - 2 * D, july + 3 * D  # May 30 .. July 3
    builds = _built_days(start, end)
    months = {june: MonthBuild(99, (5,) * 30)}
    read = plan(start, end, "total", builds, {}, grain="d", months=months)
    assert read.months == (june,)
    assert read.month_gens == (99,)
    assert read.days == (june - 2 * D, june - D, july, july + D, july + 2 * D)
    assert read.gens == (5, 99)
    assert read.raw == ()
    assert read.parameters()["r_months"] == [june // 1000]
    assert read.parameters()["rb_last"] == end // 1000
    # Not for another cuboid or grain, nor for a month not wholly inside the period.
    assert plan(start, end, "agent", builds, {}, grain="d", months=months).months == ()
    assert plan(start, end, "total", builds, {}, grain="h", months=months).months == ()
    assert plan(june + H, end, "total", builds, {}, grain="d", months=months).months == ()
    # A day rebuilt since the month rows were summed (another gen): read as days.
    rebuilt = builds | {june + 9 * D: Build(end + 2 * D, june + 10 * D, 6)}
    again = plan(start, end, "total", rebuilt, {}, grain="d", months=months)
    assert again.months == ()
    assert june + 9 * D in again.days
    assert len(again.days) == 35
    # A late row in an hour of the month (touched after its day's build): that hour raw, the
    # other hours of its day from hour rows, the rest of the month from day rows.
    late = {june + 9 * D + 4 * H: end + 3 * D}
    touched = plan(start, end, "total", builds, late, grain="d", months=months)
    assert touched.months == ()
    assert len(touched.days) == 34
    assert len(touched.hours) == 23
    assert touched.raw == ((june + 9 * D + 4 * H, june + 9 * D + 5 * H),)
    # A day of the month not built whole (or not at all): no month rows either.
    partial = builds | {june + 3 * D: Build(end + D, june + 3 * D + 5 * H, 5)}
    assert plan(start, end, "total", partial, {}, grain="d", months=months).months == ()
    missing = {d: b for d, b in builds.items() if d != june + 29 * D}
    assert plan(start, end, "total", missing, {}, grain="d", months=months).months == ()


def test_months_to_sum_are_the_whole_built_months_without_rows_of_their_days_gens() -> None:
    june, july = _ms(2026, 6, 1), _ms(2026, 7, 1)
    builds = {("t", d): b for d, b in _built_days(june - D, july + 2 * D).items()}
    builds[("t", june + 4 * D)] = Build(0, june + 5 * D, 8)
    gens = (5,) * 4 + (8,) + (5,) * 25
    # June: every day built whole; May and July are not whole in `builds`.
    assert stale_months(builds, {}) == [MonthWork("t", june, gens)]
    assert stale_months(builds, {("t", june): gens}) == []
    assert stale_months(builds, {("t", june): (5,) * 30}) == [MonthWork("t", june, gens)]
    unfinished = builds | {("t", june + 29 * D): Build(0, june + 29 * D + 23 * H, 5)}
    assert stale_months(unfinished, {}) == []


def test_the_planning_state_reads_builds_touches_and_month_rows() -> None:
    rows = [
        ("b", DAY0, 7, DAY0 + D, 3, [], 13),
        ("t", DAY0 + H, 9, 0, 0, [], 0),
        ("t", DAY0 + H, 4, 0, 0, [], 0),
        ("M", DAY0, 11, 0, 12, [3, 3], 0),
    ]
    builds, touches, months = read_state(rows)
    assert builds == {DAY0: Build(7, DAY0 + D, 3, 13)}
    assert touches == {DAY0 + H: 9}
    assert months == {DAY0: MonthBuild(12, (3, 3))}


def test_rollup_reads_use_the_key_projection_only_when_they_filter_on_the_key() -> None:
    builds = _built_days(DAY0, DAY0 + 2 * D)
    days = plan(DAY0, DAY0 + 2 * D, "agent", builds, {}, grain="d")
    some = Filters(agents=("a", "b"))
    assert read_settings(days, Filters()) == ", optimize_use_projections = 0"
    assert read_settings(days, some) == ", optimize_move_to_prewhere = 0"
    with_raw = plan(DAY0 + 60_000, DAY0 + 2 * D, "agent", builds, {}, grain="d")
    assert with_raw.raw
    assert read_settings(with_raw, some) == ""
    assert read_settings(with_raw, Filters()) == ", optimize_use_projections = 0"
    totals = plan(DAY0, DAY0 + 2 * D, "total", builds, {}, grain="d")
    assert read_settings(totals, Filters()) == ", optimize_use_projections = 0"
    assert read_settings(plan(DAY0, DAY0 + 2 * D, "full", builds, {}, grain="d"), some) == ""


def test_reads_narrowed_on_agents_use_the_agent_table_only_when_every_day_has_its_rows() -> None:
    # Day 0 and 1 have agent rows (gens 21, 22; day 1 built up to 05:00), day 2 has none (built
    # before ClickHouse 0011, or by a builder of the previous version).
    builds = {
        DAY0: Build(DAY0 + 30 * H, DAY0 + D, 7, 21),
        DAY0 + D: Build(DAY0 + 30 * H, DAY0 + D + 5 * H, 8, 22),
        DAY0 + 2 * D: Build(DAY0 + 60 * H, DAY0 + 3 * D, 9, 0),
    }
    some, others = Filters(agents=("a", "b")), Filters()
    keyed = plan(DAY0, DAY0 + D + 7 * H, "agent", builds, {}, grain="d")
    assert (keyed.days, len(keyed.hours)) == ((DAY0,), 5)
    assert keyed.agent_day_gens == (21,)
    assert keyed.agent_hour_gens == (22,) * 5
    assert keyed.agent_gens == (21, 22)
    assert keyed.parameters()["r_days_kg"] == [21]
    assert keyed.parameters()["k_gens"] == [21, 22]
    assert reads_agent_table(keyed, some)
    assert "FROM rollup_agents" in (rollup_facts(keyed, some) or "")
    assert "{r_hours_kg:Array(UInt64)}" in (rollup_facts(keyed, some) or "")
    assert "agent_id IN" not in (rollup_facts(keyed, some) or "")  # `k` is the agent
    # Not narrowed on agents (a breakdown over every agent): `rollups_v2`, under the days' gens.
    assert not reads_agent_table(keyed, others)
    assert "FROM rollups_v2" in (rollup_facts(keyed, others) or "")
    # One day without agent rows: the whole read stays on `rollups_v2`.
    mixed = plan(DAY0, DAY0 + 3 * D, "agent", builds, {}, grain="d")
    assert (mixed.agent_gens, mixed.agent_day_gens) == ((), ())
    assert "FROM rollups_v2" in (rollup_facts(mixed, some) or "")
    assert "k_gens" not in mixed.parameters()
    # Other cuboids never read it.
    totals = plan(DAY0, DAY0 + D, "total", builds, {}, grain="d")
    assert totals.agent_gens == ()
