"""Archive rows carry their times as integer ticks (`sinks.clickhouse.ticks_us`): the values
must be the ones clickhouse-connect would write for the datetimes, to the microsecond, for
every UTC offset and for times before the epoch too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from clickhouse_connect.datatypes.registry import get_from_name
from hypothesis import given
from hypothesis import strategies as st

from dataflows.sinks.clickhouse import ticks_us

MS = get_from_name("DateTime64(3, 'UTC')")
US = get_from_name("DateTime64(6, 'UTC')")

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# hypothesis takes naive bounds and adds the time zones itself
times = st.datetimes(
    min_value=datetime(1900, 1, 1),  # noqa: DTZ001
    max_value=datetime(2299, 12, 31),  # noqa: DTZ001
    timezones=offsets,
)


@given(times)
def test_ticks_are_what_clickhouse_connect_writes(when: datetime) -> None:
    us = ticks_us(when)
    assert us == US._datetime64_ticks(when)
    assert us // 1000 == MS._datetime64_ticks(when)


def test_ticks_of_known_times() -> None:
    assert ticks_us(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    at = datetime(2026, 12, 6, 23, 59, 59, 999_999, tzinfo=timezone(timedelta(hours=-5)))
    assert (
        ticks_us(at)
        == int(datetime(2026, 12, 7, 4, 59, 59, tzinfo=UTC).timestamp()) * 10**6 + 999_999
    )
    assert ticks_us(datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)) == -1
