from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.kit.fields import Email, IsoCurrency, Name, Password, Slug


class CompanyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    slug: Slug
    currency: IsoCurrency = "USD"
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    owner_email: Email
    owner_name: Annotated[str, Field(max_length=200)] = ""
    owner_password: Password


class CompanyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    slug: str
    currency: str
    timezone: str
    created_at: datetime


class CompanyCreated(BaseModel):
    company: CompanyRead
    root_unit_id: str
    owner_user_id: str
