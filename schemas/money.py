"""Money: `Decimal` amounts with an explicit currency and an explicit rounding rule.

Contracts:
- An amount is a finite `Decimal`; it never passes through binary floating point. A float that
  arrives from JSON is converted through its shortest repr (`0.1` → `Decimal("0.1")`).
- Rounding to a currency's minor unit is banker's rounding (`ROUND_HALF_EVEN`), done under a
  fixed decimal context so the thread's ambient context cannot change results.
- Two pydantic field types carry amounts across JSON:
  `DecimalStr` for sources that send money as JSON strings (Shopify: `"199.00"`), serialised back
  as the same digits; `DecimalNumber` for sources that send JSON numbers (Odoo floats, a few
  Shopify refund fields), serialised back as a JSON number. The latter is the only place a float
  appears, at the JSON boundary, and only because the source put it there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import ROUND_HALF_EVEN, Context, Decimal, Inexact, InvalidOperation, Overflow
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

DEFAULT_MINOR_UNITS = 2

# ISO 4217 minor units (exponents) of the active codes. Codes whose minor unit is "N.A."
# (precious metals XAU/XAG/XPD/XPT, XDR, XSU, XUA, bond units XBA-XBD, XTS, XXX) are left out
# on purpose: they are not currencies anyone invoices in, and fall back to the default.
# fmt: off
CURRENCY_MINOR_UNITS: Mapping[str, int] = MappingProxyType(
    {
        # 0 decimals
        "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
        "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0,
        "XPF": 0,
        # 3 decimals
        "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
        # 4 decimals (units of account)
        "CLF": 4, "UYW": 4,
        # 2 decimals
        "AED": 2, "AFN": 2, "ALL": 2, "AMD": 2, "ANG": 2, "AOA": 2, "ARS": 2, "AUD": 2,
        "AWG": 2, "AZN": 2, "BAM": 2, "BBD": 2, "BDT": 2, "BGN": 2, "BMD": 2, "BND": 2,
        "BOB": 2, "BOV": 2, "BRL": 2, "BSD": 2, "BTN": 2, "BWP": 2, "BYN": 2, "BZD": 2,
        "CAD": 2, "CDF": 2, "CHE": 2, "CHF": 2, "CHW": 2, "CNY": 2, "COP": 2, "COU": 2,
        "CRC": 2, "CUC": 2, "CUP": 2, "CVE": 2, "CZK": 2, "DKK": 2, "DOP": 2, "DZD": 2,
        "EGP": 2, "ERN": 2, "ETB": 2, "EUR": 2, "FJD": 2, "FKP": 2, "GBP": 2, "GEL": 2,
        "GHS": 2, "GIP": 2, "GMD": 2, "GTQ": 2, "GYD": 2, "HKD": 2, "HNL": 2, "HTG": 2,
        "HUF": 2, "IDR": 2, "ILS": 2, "INR": 2, "IRR": 2, "JMD": 2, "KES": 2, "KGS": 2,
        "KHR": 2, "KPW": 2, "KYD": 2, "KZT": 2, "LAK": 2, "LBP": 2, "LKR": 2, "LRD": 2,
        "LSL": 2, "MAD": 2, "MDL": 2, "MGA": 2, "MKD": 2, "MMK": 2, "MNT": 2, "MOP": 2,
        "MRU": 2, "MUR": 2, "MVR": 2, "MWK": 2, "MXN": 2, "MXV": 2, "MYR": 2, "MZN": 2,
        "NAD": 2, "NGN": 2, "NIO": 2, "NOK": 2, "NPR": 2, "NZD": 2, "PAB": 2, "PEN": 2,
        "PGK": 2, "PHP": 2, "PKR": 2, "PLN": 2, "QAR": 2, "RON": 2, "RSD": 2, "RUB": 2,
        "SAR": 2, "SBD": 2, "SCR": 2, "SDG": 2, "SEK": 2, "SGD": 2, "SHP": 2, "SLE": 2,
        "SLL": 2, "SOS": 2, "SRD": 2, "SSP": 2, "STN": 2, "SVC": 2, "SYP": 2, "SZL": 2,
        "THB": 2, "TJS": 2, "TMT": 2, "TOP": 2, "TRY": 2, "TTD": 2, "TWD": 2, "TZS": 2,
        "UAH": 2, "USD": 2, "USN": 2, "UYU": 2, "UZS": 2, "VED": 2, "VES": 2, "WST": 2,
        "XCD": 2, "XCG": 2, "YER": 2, "ZAR": 2, "ZMW": 2, "ZWG": 2, "ZWL": 2,
    }
)
# fmt: on

CURRENCY_CODE_PATTERN = r"^[A-Z]{3}$"
_CURRENCY_CODE = re.compile(CURRENCY_CODE_PATTERN)
# Plain decimal notation only: Decimal() itself would also take "NaN", "1_000" and padding.
_AMOUNT_TEXT = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# 38 significant digits: any amount a ledger stores, without depending on the thread's context.
_CONTEXT = Context(prec=38, rounding=ROUND_HALF_EVEN)
# Sums must be exact: trap instead of silently rounding beyond 38 digits.
_EXACT = Context(prec=38, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation, Overflow, Inexact])

CurrencyCode = Annotated[str, Field(pattern=CURRENCY_CODE_PATTERN)]


def minor_units(currency: str) -> int:
    """Decimal places of `currency`'s minor unit (ISO 4217).

    `currency` must be three upper-case ASCII letters, else `ValueError`. A well-formed code that
    is not in `CURRENCY_MINOR_UNITS` gets `DEFAULT_MINOR_UNITS` (2).
    """
    places = _KNOWN_PLACES.get(currency)
    if places is not None:  # a code seen before: no pattern match (hot in commission maths)
        return places
    if not _CURRENCY_CODE.fullmatch(currency):
        raise ValueError(f"not an ISO 4217 currency code: {currency!r}")
    places = CURRENCY_MINOR_UNITS.get(currency, DEFAULT_MINOR_UNITS)
    if len(_KNOWN_PLACES) < 1024:  # well-formed codes are 26^3 at most; keep it small anyway
        _KNOWN_PLACES[currency] = places
    return places


_KNOWN_PLACES: dict[str, int] = {}
# The quantum (`Decimal("0.01")`) of each currency seen by `quantize`, kept like `_KNOWN_PLACES`.
_QUANTA: dict[str, Decimal] = {}


def quantize(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half-even to `currency`'s minor unit.

    The result's exponent is exactly `-minor_units(currency)` (JPY → `Decimal("1235")`,
    USD → `Decimal("0.12")`); quantizing twice changes nothing. `ValueError` for a non-finite
    amount or an invalid currency code.
    """
    if not amount.is_finite():
        raise ValueError(f"cannot quantize a non-finite amount: {amount}")
    quantum = _QUANTA.get(currency)
    if quantum is None:  # a code not seen before: validated and looked up once (hot path)
        quantum = Decimal(1).scaleb(-minor_units(currency))
        if len(_QUANTA) < 1024:
            _QUANTA[currency] = quantum
    try:
        # Positional: keywords cost decimal ~2,000 more instructions a call (callgrind).
        return amount.quantize(quantum, ROUND_HALF_EVEN, _CONTEXT)
    except InvalidOperation as exc:
        raise ValueError(f"amount too large to quantize: {amount}") from exc


def parse_amount(value: str | int | float | Decimal) -> Decimal:
    """A finite `Decimal` from a JSON-ish amount, without binary-float imprecision.

    - `str`: plain decimal notation (`"199.00"`, `"-3.5"`, `"1e2"`), digits kept as written.
    - `int`: exact. `float`: via its shortest repr, so `0.1` → `Decimal("0.1")`.
    - `Decimal`: returned unchanged.
    `ValueError` for NaN, infinities or malformed text; `TypeError` for `bool` and other types.
    """
    if isinstance(value, bool):  # bool is an int subclass; True is never an amount
        raise TypeError("a bool is not an amount")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))
    elif isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            raise ValueError(f"not a decimal amount: {value!r}")
        result = Decimal(value)
    else:
        raise TypeError(f"cannot read an amount from {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"amount must be finite, got {result}")
    return result


def _validate_amount(value: Any) -> Decimal:
    try:
        return parse_amount(value)
    except TypeError as exc:  # pydantic reports ValueError only; TypeError would escape
        raise ValueError(str(exc)) from exc


def decimal_to_text(amount: Decimal) -> str:
    """Plain (never scientific) notation keeping every digit: `Decimal("199.00")` → `"199.00"`."""
    return format(amount, "f")


def _decimal_to_json_number(amount: Decimal) -> int | float:
    # Exponent 0 means it was read from an integer (a float's repr always has "." or "e+NN"),
    # so give back an integer; everything else goes back as the float it was read from.
    if amount.as_tuple().exponent == 0:
        return int(amount)
    return float(amount)


DecimalStr = Annotated[
    Decimal,
    BeforeValidator(_validate_amount),
    PlainSerializer(decimal_to_text, return_type=str, when_used="json"),
]
"""A money amount sent as a JSON string; JSON output is the same string (`"199.00"`)."""

DecimalNumber = Annotated[
    Decimal,
    BeforeValidator(_validate_amount),
    PlainSerializer(_decimal_to_json_number, return_type=int | float, when_used="json"),
]
"""An amount sent as a JSON number, held as `Decimal` read from the float's shortest repr.

JSON output is a number again: an integer if it was read from one (exponent 0), else the float
with that repr, so a payload round-trips to the same JSON value. A `Decimal` with more digits
than a float holds would lose them on output, which is why internal money never uses this type.
"""


class Money(BaseModel):
    """An amount in one currency. Immutable; addition only within the same currency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: DecimalStr
    currency: CurrencyCode

    def quantized(self) -> Money:
        """The same money rounded half-even to the currency's minor unit."""
        return Money(amount=quantize(self.amount, self.currency), currency=self.currency)

    def __add__(self, other: Money) -> Money:
        """Exact sum of two amounts of one currency; `ValueError` if the currencies differ."""
        if not isinstance(other, Money):
            return NotImplemented
        if other.currency != self.currency:
            raise ValueError(f"cannot add {other.currency} to {self.currency}")
        try:
            total = _EXACT.add(self.amount, other.amount)
        except (Inexact, Overflow) as exc:
            raise ValueError("sum exceeds 38 significant digits") from exc
        return Money(amount=total, currency=self.currency)
