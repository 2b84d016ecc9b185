from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from api.agents.schemas import AgentRead
from api.authz.permissions import Role
from api.companies.schemas import CompanyRead


class MeUser(BaseModel):
    id: str
    email: str
    display_name: str


class MeGrant(BaseModel):
    """A role held on a unit; it applies to the unit's whole subtree."""

    unit_id: str
    unit_name: str
    unit_path: str
    role: Role
    permissions: list[str] = Field(description="The permissions this role holds on the subtree")


class Me(BaseModel):
    """Who the caller is and what it may do where: enough for a client to render its menus."""

    kind: Literal["user", "api_key"] = Field(description="A logged-in user or an API key")
    principal_id: str
    user: MeUser | None = Field(description="Null for an API key")
    company: CompanyRead
    grants: list[MeGrant]
    permissions: dict[str, list[str]] = Field(
        description="Permission name -> ids of the units where it holds (subtrees included); "
        "a permission held nowhere is absent"
    )
    agents: list[AgentRead] = Field(description="The agent rows linked to this user, if any")
