from __future__ import annotations

from typing import Any

from api.kit.crud import Change, CompanyWide, CrudSpec, crud_router
from api.models import Shop
from api.registry import announce_registry_change
from api.shops.schemas import ShopCreate, ShopRead, ShopUpdate


def _prepare(change: Change) -> dict[str, Any]:
    values = {**change.values, "updated_at": change.meta.now}
    if change.row is not None and "secret" in values:
        # Rotation: webhooks signed with the old secret stay valid until the next rotation.
        values["previous_secret"] = change.row.secret
    return values


# Shops are company configuration: changing one needs shops.write on the root unit.
SPEC = CrudSpec(
    noun="shop",
    prefix="/shops",
    tag="shops",
    model=Shop,
    id_field="domain",
    id_param="domain",
    id_prefix=None,
    create_schema=ShopCreate,
    update_schema=ShopUpdate,
    read_schema=ShopRead,
    read_permission="shops.read",
    write_permission="shops.write",
    placement=CompanyWide(),
    filters={"active": bool},
    sorts=("created_at", "domain"),
    prepare=_prepare,
    after_commit=announce_registry_change,
)
router = crud_router(SPEC)
