from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict

from api.kit.fields import Code
from schemas.conversion import normalise_coupon

# Stored upper-case: the dataflow matches orders' coupon codes case-blind, upper-cased.
CouponCodeText = Annotated[Code, AfterValidator(normalise_coupon)]


class CouponCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: CouponCodeText
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
