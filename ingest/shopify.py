"""Shopify webhook verification and envelope building: pure functions, no I/O.

Shopify signs the raw body bytes: base64(HMAC-SHA256(app secret, body)), sent in
`X-Shopify-Hmac-Sha256` (`shopify-hmac-sha256` on Events deliveries). Header names are
case-insensitive and may lack the `X-` prefix.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from ingest.hmac_prepared import digest_of, pad_states
from schemas.events.envelope import EventEnvelope, Source, envelope_bytes, envelope_key
from schemas.events.shopify import SHOPIFY_TOPICS
from schemas.ids import body_sha256, derived_id

# Headers worth keeping on the envelope (lower-case, without the `x-` prefix).
KEPT_HEADERS = (
    "shopify-topic",
    "shopify-shop-domain",
    "shopify-api-version",
    "shopify-webhook-id",
    "shopify-event-id",
    "shopify-triggered-at",
    "shopify-name",
    "shopify-sub-topic",
)


class ShopifyHeaders(NamedTuple):
    """The delivery headers, read case-insensitively, `X-` prefix optional. (A named tuple:
    immutable, made in less than half the time of a frozen dataclass, once per webhook.)"""

    hmac: str | None
    topic: str | None
    shop_domain: str | None
    event_id: str | None
    webhook_id: str | None
    triggered_at: str | None
    kept: dict[str, str]

    @classmethod
    def read(cls, headers: Mapping[str, str], *, lower_case_names: bool = False) -> ShopifyHeaders:
        """`lower_case_names`: the caller's word that every name is lower-case already (ASGI's
        are: the hot path's dict, Starlette's `Headers`), so none is lower-cased again."""
        # One pass over the headers, keeping the Shopify ones by their name without `x-`
        # (the `x-` spelling wins when both came); the last of one name wins, as a dict of the
        # lower-cased names would keep it.
        # Plain loops, values stripped as they are kept, the tuple made positionally: 3.4-3.6
        # against 4.1-4.5 µs with comprehensions and keywords (timeit, the bench's headers).
        # Only the names read below are kept, found by a dict lookup of each header's name
        # (not two `startswith` calls): 3.0 -> 1.9 µs (timeit, the bench's headers).
        prefixed: dict[str, str] = {}
        bare: dict[str, str] | None = None
        prefixed_names, bare_names = _PREFIXED_NAMES, _BARE_NAMES
        for key, value in headers.items():
            name = key if lower_case_names else key.lower()
            read_as = prefixed_names.get(name)
            if read_as is not None:
                prefixed[read_as] = value.strip()
            elif name in bare_names:
                if bare is None:
                    bare = {}
                bare[name] = value.strip()
        found = prefixed if bare is None else {**bare, **prefixed}
        get = found.get
        kept: dict[str, str] = {}
        for name in KEPT_HEADERS:
            kept_value = get(name)
            if kept_value is not None:
                kept[name] = kept_value
        return cls(
            get("shopify-hmac-sha256"),
            get("shopify-topic"),
            (get("shopify-shop-domain") or "").lower() or None,
            get("shopify-event-id"),
            get("shopify-webhook-id"),
            get("shopify-triggered-at"),
            kept,
        )

    def delivery_id(self, raw: bytes) -> str:
        """Dedup identity: the event id, else the webhook id, else shop+topic+body hash."""
        if self.event_id:
            return self.event_id
        if self.webhook_id:
            return self.webhook_id
        return derived_id("evt", self.shop_domain or "", self.topic or "", body_sha256(raw))


# The Shopify headers `ShopifyHeaders.read` reads (by their name without `x-`), in both spellings.
_READ_NAMES = (*KEPT_HEADERS, "shopify-hmac-sha256")
_PREFIXED_NAMES = {"x-" + name: name for name in _READ_NAMES}
_BARE_NAMES = frozenset(_READ_NAMES)


def sign(secret: str, raw: bytes) -> str:
    """The signature Shopify sends for `raw` under `secret`."""
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def verify(raw: bytes, signature: str | None, secrets: tuple[str, ...]) -> bool:
    """True if `signature` is a valid HMAC of `raw` under any of `secrets` (rotation).

    Compares decoded digests in constant time; tolerates a trailing newline in the base64 text
    (Ruby's `Base64.encode64` adds one). Every secret is tried, so timing does not reveal which.
    """
    if not signature:
        return False
    try:
        given = base64.b64decode(signature.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    ok = False
    for secret in secrets:
        ok |= hmac.compare_digest(_signature(secret, raw), given)
    return ok


def _signature(secret: str, raw: bytes) -> bytes:
    """`hmac.digest(secret.encode(), raw, "sha256")` from the secret's pad states, prepared once
    per secret (`ingest.hmac_prepared`): ~0.8 µs and ~20,000 instructions less a webhook."""
    return digest_of(_signing_states(secret), raw).digest()


@functools.lru_cache(maxsize=4096)
def _signing_states(secret: str) -> tuple[hashlib._Hash, hashlib._Hash]:
    return pad_states(secret)


class UnreadableBody(ValueError):
    """An authenticated body that cannot be read for its topic."""


class _Facts(BaseModel):
    """What the ingress reads of a body: the ids and times that key and date the event.

    The front door checks that the body is JSON of the right kind and carries these; the full
    typed parse (`schemas.events.shopify`) happens downstream in the dataflow, which sends what
    it cannot read to the dead-letter topic too. Parsing a whole order here cost ~25% of the
    ingress's CPU (bench/ingress).
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        return received_at, None


class _OrderFacts(_Facts):
    id: int
    created_at: AwareDatetime | None = None
    processed_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        # The order's last change is the event's time; keyed by order id.
        return self.updated_at or self.processed_at or self.created_at or received_at, str(self.id)


class _RefundFacts(_Facts):
    id: int
    order_id: int
    created_at: AwareDatetime | None = None
    processed_at: AwareDatetime | None = None

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        # Keyed by the order, so an order's events share a key.
        return self.processed_at or self.created_at or received_at, str(self.order_id)


class _OrderEdit(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    order_id: int
    created_at: AwareDatetime | None = None


class _OrderEditedFacts(_Facts):
    order_edit: _OrderEdit

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        return self.order_edit.created_at or received_at, str(self.order_edit.order_id)


class _CustomerFacts(_Facts):
    id: int
    created_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        return self.updated_at or self.created_at or received_at, str(self.id)


class _ShopFacts(_Facts):
    id: int


class _CatalogFacts(_Facts):
    id: int
    updated_at: AwareDatetime | None = None

    def facts(self, received_at: datetime) -> tuple[datetime, str | None]:
        # Keyed by the collection or product, so its changes stay in order.
        return self.updated_at or received_at, str(self.id)


class _ComplianceFacts(_Facts):
    shop_id: int
    shop_domain: str


_FACTS: dict[str, type[_Facts]] = {
    "orders/create": _OrderFacts,
    "orders/updated": _OrderFacts,
    "orders/paid": _OrderFacts,
    "orders/cancelled": _OrderFacts,
    "orders/fulfilled": _OrderFacts,
    "orders/edited": _OrderEditedFacts,
    "refunds/create": _RefundFacts,
    "customers/create": _CustomerFacts,
    "app/uninstalled": _ShopFacts,
    "collections/create": _CatalogFacts,
    "collections/update": _CatalogFacts,
    "collections/delete": _CatalogFacts,
    "products/create": _CatalogFacts,
    "products/update": _CatalogFacts,
    "customers/data_request": _ComplianceFacts,
    "customers/redact": _ComplianceFacts,
    "shop/redact": _ComplianceFacts,
}
if set(_FACTS) != SHOPIFY_TOPICS:  # pragma: no cover - a topic added to one table only
    raise RuntimeError("ingest.shopify._FACTS and SHOPIFY_TOPICS disagree")


class _Fields(msgspec.Struct):
    """Base of `_wire`'s structs: a body's fields, each as its raw JSON text (empty: absent)."""


@functools.cache
def _wire(
    model: type[_Facts],
) -> tuple[msgspec.json.Decoder[Any], tuple[tuple[str, bytes], ...]]:
    """A msgspec decoder of `model`'s fields as raw JSON text, and the fields' names, each with
    its JSON spelling as a member's start (`"name":`)."""
    names = tuple(model.model_fields)
    fields = [(name, msgspec.Raw, msgspec.field(default=msgspec.Raw())) for name in names]
    struct = msgspec.defstruct(f"{model.__name__}Wire", fields, bases=(_Fields,))
    members = tuple((name, b'"' + name.encode() + b'":') for name in names)
    return msgspec.json.Decoder(struct), members


def _facts_only(model: type[_Facts], raw: bytes) -> bytes | None:
    """The body reduced to the object of `model`'s own fields, their JSON text as sent; None
    if msgspec cannot read the body as a JSON object (then pydantic reads it whole, and says
    why)."""
    decoder, names = _wire(model)
    try:
        wire = decoder.decode(raw)
    except msgspec.DecodeError:
        return None
    parts = [member + bytes(value) for name, member in names if (value := getattr(wire, name))]
    return b"{" + b",".join(parts) + b"}"


def parse(topic: str, raw: bytes) -> _Facts:
    """The identifying facts of a `topic` body; `UnreadableBody` with the reason otherwise."""
    return read(topic, raw)[0]


def read(topic: str, raw: bytes) -> tuple[_Facts, bool]:
    """`parse`, and whether msgspec read `raw` whole as one JSON value: then the envelope
    embeds the body as JSON instead of escaping it into a string (`envelope_bytes`'s
    `body_is_json`).

    msgspec walks the body (checking that it is JSON) and keeps only the model's fields, as
    their raw JSON text; pydantic validates that small object. The values and every refusal
    are pydantic's as before (a body msgspec cannot read goes to pydantic whole, for its
    reason), at a fraction of the cost on a full order: pydantic reading the whole body was
    the ingress's largest own cost per webhook (bench/ingress `--profile`).
    """
    model = _FACTS.get(topic)
    if model is None:
        raise UnreadableBody(f"unsupported topic {topic!r}")
    try:
        facts = _facts_only(model, raw)
        return model.model_validate_json(raw if facts is None else facts), facts is not None
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise UnreadableBody(f"invalid JSON: {first['msg']}") from exc
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise UnreadableBody(
            f"{exc.error_count()} validation error(s); first at {where}: {first['msg']}"
        ) from exc


# Order topics whose body is "the order as of `updated_at`": one order version, whichever of
# these topics (or a reconciliation, `ingest.reconcile`) delivers it.
ORDER_VERSION_TOPICS = frozenset(
    {"orders/create", "orders/updated", "orders/paid", "orders/fulfilled"}
)


def _instant(when: datetime) -> str:
    """One spelling per instant: `-05:00` and `Z` renderings of the same time agree."""
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def event_id(headers: ShopifyHeaders, body: _Facts, raw: bytes) -> str:
    """The envelope's event id: derived from the content for orders and refunds, so a webhook
    and a reconciliation (`ingest.reconcile`, which cannot know `X-Shopify-Webhook-Id`) give one
    order version or refund the same id, and the dataflow's dedup counts it once:

    - an order version (`orders/create|updated|paid|fulfilled`):
      `derived_id("evt", shop, "order", order id, updated_at in UTC)`;
    - a cancellation (`orders/cancelled`): the same with `"orders/cancelled"` for `"order"`
      (a cancellation has its own effect, so it is not folded into the version's updates);
    - a refund (`refunds/create`; refunds never change): `derived_id("evt", shop, "refund", id)`.

    Other topics, and order bodies without `updated_at`, keep the delivery id (`delivery_id`).
    """
    shop = headers.shop_domain or ""
    if isinstance(body, _OrderFacts) and body.updated_at is not None:
        if headers.topic in ORDER_VERSION_TOPICS:
            return derived_id("evt", shop, "order", body.id, _instant(body.updated_at))
        if headers.topic == "orders/cancelled":
            return derived_id("evt", shop, "orders/cancelled", body.id, _instant(body.updated_at))
    if isinstance(body, _RefundFacts) and headers.topic == "refunds/create":
        return derived_id("evt", shop, "refund", body.id)
    return headers.delivery_id(raw)


def build_envelope(
    raw: bytes, headers: ShopifyHeaders, body: _Facts, tenant_id: str, received_at: datetime
) -> EventEnvelope:
    occurred_at, entity_id = body.facts(received_at)
    return EventEnvelope.wrap(
        raw,
        event_id=event_id(headers, body, raw),
        source=Source.SHOPIFY,
        kind=headers.topic or "unknown",
        tenant_id=tenant_id,
        shop=headers.shop_domain,
        entity_id=entity_id,
        occurred_at=occurred_at,
        received_at=received_at,
        headers=headers.kept,
    )


def envelope_parts(
    raw: bytes,
    headers: ShopifyHeaders,
    body: _Facts,
    tenant_id: str,
    received_at: datetime,
    *,
    body_is_json: bool = False,
) -> tuple[bytes, bytes, str]:
    """(Kafka key, value, event id) of `build_envelope`'s envelope, serialised straight from
    the raw bytes and a few header values (`envelope_bytes`), as the hot path writes it; with
    `body_is_json` (`read` said msgspec read the body whole) in wire form 2, the body embedded
    as JSON (`schemas.events.envelope`)."""
    occurred_at, entity_id = body.facts(received_at)
    identity = event_id(headers, body, raw)
    value = envelope_bytes(
        raw,
        event_id=identity,
        source=Source.SHOPIFY,
        kind=headers.topic or "unknown",
        tenant_id=tenant_id,
        shop=headers.shop_domain,
        entity_id=entity_id,
        occurred_at=occurred_at,
        received_at=received_at,
        headers=headers.kept,
        body_is_json=body_is_json,
    )
    return envelope_key(tenant_id, entity_id, identity), value, identity
