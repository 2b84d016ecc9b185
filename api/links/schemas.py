from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from api.kit.fields import Code


class LinkCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    program_id: str
    agent_id: str
    code: Code


class LinkUpdate(BaseModel):
    """The agent of a link never changes (create a new link instead)."""

    model_config = ConfigDict(extra="forbid")

    code: Code | None = None
    program_id: str | None = None


class LinkRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    program_id: str
    agent_id: str
    code: str
    created_at: datetime
