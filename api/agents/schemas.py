from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

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


class AgentStatusChangeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus
    effective_at: AwareDatetime | None = Field(
        default=None,
        description="When the status takes effect (default: now; not in the future). Orders "
        "whose event time is at or after it are judged with this status by the dataflow.",
    )


class AgentStatusChangeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    status: str
    effective_at: datetime
    recorded_at: datetime
    recorded_by: str


class AgentRead(BaseModel):
    """`email` is null when the caller may not see agents' personal data (observers);
    `status` is the status in effect now, `status_history` every change, oldest effect first."""

    id: str
    unit_id: str | None
    user_id: str | None
    parent_agent_id: str | None
    name: str
    email: str | None
    status: str
    created_at: datetime
    status_history: list[AgentStatusChangeRead] = []
