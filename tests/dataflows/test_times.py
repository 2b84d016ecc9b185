"""Event times in milliseconds (`events.to_ms`) are exact: `ticks_us(when) // 1000`. Until
2026-12-07 they were `int(when.timestamp() * 1000)`; the two agree on every time before 2100
(so no state, row or replay made before changes), and only the exact one is right after it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from dataflows.attribution.events import ticks_us, to_ms
from dataflows.sinks.clickhouse import _offset_s

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


def _times(until: int) -> st.SearchStrategy[datetime]:
    return st.datetimes(
        min_value=datetime(1970, 1, 2),  # noqa: DTZ001  (naive bounds; hypothesis adds zones)
        max_value=datetime(until, 12, 31),  # noqa: DTZ001
        timezones=st.one_of(st.just(UTC), offsets),
    )


@given(_times(2099))
def test_milliseconds_are_what_the_float_formula_gave_before_2100(when: datetime) -> None:
    assert to_ms(when) == int(when.timestamp() * 1000)


@given(_times(2199), st.integers(min_value=0, max_value=999))
def test_milliseconds_are_the_exact_floor_of_the_ticks(when: datetime, us: int) -> None:
    when = when.replace(microsecond=when.microsecond - when.microsecond % 1000 + us)
    assert to_ms(when) == ticks_us(when) // 1000
    assert to_ms(when) * 1000 <= ticks_us(when) < (to_ms(when) + 1) * 1000


def test_a_float_would_lose_a_millisecond_after_2100() -> None:
    # Found by sampling: the float formula truncates 2107-03-11 19:38:24.919 to .918.
    when = datetime(2107, 3, 11, 19, 38, 24, 919_000, tzinfo=UTC)
    assert to_ms(when) % 1000 == 919


@given(_times(2199))
def test_offsets_of_utc_times_and_others(when: datetime) -> None:
    offset = when.utcoffset()
    assert offset is not None
    assert _offset_s(when) == int(offset.total_seconds())
