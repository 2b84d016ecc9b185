"""What every service call gets from the request: its id, the client address and the clock."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request


@dataclass(frozen=True, slots=True)
class RequestMeta:
    request_id: str | None
    source_ip: str | None
    now: datetime


def get_request_meta(request: Request) -> RequestMeta:
    return RequestMeta(
        request_id=getattr(request.state, "request_id", None),
        source_ip=request.client.host if request.client else None,
        now=datetime.now(UTC),
    )


Meta = Annotated[RequestMeta, Depends(get_request_meta)]
