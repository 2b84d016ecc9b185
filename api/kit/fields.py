"""Field types shared by request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from schemas.money import CURRENCY_MINOR_UNITS, CurrencyCode
from schemas.urls import check_http_url

Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    AfterValidator(str.lower),
]
Password = Annotated[str, Field(min_length=12, max_length=256)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=r"^[^\x00]*$"),
]
HttpUrlText = Annotated[
    str,
    StringConstraints(pattern=r"^https?://[^\s\x00]+$", max_length=2000),
    AfterValidator(check_http_url),
]
# Codes that appear in URLs and on receipts: letters, digits, '-' and '_'.
Code = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{1,63}$")]
# Free text stored in PostgreSQL, which refuses NUL characters.
Text = Annotated[str, StringConstraints(min_length=1, max_length=10_000, pattern=r"^[^\x00]*$")]


def _active_iso_code(code: str) -> str:
    if code not in CURRENCY_MINOR_UNITS:
        raise ValueError(f"{code} is not an active ISO 4217 currency code")
    return code


# Three upper-case letters that ISO 4217 lists as an active currency (ZZZ is refused).
IsoCurrency = Annotated[CurrencyCode, AfterValidator(_active_iso_code)]
