from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from api.kit.fields import Code


class CouponCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    program_id: str
    agent_id: str


class CouponUpdate(BaseModel):
    """The agent of a code never changes (delete it and create it for the new agent)."""

    model_config = ConfigDict(extra="forbid")

    program_id: str | None = None


class CouponRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    code: str
    program_id: str
    agent_id: str
    created_at: datetime
