from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.kit.fields import HttpUrlText, IsoCurrency, Name

AttributionModel = Literal["last_click", "first_click"]


class ProgramCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    landing_url: HttpUrlText
    currency: IsoCurrency = "USD"
    lookback_days: int = Field(default=30, ge=1, le=3650)
    attribution_model: AttributionModel = "last_click"
    coupon_beats_cookie: bool = True
    binding_months: int = Field(default=0, ge=0, le=120)
    hold_days: int = Field(default=30, ge=0, le=3650)


class ProgramUpdate(BaseModel):
    """Only the fields sent are changed."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    landing_url: HttpUrlText | None = None
    lookback_days: int | None = Field(default=None, ge=1, le=3650)
    attribution_model: AttributionModel | None = None
    coupon_beats_cookie: bool | None = None
    binding_months: int | None = Field(default=None, ge=0, le=120)
    hold_days: int | None = Field(default=None, ge=0, le=3650)


class ProgramRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    landing_url: str
    currency: str
    lookback_days: int
    attribution_model: str
    coupon_beats_cookie: bool
    binding_months: int
    hold_days: int
    created_at: datetime
