"""The envelope every Kafka message carries.

The ingress wraps each accepted webhook or click in an `EventEnvelope` and writes it to Kafka;
the dataflow, the archive and replay read only envelopes. The raw body travels inside it byte
for byte (HMACs and audits need the original bytes), so a malformed body is kept rather than
lost. Its wire forms, named by `body_encoding` (`schema_version` stays 1: the fields and their
meaning are the same in both):

- **form 1** (since the first envelope; `EventEnvelope.to_bytes()`, the archive, replay, dead
  letters): `body` is a JSON string, the body's UTF-8 text (`"utf-8"`) or, when the bytes are
  not UTF-8, their base64 (`"base64"`).
- **form 2** (`"json"`, written by the ingress's hot path since 2026-12-07: `envelope_bytes(...,
  body_is_json=True)`, `to_bytes(json_body=True)`): `body` is the body itself, a JSON value
  embedded byte for byte (`orjson.Fragment`: no escaping, no copy into a str; whitespace, key
  order and number spellings kept). Only a body that was read as exactly one JSON value, is
  UTF-8 and neither starts nor ends with whitespace is written so (a JSON reader hands back a
  value without the whitespace around it); any other body is written in form 1.

Readers read both forms, forever (Kafka and archives hold form 1): `EventEnvelope.from_bytes`
(the contract) and `dataflows.attribution.wire.decode_envelope` (the dataflow's hot path). A
form-2 envelope reads into the same value as its form-1 twin: `body` the body's text,
`body_encoding` `utf-8`, so `raw_body()`, archive rows (`raw_events`, which store form 1), dead
letters and `to_bytes()` are the same whichever form travelled (tests/schemas/
test_envelope_forms.py). Readers must be deployed before a writer of form 2: a reader older
than form 2 refuses it (as a dead letter that keeps the bytes).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import msgspec
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
    """How the body is held in memory and in form 1 (the module docstring)."""

    UTF8 = "utf-8"
    BASE64 = "base64"


JSON_BODY = "json"
"""`body_encoding` of wire form 2: the body embedded as JSON (only on the wire: it reads as
`BodyEncoding.UTF8`)."""

_JSON_WHITESPACE = frozenset(b" \t\r\n")
_ANY_JSON = msgspec.json.Decoder(msgspec.Raw)
_FIELDS = msgspec.json.Decoder(dict[str, msgspec.Raw])
_JSON_ENCODING = b'"json"'


def embeddable(raw: bytes) -> bool:
    """Whether a body already read as exactly one JSON value can travel in form 2: it is
    UTF-8 and neither empty nor starting or ending with whitespace (what a JSON reader hands
    back is the value without the whitespace around it, so those bytes would be lost)."""
    if not raw or raw[0] in _JSON_WHITESPACE or raw[-1] in _JSON_WHITESPACE:
        return False
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def is_json(raw: bytes) -> bool:
    """Whether `raw` is exactly one JSON value (msgspec's reading, the one the envelope readers
    apply to an embedded body)."""
    try:
        _ANY_JSON.decode(raw)
    except msgspec.DecodeError:
        return False
    return True


def form1(data: bytes) -> bytes:
    """A Kafka value with a form-2 body rewritten in form 1 (the body's text, `utf-8`), for the
    model to validate; any other value unchanged (the model judges it). Only the body and its
    encoding change: every other field keeps its JSON text."""
    if _JSON_ENCODING not in data:  # cheap: a form-2 value names its encoding
        return data
    try:
        fields = _FIELDS.decode(data)
        encoding = fields.get("body_encoding")
        body = fields.get("body")
        if encoding is None or body is None or msgspec.json.decode(encoding) != JSON_BODY:
            return data
        text = bytes(body).decode("utf-8")
    except (msgspec.DecodeError, UnicodeDecodeError):
        return data  # not an envelope of form 2: the model says why it is no envelope
    document: dict[str, Any] = {
        name: orjson.Fragment(bytes(value)) for name, value in fields.items()
    }
    document["body"] = text
    document["body_encoding"] = BodyEncoding.UTF8.value
    return orjson.dumps(document)


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

    def to_bytes(self, *, json_body: bool = False) -> bytes:
        """Form 1; with `json_body`, form 2 when the body is one JSON value that `embeddable`
        allows (checked here, by msgspec), else form 1 (the module docstring)."""
        document = self.model_dump(mode="json")
        if json_body and self.body_encoding is BodyEncoding.UTF8:
            raw = self.body.encode("utf-8")
            if embeddable(raw) and is_json(raw):
                document["body"] = orjson.Fragment(raw)
                document["body_encoding"] = JSON_BODY
        return orjson.dumps(document)

    @classmethod
    def from_bytes(cls, data: bytes) -> EventEnvelope:
        """The envelope in a Kafka value of either wire form (`ValidationError` if it is none)."""
        return cls.model_validate_json(form1(data))


# The last whole second `json_time` spelled in UTC, and its text: the hot path dates every
# event (two or three times each) in the few seconds around now.
_utc_second: tuple[tuple[int, int, int, int, int, int], str] = ((0, 0, 0, 0, 0, 0), "")
# The last UTC time spelled, and its text: a click's time is spelled twice in a row (its event's
# `occurred_at` and its envelope's), the same datetime object both times.
_last_utc: tuple[datetime | None, str] = (None, "")


def json_time(when: datetime) -> str | None:
    """`when` as the envelope's JSON spells it (pydantic's: ISO 8601, `Z` for UTC), or None for
    a time the plain spelling does not cover (naive, or an offset that is not whole minutes)."""
    global _utc_second, _last_utc
    last = _last_utc
    if when is last[0]:  # (datetimes are immutable, and the one kept here stays alive)
        return last[1]
    if when.tzinfo is UTC:  # the hot path's times: the second's text is kept, not re-spelled
        second = (when.year, when.month, when.day, when.hour, when.minute, when.second)
        known = _utc_second
        if known[0] != second:
            known = _utc_second = (second, when.replace(microsecond=0, tzinfo=None).isoformat())
        micro = when.microsecond
        text = f"{known[1]}.{micro:06d}Z" if micro else known[1] + "Z"
        _last_utc = (when, text)
        return text
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
    body_is_json: bool = False,
) -> bytes:
    """`EventEnvelope.wrap(...).to_bytes(json_body=body_is_json)`, byte for byte, without
    building the model.

    `body_is_json` is the caller's word that `raw` is exactly one JSON value as msgspec reads
    it (the webhook's facts were read from it whole, or orjson wrote it): the body is then
    embedded as JSON (form 2, the module docstring) when `embeddable` allows, without escaping
    it into a string, which cost about half of this function's time on a 12 KB order
    (bench/ingress `--profile`). A caller that is not sure passes `is_json(raw)`.

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
        ).to_bytes(json_body=body_is_json)  # fmt: skip
    body: str | orjson.Fragment
    if body_is_json and embeddable(raw):
        body, encoding = orjson.Fragment(raw), JSON_BODY
    else:
        try:
            body, encoding = raw.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            body, encoding = base64.b64encode(raw).decode("ascii"), "base64"
    return orjson.dumps(
        {
            "event_id": event_id,
            "source": source._value_,  # (`.value` is enum's Python-level property)
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
