from __future__ import annotations

from api.kit.crud import ByAgent, CrudSpec, crud_router
from api.links.schemas import LinkCreate, LinkRead, LinkUpdate
from api.models import Link, Program
from api.registry import announce_registry_change

SPEC = CrudSpec(
    noun="link",
    prefix="/links",
    tag="links",
    model=Link,
    id_param="link_id",
    id_prefix="lnk",
    create_schema=LinkCreate,
    update_schema=LinkUpdate,
    read_schema=LinkRead,
    read_permission="links.read",
    write_permission="links.write",
    placement=ByAgent(Link.agent_id),
    references={"program_id": Program},
    filters={"agent_id": str, "program_id": str, "code": str},
    sorts=("created_at", "code"),
    after_commit=announce_registry_change,
)
router = crud_router(SPEC)
