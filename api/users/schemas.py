from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.authz.permissions import Role
from api.kit.fields import Email, Password


class UserCreate(BaseModel):
    """A user with a first membership. Without a password the user cannot log in yet."""

    model_config = ConfigDict(extra="forbid")

    email: Email
    display_name: Annotated[str, Field(max_length=200)] = ""
    password: Password | None = None
    unit_id: str
    role: Role


class MembershipSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Role


class MembershipRead(BaseModel):
    unit_id: str
    role: Role


class UserRead(BaseModel):
    id: str
    email: str
    display_name: str
    disabled: bool
    created_at: datetime
    memberships: list[MembershipRead]
