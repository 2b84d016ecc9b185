"""Sign-up: one transaction creates the tenant, its root unit and the owner, each audited."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.audit import record
from api.auth.passwords import hash_password
from api.authz.permissions import Role
from api.companies import repository
from api.companies.schemas import CompanyCreate, CompanyCreated, CompanyRead
from api.context import RequestMeta
from api.errors import Conflict
from api.models import Membership, Tenant, Unit, User
from api.snapshots import snapshot
from schemas.ids import random_id


async def create_company(
    session: AsyncSession, body: CompanyCreate, meta: RequestMeta
) -> CompanyCreated:
    if await repository.slug_taken(session, body.slug):
        raise Conflict(f"The company slug {body.slug!r} is taken.")
    tenant = Tenant(
        id=random_id("co"),
        name=body.name,
        slug=body.slug,
        currency=body.currency,
        timezone=body.timezone,
        created_at=meta.now,
    )
    root_id = random_id("unit")
    root = Unit(
        id=root_id, tenant_id=tenant.id, parent_id=None, name=body.name, path=f"/{root_id}/"
    )
    owner = User(
        id=random_id("usr"),
        tenant_id=tenant.id,
        email=body.owner_email,
        display_name=body.owner_name,
        password_hash=hash_password(body.owner_password),
        disabled=False,
    )
    session.add(tenant)
    try:
        await session.flush()  # the UNIQUE(slug) race loser lands here
    except IntegrityError as exc:
        raise Conflict(f"The company slug {body.slug!r} is taken.") from exc
    session.add_all([root, owner])
    await session.flush()
    session.add(Membership(user_id=owner.id, unit_id=root.id, role=Role.owner))
    await session.flush()
    actor = f"user:{owner.id}"
    for action, entity_type, entity_id, after in (
        ("company.create", "company", tenant.id, snapshot(tenant)),
        ("unit.create", "unit", root.id, snapshot(root)),
        (
            "user.create",
            "user",
            owner.id,
            {**snapshot(owner), "role": Role.owner, "unit_id": root.id},
        ),
    ):
        await record(
            session,
            tenant_id=tenant.id,
            actor=actor,
            action=action,
            entity_type=entity_type,
            entity_id=entity_id,
            before=None,
            after=after,
            meta=meta,
        )
    return CompanyCreated(
        company=CompanyRead.model_validate(tenant), root_unit_id=root.id, owner_user_id=owner.id
    )
