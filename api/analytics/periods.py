"""Reporting periods and time buckets in a company's time zone. Pure: no I/O, no clock.

A period is the half-open interval [start, end) in UTC. Buckets start at local boundaries of the
company's zone (a day starts at local midnight, so it lasts 23 or 25 hours across a DST change),
exactly as ClickHouse's `toStartOfInterval(t, INTERVAL 1 <unit>, tz)` computes them, so the
series built here and the rows ClickHouse groups share the same keys (UTC epoch seconds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_PERIOD = timedelta(days=30)
# ClickHouse's DateTime64 and every zone offset stay valid well inside these bounds.
EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
MAX_BUCKETS = 1500  # minute: 25 h, hour: 62 days, day: 4 years


class Bucket(StrEnum):
    minute = "minute"
    hour = "hour"
    day = "day"

    @property
    def step(self) -> timedelta:
        return _STEP[self]


_STEP = {
    Bucket.minute: timedelta(minutes=1),
    Bucket.hour: timedelta(hours=1),
    Bucket.day: timedelta(days=1),
}


class PeriodError(ValueError):
    """A period or bucket request that cannot be answered; `str(exc)` says why."""


def resolve_period(
    start: datetime | None, end: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """[start, end) in UTC: `end` defaults to `now`, `start` to `end` minus 30 days.
    `PeriodError` unless start < end, both between 1970-01-02 and 2200. Inputs are aware."""
    end_utc = (end or now).astimezone(UTC)
    start_utc = start.astimezone(UTC) if start is not None else end_utc - DEFAULT_PERIOD
    if start_utc >= end_utc:
        raise PeriodError("`from` must be before `to`.")
    if start_utc < EARLIEST or end_utc > LATEST:
        raise PeriodError("The period must lie between 1970-01-02 and 2200-01-01.")
    return start_utc, end_utc


def company_zone(name: str) -> ZoneInfo:
    """The company's zone; UTC when the stored name is not an IANA zone."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def bucket_start(at: datetime, bucket: Bucket, zone: ZoneInfo) -> datetime:
    """The start of the bucket holding `at`, as a datetime in `zone`."""
    local = at.astimezone(zone)
    if bucket is Bucket.minute:
        return local.replace(second=0, microsecond=0)
    if bucket is Bucket.hour:
        return local.replace(minute=0, second=0, microsecond=0)
    return _local_midnight(local.year, local.month, local.day, zone)


def _local_midnight(year: int, month: int, day: int, zone: ZoneInfo) -> datetime:
    # Through UTC and back, so the offset is the one in force at that midnight.
    naive = datetime(year, month, day)  # noqa: DTZ001 (made aware on the next line)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone)


def bucket_starts(start: datetime, end: datetime, bucket: Bucket, zone: ZoneInfo) -> list[datetime]:
    """Every bucket start from the one holding `start` up to (excluding) `end`, in `zone`.
    `PeriodError` when there would be more than `MAX_BUCKETS`."""
    if (end - start) / bucket.step > MAX_BUCKETS:
        raise PeriodError(
            f"The period spans more than {MAX_BUCKETS} {bucket.value} buckets; "
            "shorten it or use a larger bucket."
        )
    starts: list[datetime] = []
    current = bucket_start(start, bucket, zone)
    while current < end:
        starts.append(current)
        if bucket is Bucket.day:
            nxt = (current + timedelta(days=1, hours=12)).date()  # noon: clear of DST shifts
            current = _local_midnight(nxt.year, nxt.month, nxt.day, zone)
        else:
            current = (current.astimezone(UTC) + bucket.step).astimezone(zone)
    if len(starts) > MAX_BUCKETS:
        raise PeriodError(f"The period spans more than {MAX_BUCKETS} {bucket.value} buckets.")
    return starts


def epoch_seconds(at: datetime) -> int:
    return int(at.timestamp())
