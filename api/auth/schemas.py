from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.kit.fields import Email, Slug


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    company: Slug
    email: Email
    password: Annotated[str, Field(min_length=1, max_length=256)]


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: Annotated[str, Field(min_length=1, max_length=200)]


class TokenPair(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
