from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

RuleStatus = Literal["proposed", "active", "rejected"]


class RuleVersionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: dict[str, Any] = Field(
        description="A CommissionRuleSet without `rule_id`, `version` and `program_id` (the "
        "server sets them); `currency` must be the program's.",
        examples=[{"currency": "USD", "base": {"kind": "percent", "value": "10"}}],
    )


class RuleVersionRead(BaseModel):
    rule_id: str
    version: int
    program_id: str
    body: dict[str, Any] = Field(description="The full CommissionRuleSet of this version.")
    created_by: str | None
    created_at: datetime
    status: RuleStatus = Field(
        description="`proposed` (awaiting an owner), `active` (live for the dataflow when it is "
        "the newest active version) or `rejected`."
    )
    reviewed_by: str | None
    reviewed_at: datetime | None
    warnings: list[str] = Field(
        default=[],
        description="What the dataflow cannot apply as written, e.g. a collection rate whose "
        "collection has no known membership in any shop (its lines never match until "
        "`PUT /v1/shops/{domain}/collections/{id}/products` or a webhook makes it known).",
    )
