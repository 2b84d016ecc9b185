from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from api.kit.fields import Email, Name

AgentStatus = Literal["active", "paused", "terminated"]


class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    unit_id: str
    email: Email | None = None
    user_id: str | None = None
    parent_agent_id: str | None = None


class AgentUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    email: Email | None = None
    status: AgentStatus | None = None
    unit_id: str | None = None


class AgentRead(BaseModel):
    """`email` is null when the caller may not see agents' personal data (observers)."""

    id: str
    unit_id: str | None
    user_id: str | None
    parent_agent_id: str | None
    name: str
    email: str | None
    status: str
    created_at: datetime
