"""Odoo "Send Webhook Notification" bodies: pure parsing and envelope building.

Odoo signs nothing and never retries (1 s timeout, send and forget), so the endpoint URL carries
a per-tenant secret token, and identical re-sends are deduplicated on the body's content.
"""

from __future__ import annotations

from datetime import datetime

import orjson
from pydantic import ValidationError

from schemas.events.envelope import EventEnvelope, Source
from schemas.events.odoo import OdooAccountMove, OdooSaleOrder, OdooWebhook, parse_odoo_body
from schemas.ids import body_sha256, derived_id


class UnreadableOdooBody(ValueError):
    """An authenticated body that is not an Odoo webhook notification."""


def parse(raw: bytes) -> OdooWebhook:
    try:
        return parse_odoo_body(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise UnreadableOdooBody(
            f"{exc.error_count()} error(s); first at {where}: {first['msg']}"
        ) from exc
    except orjson.JSONDecodeError as exc:
        raise UnreadableOdooBody(f"invalid JSON: {exc}") from exc
    except ValueError as exc:
        raise UnreadableOdooBody(str(exc)[:300]) from exc


def entity_of(body: OdooWebhook) -> str:
    """The sale order an ERP record belongs to, so its order and invoices share a Kafka key."""
    if isinstance(body, OdooSaleOrder) and body.name:
        return body.name
    if isinstance(body, OdooAccountMove) and isinstance(body.invoice_origin, str):
        return body.invoice_origin
    return f"{body.model}:{body.record_id}"


def delivery_id(tenant_id: str, body: OdooWebhook, raw: bytes) -> str:
    """Same record in the same state sent twice → same id; any change → a new id."""
    return derived_id("evt", tenant_id, body.model, body.record_id, body_sha256(raw))


def build_envelope(
    raw: bytes, body: OdooWebhook, tenant_id: str, received_at: datetime
) -> EventEnvelope:
    return EventEnvelope.wrap(
        raw,
        event_id=delivery_id(tenant_id, body, raw),
        source=Source.ODOO,
        kind=body.model,
        tenant_id=tenant_id,
        entity_id=entity_of(body),
        # Odoo's payload has no reliable "changed at" unless the rule selects write_date.
        occurred_at=received_at,
        received_at=received_at,
        headers={"odoo-action": body.action},
    )
