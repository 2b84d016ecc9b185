from __future__ import annotations

from api.coupons.schemas import CouponCreate, CouponRead, CouponUpdate
from api.kit.crud import ByAgent, CrudSpec, crud_router
from api.models import CouponCode, Program
from schemas.conversion import normalise_coupon

SPEC = CrudSpec(
    noun="coupon",
    prefix="/coupons",
    tag="coupons",
    model=CouponCode,
    id_field="code",
    id_param="code",
    id_prefix=None,
    create_schema=CouponCreate,
    update_schema=CouponUpdate,
    read_schema=CouponRead,
    read_permission="coupons.read",
    write_permission="coupons.write",
    placement=ByAgent(CouponCode.agent_id),
    references={"program_id": Program},
    filters={"agent_id": str, "program_id": str},
    sorts=("created_at", "code"),
    normalise_id=normalise_coupon,
)
router = crud_router(SPEC)
