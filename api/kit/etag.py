"""Entity tags of mutable resources: a digest of the representation the client was given.

`If-Match` on a write must name the current tag (or `*`), otherwise the write answers 412, so two
editors cannot silently overwrite each other. Without `If-Match` the write proceeds.
"""

from __future__ import annotations

import hashlib
from typing import Annotated

from fastapi import Header
from pydantic import BaseModel

from api.errors import RefstreamError

IfMatch = Annotated[str | None, Header(description="ETag of the version being changed.")]


class PreconditionFailed(RefstreamError):
    status_code = 412
    type = "precondition-failed"
    title = "Precondition failed"


def etag_of(representation: BaseModel) -> str:
    """A strong ETag (quoted) of the JSON representation."""
    digest = hashlib.sha256(representation.model_dump_json().encode()).hexdigest()[:32]
    return f'"{digest}"'


def check_if_match(if_match: str | None, current: str) -> None:
    """Raise `PreconditionFailed` unless `if_match` is absent, `*`, or lists `current`."""
    if if_match is None:
        return
    tags = {tag.strip().removeprefix("W/") for tag in if_match.split(",")}
    if "*" in tags or current in tags:
        return
    raise PreconditionFailed(
        "The resource changed since you read it; fetch it again and retry with its ETag."
    )
