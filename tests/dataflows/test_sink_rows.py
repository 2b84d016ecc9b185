"""What the ClickHouse sink stores is what clickhouse-connect stores for the same rows with the
table's own column types and its default compression (the plain `client.insert`), column for
column: the sink's cheaper encoding (`wire_type`, no compression to a loopback server,
`sinks.clickhouse.compresses`) changes no value, NULL, time or Decimal. Real ClickHouse front."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from clickhouse_connect.datatypes.registry import get_from_name
from clickhouse_connect.driver.exceptions import DatabaseError

from dataflows.attribution.events import parse_click, parse_envelope
from dataflows.sinks.clickhouse import (
    COLUMNS,
    ClickHouseSink,
    Row,
    click_row,
    client_for,
    compresses,
    conversion_row,
    entry_row,
    is_content_error,
    raw_event_row,
    refund_row,
    wire_type,
)
from schemas.events.envelope import EventEnvelope, Source
from schemas.ledger import (
    AttributedConversion,
    AttributionRule,
    CandidateKind,
    CommissionAccrual,
    EntryKind,
    RejectedCandidate,
    RejectionCode,
)
from schemas.settings import Settings
from tests.dataflows.builders import click, click_id, order, refund
from tests.dataflows.conftest import Topics

# A Shopify-style local time (negative offset, microseconds) and a UTC one.
LOCAL = datetime(2026, 11, 3, 7, 8, 9, 123_456, tzinfo=timezone(timedelta(hours=-5)))
AT = datetime(2026, 11, 3, 1, 2, 3, 4_005, tzinfo=UTC)

# Per table, the columns that order the rows read back (ids unique within one tenant).
KEYS = {
    "raw_events": "event_id",
    "clicks": "click_id",
    "conversions": "conversion_id",
    "commission_events": "entry_id",
    "refunds": "refund_id",
}


def rows_of(tenant: str) -> dict[str, list[Row]]:
    """Rows of every table the sink writes, as the flow builds them, with NULLs, several UTC
    offsets, microseconds, maps, Decimals and `rejected` tuples."""
    envelopes = [
        parse_envelope(click(tenant, click_id(n), at=AT + timedelta(seconds=n),
                             agent=None if n == 2 else "agt_a", program=None if n else "prg",
                             visitor=f"v{n}" if n else None).to_bytes())
        for n in range(3)
    ]  # fmt: skip
    sale = order(tenant, 1001, cites=click_id(0), lines=[(1, 2, "80.00")])
    back = refund(tenant, 1001, 7, [(1, 1)], at=LOCAL)
    odd = EventEnvelope.wrap(  # not UTF-8 (kept as base64), headers, a local time
        b"\xff\xfe not json", event_id="ev-odd", source=Source.ODOO, kind="account.move",
        tenant_id=tenant, occurred_at=LOCAL, received_at=AT, content_type="text/plain",
        headers={"x-odoo-db": "prod", "x-empty": ""},
    )  # fmt: skip
    archived = [*envelopes, *(parse_envelope(e.to_bytes()) for e in (sale, back, odd))]
    rejected = (
        RejectedCandidate(kind=CandidateKind.CLICK, ref="clk_1", agent_id="agt_b",
                          program_id=None, link_code="link-b", at=LOCAL,
                          code=RejectionCode.ATTRIBUTION_MODEL, reason="an earlier click"),
        RejectedCandidate(kind=CandidateKind.COUPON, ref="SAVE10", code=RejectionCode.CLICK_WINS,
                          reason="the click wins"),
    )  # fmt: skip
    conversions = [
        AttributedConversion(
            conversion_id=f"cv_{n}", tenant_id=tenant, shop=None if n else "s.myshopify.com",
            order_id=str(1001 + n), order_name=None if n else "#1001", occurred_at=LOCAL,
            attributed_at=AT, rule=AttributionRule.LAST_CLICK if n else AttributionRule.COUPON,
            agent_id=None if n else "agt_a", program_id="prg", click_id="clk_0" if n else None,
            link_code="link-a" if n else None, coupon_code=None if n else "SAVE10",
            customer_id="c1", is_new_customer=bool(n), currency="EUR",
            revenue=Decimal("1234.5678"), fx_rate=Decimal("1.23456789"),
            source_event_id=f"ev_{n}", explanation="the coupon wins" if n else "",
            rejected=() if n else rejected,
        )
        for n in range(2)
    ]  # fmt: skip
    entries = [
        CommissionAccrual(
            entry_id=f"le_{n}", tenant_id=tenant, agent_id="agt_a", program_id=None if n else "prg",
            conversion_id="cv_0", order_id="1001", line_item_id=None if n else "1",
            kind=EntryKind.REVERSAL if n else EntryKind.ACCRUAL, level=n,
            amount=Decimal("-0.0001") if n else Decimal("99999999999999.9999"), currency="EUR",
            fx_rate=Decimal("0.00000001"), rule_id=None if n else "r1",
            rule_version=None if n else 3, occurred_at=LOCAL if n else AT,
            source_event_id=f"ev_{n}", shop=None if n else "s", link_code="link-a",
            coupon_code=None,
        )
        for n in range(2)
    ]  # fmt: skip
    return {
        "raw_events": [raw_event_row(e) for e in archived],
        "clicks": [click_row(parse_click(e), e) for e in envelopes],
        "conversions": [conversion_row(c) for c in conversions],
        "commission_events": [entry_row(e) for e in entries],
        "refunds": [refund_row(parse_envelope(back.to_bytes()))],
    }


def stored(settings: Settings, table: str, tenant: str, name: str | None = None) -> list[Row]:
    """The rows of `tenant` in `name` (a table with `table`'s columns; `table` itself by
    default), every written column, as clickhouse-connect reads them (Decimals exact, times to
    the microsecond)."""
    client = client_for(settings)
    try:
        return [
            tuple(row)
            for row in client.query(
                f"SELECT {', '.join(COLUMNS[table])} FROM {name or table} FINAL"
                f" WHERE tenant_id = {{t:String}} ORDER BY {KEYS[table]}",
                parameters={"t": tenant},
            ).result_rows
        ]
    finally:
        client.close()


@pytest.mark.parametrize("compression", ["auto", True])
def test_the_sink_stores_what_a_plain_insert_stores(
    stack_settings: Settings, topics: Topics, compression: bool | str
) -> None:
    tenant, suffix = f"t_rows_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex[:8]
    rows = rows_of(tenant)
    client = client_for(stack_settings)
    try:  # the reference: tables of the same structure, written by a plain insert
        for table, table_rows in rows.items():
            client.command(f"CREATE TABLE {table}_{suffix} AS {table}")
            client.insert(f"{table}_{suffix}", table_rows, column_names=list(COLUMNS[table]))
        part = ClickHouseSink(stack_settings, topics.deadletter, compression).build("t", 0, 1)  # type: ignore[arg-type]
        try:
            part.write_batch(list(rows.items()))
        finally:
            part.close()
        for table, table_rows in rows.items():
            expected = stored(stack_settings, table, tenant, f"{table}_{suffix}")
            assert len(expected) == len(table_rows), table
            assert stored(stack_settings, table, tenant) == expected, table
    finally:
        for table in rows:
            client.command(f"DROP TABLE IF EXISTS {table}_{suffix}")
        client.close()
    # The body hash (FixedString(64), sent as String) reads back as the envelope's.
    event, sha = COLUMNS["raw_events"].index("event_id"), COLUMNS["raw_events"].index("body_sha256")
    assert {row[event]: row[sha] for row in stored(stack_settings, "raw_events", tenant)} == {
        row[event]: row[sha].encode() for row in rows["raw_events"]
    }


def test_compression_is_off_for_loopback_servers_only() -> None:
    assert not compresses("127.0.0.1")
    assert not compresses("127.0.1.5")
    assert not compresses("localhost")
    assert not compresses("::1")
    assert not compresses("[::1]")
    assert compresses("clickhouse")  # docker-compose's service: over the network
    assert compresses("10.0.0.7")
    assert compresses("ch.example.com")
    assert compresses("127.0.0.1", True)
    assert not compresses("clickhouse", False)


@pytest.mark.parametrize(
    ("setting", "url", "compressed"),
    [
        ("auto", "http://default:@127.0.0.1:8123/refstream", False),
        ("auto", "http://default:@clickhouse:8123/refstream", True),
        ("on", "http://default:@127.0.0.1:8123/refstream", True),
        ("off", "http://default:@clickhouse:8123/refstream", False),
    ],
)
def test_the_sink_compresses_as_refstream_clickhouse_compression_says(
    monkeypatch: pytest.MonkeyPatch, setting: str, url: str, compressed: bool
) -> None:
    monkeypatch.setenv("REFSTREAM_CLICKHOUSE_COMPRESSION", setting)
    monkeypatch.setenv("REFSTREAM_CLICKHOUSE_URL", url)
    part = ClickHouseSink(Settings()).build("t", 0, 1)
    try:
        assert part._compress is compressed
    finally:
        part.close()


def test_only_fixed_strings_change_type_on_the_wire() -> None:
    def wire(name: str) -> str:
        return wire_type(get_from_name(name)).name

    assert wire("FixedString(64)") == "String"
    for kept in ("LowCardinality(String)", "Nullable(FixedString(3))", "String",
                 "LowCardinality(FixedString(2))", "DateTime64(3, 'UTC')"):  # fmt: skip
        assert wire(kept) == kept


def test_a_value_too_long_for_its_fixed_string_is_a_content_error(
    stack_settings: Settings, topics: Topics
) -> None:
    """clickhouse-connect refused such a value itself (a `DataError`); sent as String, the
    server refuses it: still a content error, so the row is dead-lettered, not retried forever."""
    tenant = f"t_long_{uuid.uuid4().hex[:8]}"
    (good,) = rows_of(tenant)["raw_events"][:1]
    sha = COLUMNS["raw_events"].index("body_sha256")
    bad = tuple("f" * 65 if i == sha else v for i, v in enumerate(good))
    bad = tuple(f"ev-long-{tenant}" if c == "event_id" else v
                for c, v in zip(COLUMNS["raw_events"], bad, strict=True))  # fmt: skip
    client = client_for(stack_settings, compress=False)
    types = [wire_type(t) for t in client.create_insert_context(
        "raw_events", column_names=list(COLUMNS["raw_events"])).column_types]  # fmt: skip
    try:
        with pytest.raises(DatabaseError) as refused:
            client.insert("raw_events", [bad], column_names=list(COLUMNS["raw_events"]),
                          column_types=types)  # fmt: skip
    finally:
        client.close()
    assert is_content_error(refused.value)
    part = ClickHouseSink(stack_settings, topics.deadletter).build("t", 0, 1)
    try:
        part.write_batch([("raw_events", [good, bad])])
    finally:
        part.close()
    assert [row[3] for row in stored(stack_settings, "raw_events", tenant)] == [good[3]]
