"""Analytics responses. Money is a decimal string in the company's reporting currency, rounded
half-even to its minor unit once, after summing the per-row conversions at full precision."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from api.analytics.periods import Bucket


class Dimension(StrEnum):
    agent = "agent"
    unit = "unit"
    program = "program"
    shop = "shop"
    link = "link"
    coupon = "coupon"


class Metric(StrEnum):
    revenue = "revenue"
    commission = "commission"
    conversions = "conversions"
    clicks = "clicks"


class Summary(BaseModel):
    """Totals over [from, to). `conversion_rate` = conversions / clicks and `epc` = commission /
    clicks (null without clicks); `refunds`/`refunded_revenue` count refunds made in the period
    of orders whose conversion is in reach, whenever the order was placed."""

    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    from_: datetime = Field(alias="from")
    to: datetime
    timezone: str
    currency: str
    clicks: int
    unique_visitors: int
    conversions: int
    conversion_rate: str | None
    revenue: str
    refunds: int
    refunded_revenue: str
    commission: str
    epc: str | None


class Point(BaseModel):
    t: datetime  # start of the bucket, with the company's UTC offset at that moment
    clicks: int
    conversions: int
    revenue: str
    commission: str


class Timeseries(BaseModel):
    model_config = ConfigDict(validate_by_name=True, serialize_by_alias=True)

    bucket: Bucket
    timezone: str
    currency: str
    from_: datetime = Field(alias="from")
    to: datetime
    points: list[Point]


class BreakdownItem(BaseModel):
    key: str
    label: str | None
    clicks: int
    conversions: int
    revenue: str
    commission: str
    epc: str | None


class Breakdown(BaseModel):
    by: Dimension
    currency: str
    sort: Metric
    items: list[BreakdownItem]
    next_cursor: str | None


class TopAgents(BaseModel):
    metric: Metric
    currency: str
    items: list[BreakdownItem]
