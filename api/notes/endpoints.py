from __future__ import annotations

from typing import Any

from api.kit.crud import ByAgent, Change, CrudSpec, crud_router
from api.models import AgentNote
from api.notes.schemas import NoteCreate, NoteRead, NoteUpdate


def _prepare(change: Change) -> dict[str, Any]:
    values = {**change.values, "updated_at": change.meta.now}
    if change.row is None:
        values["author"] = change.principal.actor
    return values


SPEC = CrudSpec(
    noun="note",
    prefix="/notes",
    tag="notes",
    model=AgentNote,
    id_param="note_id",
    id_prefix="note",
    create_schema=NoteCreate,
    update_schema=NoteUpdate,
    read_schema=NoteRead,
    read_permission="notes.read",
    write_permission="notes.write",
    placement=ByAgent(AgentNote.agent_id),
    filters={"agent_id": str},
    sorts=("created_at",),
    prepare=_prepare,
)
router = crud_router(SPEC)
