"""Odoo 17 "Send Webhook Notification" bodies as typed, round-tripping models.

Odoo posts `{"_model": ..., "_id": ..., "_action": "<name>(#<id>)"}` merged with
`record.read(<the rule's fields>, load=None)[0]`, serialised with `json.dumps(sort_keys=True,
default=str)`, unsigned. Which fields appear is the automation rule's choice, so every business
field is optional. Odoo's value conventions, kept as they are:
- an empty value is `false` (not `null`): empty text, unset many2one, missing date;
  `OdooFalse` only accepts a real JSON `false` (never `0` or `""`), `false_to_none` reads it;
- many2one is the bare integer id, x2many a list of ids;
- dates are `"YYYY-MM-DD"`; datetimes `"YYYY-MM-DD HH:MM:SS"`, naive, in UTC.

Wire fidelity (`orjson.loads(raw) == orjson.loads(model.model_dump_json())`):
- Monetary fields arrive as JSON floats (`1322.5`). They are held as `Decimal` parsed from the
  float's shortest repr (`Decimal("1322.5")`, never the binary expansion) and dumped as a JSON
  number again (`DecimalNumber`): the float Odoo sent is exactly the float we give back. That
  output is the only float in refstream's money path, and it only echoes the source.
- Datetimes are parsed to timezone-aware UTC and remember their source text, so dumping gives
  the same string back; a computed datetime is dumped in Odoo's own format.
- Keys keep their wire names: `_model`, `_id`, `_action` are the fields `model`, `record_id`,
  `action` (settable by either name), and dumps use the wire names by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    StrictInt,
)

from schemas.events.wire import WireDatetime, WireModel, wire_text
from schemas.money import DecimalNumber

_T = TypeVar("_T")
_DATE_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}")
# Odoo 17 writes str(datetime); newer orjson-based versions may write a "T" separator.
_DATETIME_TEXT = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?")


def _require_false(value: Any) -> Any:
    if value is not False:  # Literal[False] alone would also take 0
        raise ValueError("expected false")
    return value


OdooFalse = Annotated[Literal[False], BeforeValidator(_require_false)]
"""Odoo's empty value: JSON `false` only."""


def false_to_none(value: _T | Literal[False] | None) -> _T | None:
    """Odoo's `false` (and an absent field's `None`) as `None`; any other value unchanged."""
    return None if value is False or value is None else value


def _parse_odoo_date(value: Any) -> date:
    if isinstance(value, datetime):  # a datetime is a date subclass; never a date field value
        raise ValueError("expected a date, got a datetime")
    if isinstance(value, date):
        return value
    if isinstance(value, str) and _DATE_TEXT.fullmatch(value):
        return date.fromisoformat(value)
    raise ValueError('expected a date as "YYYY-MM-DD"')


def _parse_odoo_datetime(value: Any) -> datetime:
    if isinstance(value, str) and _DATETIME_TEXT.fullmatch(value):
        return WireDatetime.from_wire(value, naive_tz=UTC)
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value
    raise ValueError('expected a naive-UTC "YYYY-MM-DD HH:MM:SS" or an aware datetime')


def _serialize_odoo_datetime(value: datetime) -> str:
    # Odoo 17 writes str() of the naive UTC datetime.
    return wire_text(value) or str(value.astimezone(UTC).replace(tzinfo=None))


OdooDate = Annotated[date, BeforeValidator(_parse_odoo_date)]
"""A date field: `"YYYY-MM-DD"` text or a `date`."""

OdooDatetime = Annotated[
    datetime,
    PlainValidator(_parse_odoo_datetime, json_schema_input_type=str),
    PlainSerializer(_serialize_odoo_datetime, return_type=str, when_used="json"),
]
"""A datetime field: Odoo's naive-UTC text read as aware UTC; dumped as the text it came from."""

OdooId = OdooFalse | StrictInt
"""A many2one: the related record's id, or `false` when unset."""

OdooText = OdooFalse | str
"""A char/text/selection field that may be empty (`false`)."""


class OdooWebhook(WireModel):
    """Any Odoo webhook body: the record's model, id and the server action that sent it.

    `record_id` (`_id`) and `id` are the same record id; `action` is `"<name>(#<action id>)"`.
    Fields the rule selected that are not typed here are kept as extra keys.
    """

    model_config = ConfigDict(
        validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    model: str = Field(alias="_model")
    record_id: int = Field(alias="_id")
    action: str = Field(alias="_action")
    id: int


class OdooSaleOrder(OdooWebhook):
    """A `sale.order` notification. `state`: draft, sent, sale (confirmed), cancel.

    `client_order_ref` is the customer's reference (a Shopify order name when the ERP order was
    created from Shopify); `source_id`/`medium_id`/`campaign_id` are the UTM tags.
    """

    name: str | None = None
    state: str | None = None
    client_order_ref: OdooText | None = None
    origin: OdooText | None = None
    reference: OdooText | None = None
    date_order: OdooDatetime | None = None
    commitment_date: OdooFalse | OdooDatetime | None = None
    partner_id: OdooId | None = None
    partner_invoice_id: OdooId | None = None
    partner_shipping_id: OdooId | None = None
    currency_id: OdooId | None = None
    company_id: OdooId | None = None
    user_id: OdooId | None = None
    team_id: OdooId | None = None
    source_id: OdooId | None = None
    medium_id: OdooId | None = None
    campaign_id: OdooId | None = None
    amount_untaxed: DecimalNumber | None = None
    amount_tax: DecimalNumber | None = None
    amount_total: DecimalNumber | None = None
    amount_to_invoice: DecimalNumber | None = None
    invoice_status: OdooText | None = None
    order_line: tuple[int, ...] = ()


class OdooAccountMove(OdooWebhook):
    """An `account.move` notification: customer invoices and credit notes.

    `move_type`: out_invoice, out_refund (credit note), in_invoice, in_refund, out_receipt,
    in_receipt, entry. `state`: draft, posted, cancel. `payment_state`: not_paid, in_payment,
    paid, partial, reversed, invoicing_legacy. A credit note points at the invoice it reverses
    with `reversed_entry_id`; `invoice_origin` is the sale order name(s).
    Amounts are unsigned in document currency except `amount_total_signed` (company currency,
    negative for credit notes).
    """

    name: OdooText | None = None
    move_type: str | None = None
    state: str | None = None
    payment_state: OdooText | None = None
    invoice_origin: OdooText | None = None
    reversed_entry_id: OdooId | None = None
    ref: OdooText | None = None
    payment_reference: OdooText | None = None
    date: OdooFalse | OdooDate | None = None
    invoice_date: OdooFalse | OdooDate | None = None
    invoice_date_due: OdooFalse | OdooDate | None = None
    partner_id: OdooId | None = None
    commercial_partner_id: OdooId | None = None
    currency_id: OdooId | None = None
    company_id: OdooId | None = None
    journal_id: OdooId | None = None
    invoice_user_id: OdooId | None = None
    team_id: OdooId | None = None
    amount_untaxed: DecimalNumber | None = None
    amount_tax: DecimalNumber | None = None
    amount_total: DecimalNumber | None = None
    amount_residual: DecimalNumber | None = None
    amount_total_signed: DecimalNumber | None = None
    invoice_line_ids: tuple[int, ...] = ()


_MODEL_CLASSES: Mapping[str, type[OdooWebhook]] = MappingProxyType(
    {"sale.order": OdooSaleOrder, "account.move": OdooAccountMove}
)


def parse_odoo_body(raw: bytes) -> OdooWebhook:
    """Parse a raw Odoo webhook body, choosing the model by `_model`.

    `sale.order` → `OdooSaleOrder`, `account.move` → `OdooAccountMove`, anything else →
    `OdooWebhook`. `ValueError` if `raw` is not a JSON object; `pydantic.ValidationError` (a
    `ValueError`) if it does not fit the model.
    """
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("an Odoo webhook body must be a JSON object")
    model_name = data.get("_model")
    model = _MODEL_CLASSES.get(model_name, OdooWebhook) if isinstance(model_name, str) else None
    return (model or OdooWebhook).model_validate(data)
