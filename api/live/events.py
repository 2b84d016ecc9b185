"""Pure parts of `/v1/live`: who sees which live item, and the Server-Sent Events wire format.
No I/O, no clock: the stream (`api.live.service`) feeds them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from schemas.live import LiveBatch

RETRY_MS = 3000  # EventSource reconnect delay the server asks for


@dataclass(frozen=True, slots=True)
class LiveScope:
    """What one caller may see: everything of the company (owners, and anyone whose reach
    includes the root unit), or only the listed agents (`agents`: id -> name, every agent the
    caller can read; names label the feed)."""

    company_wide: bool
    agents: Mapping[str, str] = field(default_factory=dict)

    def sees(self, agent_id: str | None) -> bool:
        if self.company_wide:
            return True
        return agent_id is not None and agent_id in self.agents


@dataclass(frozen=True, slots=True)
class SseEvent:
    event: str
    data: Mapping[str, Any]
    id: str | None = None


def visible_events(batch: LiveBatch, scope: LiveScope) -> list[SseEvent]:
    """The batch's conversions and commission entries the scope sees, as SSE events (a
    conversion before its entries), each labelled with its agent's name when known."""
    written_at = batch.written_at.isoformat()
    events: list[SseEvent] = []
    for c in batch.conversions:
        if scope.sees(c.agent_id):
            data = c.model_dump(mode="json") | {
                "agent_name": scope.agents.get(c.agent_id or ""),
                "written_at": written_at,
            }
            events.append(SseEvent("conversion", data, id=c.id))
    for e in batch.entries:
        if scope.sees(e.agent_id):
            data = e.model_dump(mode="json") | {
                "agent_name": scope.agents.get(e.agent_id),
                "written_at": written_at,
            }
            events.append(SseEvent("commission", data, id=e.id))
    return events


def unknown_agents(batch: LiveBatch, scope: LiveScope) -> set[str]:
    """Agent ids in the batch the scope does not know (maybe created after it was loaded)."""
    if scope.company_wide:
        return set()
    ids = {c.agent_id for c in batch.conversions if c.agent_id}
    ids |= {e.agent_id for e in batch.entries}
    return ids - scope.agents.keys()


def frame(event: SseEvent) -> bytes:
    """One event in the text/event-stream format (data is one JSON line: no newlines inside)."""
    head = f"id: {event.id}\n" if event.id is not None else ""
    return (
        f"{head}event: {event.event}\n".encode()
        + b"data: "
        + orjson.dumps(dict(event.data))
        + b"\n\n"
    )


def retry_frame(milliseconds: int = RETRY_MS) -> bytes:
    return f"retry: {milliseconds}\n\n".encode()


def heartbeat_frame() -> bytes:
    """A comment line: keeps proxies and the browser from timing the connection out."""
    return b": ping\n\n"
