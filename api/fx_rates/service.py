"""Exchange rates of a company: shop currency → reporting currency (`tenants.currency`).

Rates are append-only (a correction is a new rate from a later instant, or a rate for the
period that lacked one): the dataflow fixes the rate valid at an order's event time on its
conversion and ledger entries, so a booked amount's rate never changes under it. Writing one
needs `fx_rates.write` on the root unit: a rate moves every reporting-currency figure,
including the managers' approval limit, so it is the owners' (like activating rules).
"""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.authz.policies import Principal, can_at
from api.context import RequestMeta
from api.errors import Conflict, Forbidden, Unprocessable
from api.fx_rates.repository import FxRateRepository
from api.fx_rates.schemas import FxRateCreate, FxRateRead
from api.models import FxRate
from api.snapshots import snapshot


async def create_rate(
    session: AsyncSession, principal: Principal, body: FxRateCreate, *, meta: RequestMeta
) -> FxRateRead:
    """Store a rate. `Unprocessable` for the reporting currency itself (always 1), `Conflict`
    when the company already has a rate of that currency from that instant."""
    if not can_at(principal, "fx_rates.write", None):
        raise Forbidden("Exchange rates are company configuration: only owners of the company's "
                        "root unit set them.")  # fmt: skip
    rates = FxRateRepository(session, principal, "fx_rates.read")
    reporting = await rates.reporting_currency()
    if body.currency == reporting:
        raise Unprocessable(f"{reporting} is the company's reporting currency: its rate is 1.")
    if await rates.find(body.currency, body.valid_from) is not None:
        raise Conflict(
            f"A {body.currency} rate valid from {body.valid_from.isoformat()} exists; rates are "
            "never changed, add one from another instant instead."
        )
    rate = FxRate(
        tenant_id=principal.tenant_id,
        currency=body.currency,
        rate=body.rate,
        valid_from=body.valid_from,
        created_by=principal.actor,
        created_at=meta.now,
    )
    session.add(rate)
    try:
        await session.flush()
    except IntegrityError as exc:  # the same rate stored by a concurrent request
        raise Conflict(f"A {body.currency} rate valid from that instant exists.") from exc
    await record(
        session,
        tenant_id=principal.tenant_id,
        actor=principal.actor,
        action="fx_rate.create",
        entity_type="fx_rate",
        entity_id=f"{body.currency}@{body.valid_from.isoformat()}",
        before=None,
        after=snapshot(rate),
        meta=meta,
    )
    return FxRateRead.model_validate(rate)
