from __future__ import annotations

from typing import Any

from api.kit.crud import Change, CompanyWide, CrudSpec, crud_router
from api.models import Program
from api.programs.schemas import ProgramCreate, ProgramRead, ProgramUpdate
from api.registry import announce_registry_change
from schemas.click_policy import relay_token_hash


def _prepare(change: Change) -> dict[str, Any]:
    values = dict(change.values)
    if "relay_token" in values:
        token = values.pop("relay_token")
        values["relay_token_hash"] = relay_token_hash(token) if token is not None else None
    return values


# Programs are company configuration: changing one needs programs.write on the root unit.
SPEC = CrudSpec(
    noun="program",
    prefix="/programs",
    tag="programs",
    model=Program,
    id_param="program_id",
    id_prefix="prg",
    create_schema=ProgramCreate,
    update_schema=ProgramUpdate,
    read_schema=ProgramRead,
    read_permission="programs.read",
    write_permission="programs.write",
    placement=CompanyWide(),
    filters={"currency": str},
    sorts=("created_at", "name"),
    prepare=_prepare,
    # The ingress caches landing URLs and click policies with the links: reload them now.
    after_commit=announce_registry_change,
)
router = crud_router(SPEC)
