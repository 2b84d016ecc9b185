from __future__ import annotations

from pydantic import BaseModel, Field


class LiveTicket(BaseModel):
    ticket: str = Field(description="Pass as `GET /v1/live?ticket=…`; valid once.")
    expires_in: int = Field(description="Seconds until the ticket expires unused.")
