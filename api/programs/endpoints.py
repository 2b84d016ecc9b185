from __future__ import annotations

from api.kit.crud import CompanyWide, CrudSpec, crud_router
from api.models import Program
from api.programs.schemas import ProgramCreate, ProgramRead, ProgramUpdate

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
)
router = crud_router(SPEC)
