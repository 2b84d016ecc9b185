from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from api.kit.fields import Name

# Agents act in person: an API key cannot hold the agent role.
ApiKeyRole = Literal["owner", "manager", "operator", "observer"]


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    role: ApiKeyRole
    unit_id: str


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    role: str
    unit_id: str
    key_prefix: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str
    """The key itself: shown in this response only."""
