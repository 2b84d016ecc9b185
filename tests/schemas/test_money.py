from __future__ import annotations

import math
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from schemas.money import (
    CURRENCY_MINOR_UNITS,
    DecimalNumber,
    DecimalStr,
    Money,
    minor_units,
    parse_amount,
    quantize,
)

currencies = st.sampled_from(sorted(CURRENCY_MINOR_UNITS))
# Realistic money: up to 15 integer digits and 6 decimals, well inside the 38-digit context.
amounts = st.decimals(
    min_value=Decimal("-1e15"), max_value=Decimal("1e15"), places=6, allow_nan=False
)


class _StrAmount(BaseModel):
    value: DecimalStr


class _NumberAmount(BaseModel):
    value: DecimalNumber


# --- minor units ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "expected"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("BHD", 3),
        ("KWD", 3),
        ("OMR", 3),
        ("JOD", 3),
        ("TND", 3),
        ("IQD", 3),
        ("LYD", 3),
        ("CLF", 4),
    ],
)
def test_minor_units_follow_iso_4217(currency: str, expected: int) -> None:
    assert minor_units(currency) == expected


def test_unknown_well_formed_code_defaults_to_two_decimals() -> None:
    assert "QQQ" not in CURRENCY_MINOR_UNITS
    assert minor_units("QQQ") == 2


@pytest.mark.parametrize("code", ["usd", "US", "USDT", "", "U5D", " USD"])
def test_malformed_currency_code_is_rejected(code: str) -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        minor_units(code)


def test_currency_table_holds_only_valid_codes_and_exponents() -> None:
    assert len(CURRENCY_MINOR_UNITS) > 150
    for code, exponent in CURRENCY_MINOR_UNITS.items():
        assert len(code) == 3
        assert code.isascii()
        assert code.isupper()
        assert exponent in (0, 2, 3, 4)


# --- quantize ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("0.125", "USD", "0.12"),  # tie: round to the even neighbour (down)
        ("0.135", "USD", "0.14"),  # tie: round to the even neighbour (up)
        ("-0.125", "USD", "-0.12"),
        ("0.1251", "USD", "0.13"),  # not a tie
        ("2.5", "JPY", "2"),
        ("3.5", "JPY", "4"),
        ("1234.5678", "JPY", "1235"),
        ("1.0005", "KWD", "1.000"),
        ("1.0015", "KWD", "1.002"),
        ("7", "USD", "7.00"),
        ("0.12345", "CLF", "0.1234"),
    ],
)
def test_quantize_rounds_half_even_to_the_minor_unit(
    amount: str, currency: str, expected: str
) -> None:
    result = quantize(Decimal(amount), currency)
    assert str(result) == expected


def test_jpy_has_no_decimals() -> None:
    assert quantize(Decimal("199.99"), "JPY").as_tuple().exponent == 0


@given(amount=amounts, currency=currencies)
def test_quantize_is_idempotent(amount: Decimal, currency: str) -> None:
    once = quantize(amount, currency)
    assert quantize(once, currency) == once
    assert str(quantize(once, currency)) == str(once)


@given(amount=amounts, currency=currencies)
def test_quantize_has_the_currency_exponent_and_moves_at_most_half_a_unit(
    amount: Decimal, currency: str
) -> None:
    result = quantize(amount, currency)
    assert result.as_tuple().exponent == -minor_units(currency)
    assert abs(result - amount) <= Decimal(1).scaleb(-minor_units(currency)) / 2


@given(values=st.lists(amounts, max_size=20), currency=currencies)
def test_sums_of_quantized_values_keep_the_exponent(values: list[Decimal], currency: str) -> None:
    quantized = [quantize(v, currency) for v in values]
    total = sum(quantized, start=quantize(Decimal(0), currency))
    assert total.as_tuple().exponent == -minor_units(currency)
    assert quantize(total, currency) == total


@pytest.mark.parametrize("amount", [Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")])
def test_quantize_rejects_non_finite_amounts(amount: Decimal) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        quantize(amount, "USD")


def test_quantize_rejects_amounts_beyond_the_context_precision() -> None:
    with pytest.raises(ValueError, match="too large"):
        quantize(Decimal("1e40"), "USD")


# --- parse_amount --------------------------------------------------------------------------


def test_float_point_one_parses_to_exact_decimal_point_one() -> None:
    assert parse_amount(0.1) == Decimal("0.1")
    assert parse_amount(0.1) != Decimal.from_float(0.1)  # not the binary expansion


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("199.00", "199.00"),
        ("-3.5", "-3.5"),
        ("0", "0"),
        (".5", "0.5"),
        ("1e2", "1E+2"),
        (42, "42"),
        (1322.5, "1322.5"),
        (150.0, "150.0"),
        (Decimal("9.990"), "9.990"),
    ],
)
def test_parse_amount_keeps_the_digits_given(value: str | int | float, expected: str) -> None:
    assert str(parse_amount(value)) == expected


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_parsed_float_converts_back_to_the_same_float(value: float) -> None:
    assert float(parse_amount(value)) == value


@given(amounts)
def test_decimal_text_parses_back_to_the_same_digits(amount: Decimal) -> None:
    assert parse_amount(str(amount)).as_tuple() == amount.as_tuple()


@pytest.mark.parametrize(
    "value",
    [
        "NaN",
        "nan",
        "Infinity",
        "-inf",
        "sNaN",
        "",
        " 1.00",
        "1,00",
        "1_000",
        "$5",
        "0x10",
        math.nan,
        math.inf,
        -math.inf,
        Decimal("NaN"),
        Decimal("Infinity"),
    ],
)
def test_parse_amount_rejects_non_numbers_and_non_finite_values(value: object) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the type is the contract, messages vary
        parse_amount(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, False, None, [1], b"1"])
def test_parse_amount_rejects_bools_and_other_types(value: object) -> None:
    with pytest.raises(TypeError):
        parse_amount(value)  # type: ignore[arg-type]


# --- pydantic field types ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["199.00", "0.00", "-0.00", "3.98", "0.001", "10", "1234567.891"])
def test_decimal_str_serialises_back_to_the_same_json_string(text: str) -> None:
    model = _StrAmount.model_validate_json(orjson.dumps({"value": text}))
    assert model.value == Decimal(text)
    assert orjson.loads(model.model_dump_json()) == {"value": text}


def test_decimal_str_never_uses_scientific_notation() -> None:
    assert orjson.loads(_StrAmount(value=Decimal("1E+2")).model_dump_json()) == {"value": "100"}
    assert orjson.loads(_StrAmount(value=Decimal("1E-7")).model_dump_json()) == {
        "value": "0.0000001"
    }


def test_decimal_str_accepts_numbers_without_float_imprecision() -> None:
    assert _StrAmount.model_validate({"value": 0.1}).value == Decimal("0.1")
    assert _StrAmount.model_validate({"value": 7}).value == Decimal(7)
    assert _StrAmount.model_validate_json(b'{"value": 195.66}').value == Decimal("195.66")


def test_decimal_str_keeps_decimal_in_python_mode() -> None:
    assert _StrAmount(value=Decimal("1.50")).model_dump() == {"value": Decimal("1.50")}


@pytest.mark.parametrize("bad", ["NaN", "abc", True, None, "Infinity", 1e400])
def test_decimal_str_rejects_invalid_input_with_a_validation_error(bad: object) -> None:
    with pytest.raises(ValidationError):
        _StrAmount.model_validate({"value": bad})


@pytest.mark.parametrize("raw", [b'{"value": 1322.5}', b'{"value": 150.0}', b'{"value": 0}'])
def test_decimal_number_round_trips_the_json_number(raw: bytes) -> None:
    model = _NumberAmount.model_validate_json(raw)
    dumped = orjson.loads(model.model_dump_json())
    assert dumped == orjson.loads(raw)
    assert type(dumped["value"]) is type(orjson.loads(raw)["value"])


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_decimal_number_gives_back_the_float_it_was_sent(value: float) -> None:
    model = _NumberAmount.model_validate({"value": value})
    assert orjson.loads(model.model_dump_json())["value"] == value


# --- Money ---------------------------------------------------------------------------------


def test_money_adds_within_one_currency() -> None:
    total = Money(amount=Decimal("1.10"), currency="EUR") + Money(
        amount=Decimal("2.205"), currency="EUR"
    )
    assert total == Money(amount=Decimal("3.305"), currency="EUR")
    assert total.quantized() == Money(amount=Decimal("3.30"), currency="EUR")


def test_money_refuses_to_add_different_currencies() -> None:
    with pytest.raises(ValueError, match="cannot add USD to EUR"):
        _ = Money(amount=Decimal(1), currency="EUR") + Money(amount=Decimal(1), currency="USD")


def test_money_addition_is_exact_or_refused() -> None:
    big = Money(amount=Decimal("1" * 38), currency="USD")
    with pytest.raises(ValueError, match="38 significant digits"):
        _ = big + Money(amount=Decimal("0.01"), currency="USD")


@given(values=st.lists(amounts, min_size=1, max_size=10), currency=currencies)
def test_sum_of_quantized_money_stays_quantized(values: list[Decimal], currency: str) -> None:
    monies = [Money(amount=v, currency=currency).quantized() for v in values]
    total = monies[0]
    for money in monies[1:]:
        total = total + money
    assert total.amount.as_tuple().exponent == -minor_units(currency)
    assert total.quantized() == total


def test_money_is_immutable_and_validates_its_currency() -> None:
    money = Money(amount=Decimal("5.00"), currency="USD")
    with pytest.raises(ValidationError):
        money.amount = Decimal(6)  # type: ignore[misc]
    with pytest.raises(ValidationError):
        Money(amount=Decimal(1), currency="usd")
    with pytest.raises(ValidationError):
        Money(amount=Decimal("NaN"), currency="USD")


def test_money_json_keeps_the_amount_digits() -> None:
    money = Money.model_validate_json(b'{"amount": "12.30", "currency": "USD"}')
    assert money.amount == Decimal("12.30")
    assert orjson.loads(money.model_dump_json()) == {"amount": "12.30", "currency": "USD"}
