from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, computed_field

from api.kit.fields import Name


class UnitCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parent_id: str
    name: Name


class UnitRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    parent_id: str | None
    name: str
    path: str
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def depth(self) -> int:
        """0 for the root unit."""
        return self.path.count("/") - 2
