"""`/v1/analytics/*`: read-only aggregates for dashboards and the mobile app. Every route needs
`analytics.read` (all roles) and answers only about the agents in the caller's reach."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime

from api.analytics import service
from api.analytics.periods import Bucket
from api.analytics.repository import AnalyticsDirectory, AnalyticsStore
from api.analytics.schemas import Breakdown, Dimension, Metric, Summary, Timeseries, TopAgents
from api.analytics.service import Filters
from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.clickhouse import ClickHouse
from api.context import Meta
from api.db import ReadOnlySession

router = APIRouter(prefix="/analytics", tags=["analytics"])

AnalyticsRead = Annotated[Principal, Depends(Authorized("analytics.read"))]
_Text = Annotated[str | None, Query(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


def common_filters(
    from_: Annotated[
        AwareDatetime | None,
        Query(alias="from", description="Start (ISO 8601); default: `to` - 30 days."),
    ] = None,
    to: Annotated[
        AwareDatetime | None, Query(description="End, exclusive (ISO 8601); default now.")
    ] = None,
    agent_id: _Text = None,
    program_id: _Text = None,
    unit_id: _Text = None,
    shop: _Text = None,
    link_code: _Text = None,
    coupon_code: _Text = None,
) -> Filters:
    return Filters(
        start=from_,
        end=to,
        agent_id=agent_id,
        program_id=program_id,
        unit_id=unit_id,
        shop=shop,
        link_code=link_code,
        coupon_code=coupon_code,
    )


CommonFilters = Annotated[Filters, Depends(common_filters)]


def _directory(session: ReadOnlySession, principal: Principal) -> AnalyticsDirectory:
    return AnalyticsDirectory(session, principal)


@router.get(
    "/summary",
    operation_id="analytics.summary",
    summary="Totals over a period (default: the last 30 days)",
)
async def get_summary(
    principal: AnalyticsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: CommonFilters,
    meta: Meta,
) -> Summary:
    return await service.summary(
        _directory(session, principal), AnalyticsStore(clickhouse), filters, now=meta.now
    )


@router.get(
    "/timeseries",
    operation_id="analytics.timeseries",
    summary="Clicks, conversions, revenue, commission per time bucket",
)
async def get_timeseries(
    principal: AnalyticsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: CommonFilters,
    meta: Meta,
    bucket: Bucket = Bucket.day,
) -> Timeseries:
    return await service.timeseries(
        _directory(session, principal), AnalyticsStore(clickhouse), filters, bucket, now=meta.now
    )


@router.get(
    "/breakdown",
    operation_id="analytics.breakdown",
    summary="Totals per agent, unit, program, shop, link or coupon",
)
async def get_breakdown(
    principal: AnalyticsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: CommonFilters,
    meta: Meta,
    by: Dimension = Dimension.agent,
    sort: Metric = Metric.revenue,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Breakdown:
    return await service.breakdown(
        _directory(session, principal), AnalyticsStore(clickhouse), filters, by,
        sort=sort, limit=limit, cursor=cursor, now=meta.now,
    )  # fmt: skip


@router.get(
    "/top-agents",
    operation_id="analytics.top_agents",
    summary="The best agents by revenue, commission or conversions",
)
async def get_top_agents(
    principal: AnalyticsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: CommonFilters,
    meta: Meta,
    metric: Metric = Metric.revenue,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopAgents:
    return await service.top_agents(
        _directory(session, principal), AnalyticsStore(clickhouse), filters, metric,
        limit=limit, now=meta.now,
    )  # fmt: skip


@router.get(
    "/me",
    operation_id="analytics.my_summary",
    summary="The summary of the calling agent's own rows (agents only)",
)
async def get_my_summary(
    principal: AnalyticsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: CommonFilters,
    meta: Meta,
) -> Summary:
    return await service.summary(
        _directory(session, principal), AnalyticsStore(clickhouse), filters,
        now=meta.now, own_only=True,
    )  # fmt: skip
