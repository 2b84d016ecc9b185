from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from api.kit.fields import Text


class NoteCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: str
    body: Text


class NoteUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: Text | None = None


class NoteRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    agent_id: str
    body: str
    author: str
    created_at: datetime
    updated_at: datetime
