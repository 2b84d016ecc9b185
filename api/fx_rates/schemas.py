from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from api.kit.fields import IsoCurrency


def _decimal_text(value: Any) -> Any:
    # A JSON number would pass through binary floating point first; a rate is sent as text.
    if not isinstance(value, str):
        raise ValueError('the rate must be a decimal string, e.g. "1.0842"')
    return value


# numeric(18, 8): up to 10 integer digits and 8 decimals.
Rate = Annotated[
    Decimal,
    BeforeValidator(_decimal_text),
    Field(gt=0, max_digits=18, decimal_places=8, allow_inf_nan=False),
]


class FxRateCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: IsoCurrency = Field(description="The shop currency (ISO 4217, upper-case).")
    rate: Rate = Field(
        description="Units of the company's reporting currency per 1 unit of `currency`, as a "
        "decimal string (> 0, at most 8 decimals).",
        examples=["1.0842"],
    )
    valid_from: AwareDatetime = Field(
        description="The rate applies to orders from this instant until the next rate of the "
        "same currency."
    )


class FxRateRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    currency: str
    rate: Decimal
    valid_from: datetime
    created_by: str
    created_at: datetime


class FxRateFilters(BaseModel):
    currency: str | None = None
    cursor: str | None = None
    limit: int = Field(default=50, ge=1, le=200)
