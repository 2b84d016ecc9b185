"""`/v1/conversions`: every decided order, attributed or not, with the attribution decision made
for it (rule, winning referral, every rejected candidate and why). Needs `analytics.read` (all
roles) and answers within the caller's analytics reach (see `api.conversions.service`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.analytics.repository import AnalyticsDirectory
from api.authz.dependencies import Authorized
from api.authz.policies import Principal
from api.clickhouse import ClickHouse
from api.context import Meta
from api.conversions import service
from api.conversions.repository import DecisionStore
from api.conversions.schemas import ConversionDecision, ConversionFilters, ConversionPage
from api.db import ReadOnlySession

router = APIRouter(prefix="/conversions", tags=["conversions"])

DecisionsRead = Annotated[Principal, Depends(Authorized("analytics.read"))]


@router.get(
    "",
    operation_id="conversions.list",
    summary="Decided orders with their attribution decision, newest first",
    description=(
        "Every order the dataflow decided, attributed or not, with its rule, winning referral, "
        "explanation and every rejected candidate with its reason. Company-wide readers see "
        "every order; others only the orders credited to the agents in their reach (so never "
        "an unattributed one). `order` matches an order id or name exactly."
    ),
)
async def list_conversions(
    principal: DecisionsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
    filters: Annotated[ConversionFilters, Query()],
    meta: Meta,
) -> ConversionPage:
    reach = await AnalyticsDirectory(session, principal).reachable_agents()
    return await service.list_orders(
        DecisionStore(clickhouse), principal.tenant_id, reach, filters, now=meta.now
    )


@router.get(
    "/{order_id}",
    operation_id="conversions.get",
    summary="Why an order was credited, or not: its attribution decision",
    responses={404: {"description": "No decided order with this id in the caller's reach"}},
)
async def get_conversion(
    order_id: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[^\x00]*$")],
    principal: DecisionsRead,
    session: ReadOnlySession,
    clickhouse: ClickHouse,
) -> ConversionDecision:
    reach = await AnalyticsDirectory(session, principal).reachable_agents()
    return await service.get_order(DecisionStore(clickhouse), principal.tenant_id, reach, order_id)
