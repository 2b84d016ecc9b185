"""Dead letter → exceptions-inbox row (pure): which tenant it belongs to, what it is about, and
an id that is the same for every delivery of the same letter.

Two kinds of letters reach the dead-letter topic (`schemas.events.envelope.DeadLetter`):
- with an `envelope` (the ingress and the dataflow: unparseable body, late event, missing
  exchange rate, orphan refund, ...): the tenant, event and entity are the envelope's;
- with `raw` only (a sink whose store refused a row): base64 of the row as JSON, whose
  `tenant_id`, `order_id` and `source_event_id` name the tenant, entity and event.
A letter naming no tenant (bytes that are not an envelope, an empty Kafka value) belongs to no
inbox: `exception_row` returns None and the consumer counts it in its log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from schemas.events.envelope import DeadLetter


@dataclass(frozen=True, slots=True)
class ExceptionRow:
    id: str
    tenant_id: str
    reason: str
    stage: str
    source: str | None
    kind: str | None
    event_id: str | None
    entity_id: str | None
    shop: str | None
    occurred_at: datetime | None
    failed_at: datetime
    event: dict[str, Any] | None


def _row_content(raw: str) -> dict[str, Any] | None:
    try:
        content = orjson.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    return content if isinstance(content, dict) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def exception_id(tenant_id: str, stage: str, reason: str, identity: str) -> str:
    """Stable over deliveries: the failure time is left out, so a letter delivered twice (or a
    row refused again by a retried batch) is one exception."""
    text = orjson.dumps([tenant_id, stage, reason, identity])
    return "ex_" + hashlib.blake2b(text, digest_size=16).hexdigest()


def exception_row(dead: DeadLetter) -> ExceptionRow | None:
    """The inbox row of `dead`, or None when the letter names no tenant."""
    envelope = dead.envelope
    if envelope is not None:
        identity = f"{envelope.source}:{envelope.event_id}:{envelope.payload_ref.sha256}"
        return ExceptionRow(
            id=exception_id(envelope.tenant_id, dead.stage, dead.reason, identity),
            tenant_id=envelope.tenant_id,
            reason=dead.reason,
            stage=dead.stage,
            source=str(envelope.source),
            kind=envelope.kind,
            event_id=envelope.event_id,
            entity_id=envelope.entity_id,
            shop=envelope.shop,
            occurred_at=envelope.occurred_at,
            failed_at=dead.failed_at,
            event=envelope.model_dump(mode="json"),
        )
    content = _row_content(dead.raw) if dead.raw is not None else None
    tenant = _text(content.get("tenant_id")) if content is not None else None
    if content is None or tenant is None or dead.raw is None:
        return None
    identity = hashlib.sha256(dead.raw.encode("ascii")).hexdigest()
    return ExceptionRow(
        id=exception_id(tenant, dead.stage, dead.reason, identity),
        tenant_id=tenant,
        reason=dead.reason,
        stage=dead.stage,
        source=None,
        kind=None,
        event_id=_text(content.get("source_event_id")),
        entity_id=_text(content.get("order_id")),
        shop=_text(content.get("shop")),
        occurred_at=None,
        failed_at=dead.failed_at,
        event=content,
    )
