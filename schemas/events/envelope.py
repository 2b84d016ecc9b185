"""The envelope every Kafka message carries.

The ingress wraps each accepted webhook or click in an `EventEnvelope` and writes it to Kafka;
the dataflow, the archive and replay read only envelopes. The raw body travels inside it byte
for byte (HMACs and audits need the original bytes), as UTF-8 text when it is valid UTF-8 and
as base64 otherwise, so a malformed body is kept rather than lost.
"""

from __future__ import annotations

import base64
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from schemas.ids import body_sha256

SCHEMA_VERSION = 1


class Source(StrEnum):
    SHOPIFY = "shopify"
    ODOO = "odoo"
    CLICK = "click"
    PIXEL = "pixel"
    API = "api"
    REPLAY = "replay"


class BodyEncoding(StrEnum):
    UTF8 = "utf-8"
    BASE64 = "base64"


class PayloadRef(BaseModel):
    """Where the raw body can be found again: its content hash (archive key) and size."""

    model_config = ConfigDict(frozen=True)

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size: Annotated[int, Field(ge=0)]
    content_type: str = "application/json"


class EventEnvelope(BaseModel):
    """One event as accepted by the ingress.

    `occurred_at` is event time as the source states it (order processed, click made);
    `received_at` is when the ingress accepted it (processing time). They are never mixed.
    `event_id` is the source's delivery identity (Shopify event id, click id, ...): downstream
    deduplicates on (tenant_id, event_id).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: Annotated[str, Field(min_length=1, max_length=200)]
    source: Source
    kind: Annotated[str, Field(min_length=1, max_length=100)]
    tenant_id: Annotated[str, Field(min_length=1, max_length=100)]
    shop: str | None = None
    entity_id: str | None = Field(
        default=None, description="The ordered entity (order id, click id): part of the key."
    )
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    schema_version: int = SCHEMA_VERSION
    payload_ref: PayloadRef
    headers: dict[str, str] = Field(default_factory=dict)
    body: str
    body_encoding: BodyEncoding = BodyEncoding.UTF8

    @model_validator(mode="after")
    def _body_matches_ref(self) -> EventEnvelope:
        raw = self.raw_body()
        if len(raw) != self.payload_ref.size or body_sha256(raw) != self.payload_ref.sha256:
            raise ValueError("body does not match payload_ref (size or sha256)")
        return self

    @classmethod
    def wrap(
        cls,
        raw: bytes,
        *,
        event_id: str,
        source: Source,
        kind: str,
        tenant_id: str,
        occurred_at: datetime,
        received_at: datetime,
        shop: str | None = None,
        entity_id: str | None = None,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> EventEnvelope:
        """Build an envelope around raw body bytes, choosing the lossless body encoding."""
        try:
            body, encoding = raw.decode("utf-8"), BodyEncoding.UTF8
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(raw).decode("ascii"), BodyEncoding.BASE64
        return cls(
            event_id=event_id,
            source=source,
            kind=kind,
            tenant_id=tenant_id,
            shop=shop,
            entity_id=entity_id,
            occurred_at=occurred_at,
            received_at=received_at,
            payload_ref=PayloadRef(
                sha256=body_sha256(raw), size=len(raw), content_type=content_type
            ),
            headers=headers or {},
            body=body,
            body_encoding=encoding,
        )

    def raw_body(self) -> bytes:
        """The body exactly as received."""
        if self.body_encoding is BodyEncoding.BASE64:
            return base64.b64decode(self.body)
        return self.body.encode("utf-8")

    def json_body(self) -> Any:
        """The body parsed as JSON; raises `orjson.JSONDecodeError` if it is not JSON."""
        return orjson.loads(self.raw_body())

    def key(self) -> bytes:
        """Kafka message key: tenant + ordered entity (falls back to the event id)."""
        return f"{self.tenant_id}:{self.entity_id or self.event_id}".encode()

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> EventEnvelope:
        return cls.model_validate_json(data)


def json_time(when: datetime) -> str | None:
    """`when` as the envelope's JSON spells it (pydantic's: ISO 8601, `Z` for UTC), or None for
    a time the plain spelling does not cover (naive, or an offset that is not whole minutes)."""
    offset = when.utcoffset()
    if offset is None or offset.seconds % 60 or offset.microseconds:
        return None
    text = when.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def envelope_key(tenant_id: str, entity_id: str | None, event_id: str) -> bytes:
    """`EventEnvelope.key()` from its parts."""
    return f"{tenant_id}:{entity_id or event_id}".encode()


def envelope_bytes(
    raw: bytes,
    *,
    event_id: str,
    source: Source,
    kind: str,
    tenant_id: str,
    occurred_at: datetime,
    received_at: datetime,
    shop: str | None = None,
    entity_id: str | None = None,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> bytes:
    """`EventEnvelope.wrap(...).to_bytes()`, byte for byte, without building the model.

    The hot path's serialisation: the model hashes the body twice (once to build `payload_ref`,
    once more to check it) and walks every field to dump it, which cost ~6 % of the ingress's
    time per webhook. Values the plain spelling cannot promise to match (an id or kind outside
    the model's lengths, an odd time offset) go through the model, which validates them as
    before; tests/schemas compare both spellings.
    """
    occurred, received = json_time(occurred_at), json_time(received_at)
    if (
        occurred is None
        or received is None
        or not 0 < len(event_id) <= 200
        or not 0 < len(kind) <= 100
        or not 0 < len(tenant_id) <= 100
    ):
        return EventEnvelope.wrap(
            raw, event_id=event_id, source=source, kind=kind, tenant_id=tenant_id,
            occurred_at=occurred_at, received_at=received_at, shop=shop, entity_id=entity_id,
            headers=headers, content_type=content_type,
        ).to_bytes()  # fmt: skip
    try:
        body, encoding = raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return orjson.dumps(
        {
            "event_id": event_id,
            "source": source.value,
            "kind": kind,
            "tenant_id": tenant_id,
            "shop": shop,
            "entity_id": entity_id,
            "occurred_at": occurred,
            "received_at": received,
            "schema_version": SCHEMA_VERSION,
            "payload_ref": {
                "sha256": body_sha256(raw),
                "size": len(raw),
                "content_type": content_type,
            },
            "headers": headers or {},
            "body": body,
            "body_encoding": encoding,
        }
    )


class DeadLetter(BaseModel):
    """An event that passed authentication but could not be processed, and why."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: Annotated[str, Field(min_length=1)]
    stage: Annotated[str, Field(min_length=1, description="ingress | dataflow | sink ...")]
    failed_at: AwareDatetime
    envelope: EventEnvelope | None = None
    raw: str | None = Field(default=None, description="Base64 raw bytes when no envelope exists.")

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))
