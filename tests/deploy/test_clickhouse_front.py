"""The chDB HTTP front, driven only through clickhouse-connect (as all project code is)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import lz4.frame
import pytest
import zstandard
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from deploy.clickhouse_http import ClickHouseError, decompress_frames, read_statement
from tests.fixtures.clickhouse import (
    ClickHouseServer,
    start_clickhouse_server,
    stop_clickhouse_server,
)

SYNTAX_ERROR = 62
UNKNOWN_TABLE = 60


def test_ping_and_server_version(clickhouse_server: ClickHouseServer) -> None:
    client = clickhouse_server.client()
    base = f"http://{clickhouse_server.host}:{clickhouse_server.port}"

    assert client.ping()
    assert (client.server_version or "").split(".")[0].isdigit()
    assert client.command("SELECT timezone()") == "UTC"
    for path in ("/ping", "/"):
        with urllib.request.urlopen(base + path, timeout=10) as response:
            assert response.read() == b"Ok.\n"


def test_merge_tree_and_replacing_merge_tree_ddl(ch_client: Client) -> None:
    ch_client.command("CREATE TABLE plain (id UInt64, v String) ENGINE = MergeTree ORDER BY id")
    ch_client.command(
        "CREATE TABLE latest (id UInt64, version UInt32, v String) "
        "ENGINE = ReplacingMergeTree(version) ORDER BY id"
    )
    ch_client.insert("latest", [[1, 1, "old"], [1, 2, "new"], [2, 1, "only"]])

    assert ch_client.command("EXISTS TABLE plain") == 1
    final = ch_client.query("SELECT id, v FROM latest FINAL ORDER BY id").result_rows
    assert final == [(1, "new"), (2, "only")]

    ch_client.command("DROP TABLE plain")
    ch_client.command("DROP TABLE latest")
    assert ch_client.command("EXISTS TABLE plain") == 0
    assert ch_client.command("EXISTS TABLE latest") == 0


def test_typed_insert_reads_back_equal(ch_client: Client) -> None:
    ch_client.command(
        """
        CREATE TABLE typed (
            at DateTime64(3, 'UTC'),
            amount Decimal(18, 4),
            channel LowCardinality(String),
            id UUID,
            note Nullable(String),
            tags Array(String),
            count Int64,
            ratio Float64
        ) ENGINE = MergeTree ORDER BY at
        """
    )
    rows = [
        (
            datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC),
            Decimal("12345.6789"),
            "email",
            uuid.UUID("2b1c0c7e-8d1f-4c6a-9a3b-0d6d3f2c1e11"),
            None,
            ["a", "b\t'c\\"],
            -(2**62),
            0.25,
        ),
        (
            datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
            Decimal("-0.0001"),
            "partner",
            uuid.UUID("00000000-0000-0000-0000-000000000001"),
            "café ☕",
            [],
            2**62,
            -1.5e300,
        ),
    ]
    ch_client.insert("typed", rows)

    assert ch_client.query("SELECT * FROM typed ORDER BY at").result_rows == rows


def test_query_parameters_round_trip_awkward_strings(ch_client: Client) -> None:
    awkward = 'it\'s "quoted"\ttab\\backslash\nnewline é 🎉 \x00nul'
    long_value = "x" * 150_000 + awkward  # > 4 KiB of parameters goes as a multipart form

    result = ch_client.query(
        "SELECT {s:String}, {u:UUID}, {at:DateTime64(3, 'UTC')}, {n:Nullable(String)}, "
        "{a:Array(String)}, {d:Decimal(18, 4)}, length({big:String}), {big:String} = {same:String}",
        parameters={
            "s": awkward,
            "u": uuid.UUID("2b1c0c7e-8d1f-4c6a-9a3b-0d6d3f2c1e11"),
            "at": datetime(2026, 5, 6, 7, 8, 9, 10000, tzinfo=UTC),
            "n": None,
            "a": ["x", "y'z", "\\"],
            "d": Decimal("-1.2345"),
            "big": long_value,
            "same": long_value,
        },
    )

    assert result.result_rows == [
        (
            awkward,
            uuid.UUID("2b1c0c7e-8d1f-4c6a-9a3b-0d6d3f2c1e11"),
            datetime(2026, 5, 6, 7, 8, 9, 10000, tzinfo=UTC),
            None,
            ["x", "y'z", "\\"],
            Decimal("-1.2345"),
            len(long_value.encode()),
            True,
        )
    ]


def test_large_insert_in_several_compressed_blocks_counts_exactly(ch_client: Client) -> None:
    ch_client.command(
        "CREATE TABLE clicks (id UInt64, agent String, url String) ENGINE = MergeTree ORDER BY id"
    )
    total = 200_000
    rows = [
        [i, f"agent-{i % 97}", f"https://shop.example/p/{i}?ref=aff-{i % 13}"] for i in range(total)
    ]
    context = ch_client.create_insert_context("clicks", data=rows)
    assert total / context.block_row_count >= 3  # each block is its own lz4 frame

    summary = ch_client.insert(context=context)

    assert summary.written_rows == total
    assert ch_client.query("SELECT count(), sum(id) FROM clicks").result_rows == [
        (total, total * (total - 1) // 2)
    ]


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [("lz4", lz4.frame.compress), ("zstd", zstandard.ZstdCompressor().compress)],
)
def test_every_compressed_frame_of_a_body_is_inserted(
    ch_client: Client, encoding: str, compress: object
) -> None:
    assert callable(compress)
    ch_client.command("CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id")
    frames = b"".join(compress(f"{i}\n".encode() * 1000) for i in range(5))

    ch_client.raw_insert("t", ["id"], insert_block=frames, fmt="TSV", compression=encoding)

    assert ch_client.command("SELECT count(), uniqExact(id) FROM t") == ["5000", "5"]


def test_command_returns_values_and_summaries(ch_client: Client) -> None:
    assert ch_client.command("SELECT 42") == 42
    assert ch_client.command("SELECT 'a', 'b'") == ["a", "b"]
    assert ch_client.command("SELECT 1 WHERE 0") == ""
    summary = ch_client.command("CREATE TABLE t (id UInt64) ENGINE = MergeTree ORDER BY id")
    assert not isinstance(summary, (int, str, list))
    inserted = ch_client.command("INSERT INTO t SELECT number FROM numbers(10)")
    assert getattr(inserted, "written_rows", None) == 10
    assert ch_client.command("SELECT count() FROM t") == 10


def test_bad_sql_raises_syntax_error_code(ch_client: Client) -> None:
    with pytest.raises(DatabaseError) as raised:
        ch_client.query("SELEC 1")

    assert raised.value.code == SYNTAX_ERROR
    assert "Syntax error" in str(raised.value)


def test_unknown_table_raises_unknown_table_code(ch_client: Client) -> None:
    with pytest.raises(DatabaseError) as query_error:
        ch_client.query("SELECT * FROM no_such_table")
    with pytest.raises(DatabaseError) as insert_error:
        ch_client.raw_insert("no_such_table", ["id"], insert_block=b"1\n" * 100_000, fmt="TSV")

    assert query_error.value.code == UNKNOWN_TABLE
    assert insert_error.value.code == UNKNOWN_TABLE
    assert ch_client.command("SELECT 1") == 1  # the connection survives the rejected body


def test_session_settings_and_temporary_tables_stay_in_their_session(
    clickhouse_server: ClickHouseServer,
) -> None:
    first = clickhouse_server.client()
    other = clickhouse_server.client()

    first.command("SET join_use_nulls = 1")
    first.command("CREATE TEMPORARY TABLE scratch (id UInt8)")
    first.command("INSERT INTO scratch VALUES (1), (2)")

    assert first.command("SELECT getSetting('join_use_nulls')") == "true"
    assert first.command("SELECT count() FROM scratch") == 2
    assert other.command("SELECT getSetting('join_use_nulls')") == "false"
    with pytest.raises(DatabaseError) as raised:
        other.command("SELECT count() FROM scratch")
    assert raised.value.code == UNKNOWN_TABLE


def test_per_query_settings_do_not_leak_into_later_queries(ch_client: Client) -> None:
    limited = ch_client.command("SELECT getSetting('max_threads')", settings={"max_threads": 1})
    default = ch_client.command("SELECT getSetting('max_threads')")

    assert limited == 1
    assert default != 1


_WRITER = """
import sys, clickhouse_connect
host, port, database, batches, size = sys.argv[1:6]
batches, size = int(batches), int(size)
client = clickhouse_connect.get_client(host=host, port=int(port), database=database)
for batch in range(batches):
    client.insert("events", [[batch * size + i, batch] for i in range(size)])
"""


def test_writer_process_and_reader_threads_run_concurrently(
    clickhouse_server: ClickHouseServer, ch_client: Client
) -> None:
    ch_client.command(
        "CREATE TABLE events (id UInt64, batch UInt32) ENGINE = MergeTree ORDER BY id"
    )
    batches, size = 150, 5_000
    database = ch_client.database
    assert database is not None
    writer = subprocess.Popen(
        [
            *(sys.executable, "-c", _WRITER),
            *(clickhouse_server.host, str(clickhouse_server.port), database),
            *(str(batches), str(size)),
        ],
        stderr=subprocess.PIPE,
    )
    errors: list[BaseException] = []
    seen: list[int] = []

    def read_until_writer_exits() -> None:
        reader = clickhouse_server.client(database=database)
        deadline = time.monotonic() + 30
        try:
            while writer.poll() is None and time.monotonic() < deadline:
                count = reader.command("SELECT count() FROM events")
                assert isinstance(count, int)
                assert count % size == 0  # an insert is atomic: readers see whole batches
                per_batch = reader.query("SELECT batch, count() FROM events GROUP BY batch")
                assert all(rows == size for _, rows in per_batch.result_rows)
                seen.append(count)
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read_until_writer_exits) for _ in range(2)]
    for reader in readers:
        reader.start()
    _, writer_errors = writer.communicate(timeout=45)
    for reader in readers:
        reader.join(timeout=30)

    assert writer.returncode == 0, writer_errors.decode()
    assert errors == []
    assert len(seen) > 10
    assert (
        ch_client.command("SELECT count(), uniqExact(id) FROM events") == [str(batches * size)] * 2
    )


def test_data_survives_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_clickhouse_server(data_dir)
    try:
        client = server.client()
        client.command("CREATE TABLE kept (id UInt64) ENGINE = MergeTree ORDER BY id")
        client.insert("kept", [[i] for i in range(1_000)])
    finally:
        first_exit = stop_clickhouse_server(server)

    restarted = start_clickhouse_server(data_dir)
    try:
        assert restarted.client().command("SELECT count(), sum(id) FROM kept") == ["1000", "499500"]
    finally:
        stop_clickhouse_server(restarted)
    assert first_exit == 0


def test_second_server_on_the_same_directory_fails_clearly(
    clickhouse_server: ClickHouseServer,
) -> None:
    second = subprocess.run(
        [
            *(sys.executable, "-m", "deploy.clickhouse_http"),
            *("--data-dir", str(clickhouse_server.data_dir), "--port", "0"),
        ],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )

    assert second.returncode != 0
    assert b"READY" not in second.stdout
    assert b"another server" in second.stderr
    assert clickhouse_server.client().command("SELECT 1") == 1


def test_insert_data_starts_after_the_format_line_wherever_the_sql_comes_from() -> None:
    data = b"\t\x00binary\nFORMAT Native"
    in_body = read_statement("", [b"INSERT INTO t (`values`, `a b`) FORMAT ", b"Native\n" + data])
    in_param = read_statement("INSERT INTO t (`values`, `a b`) FORMAT Native", [data])

    for statement in (in_body, in_param):
        assert statement.sql == "INSERT INTO t (`values`, `a b`)"
        assert statement.insert_format == "Native"
        assert statement.data_head + b"".join(statement.data_rest) == data


def test_insert_without_format_clause_stays_plain_sql() -> None:
    statement = read_statement("", [b"INSERT INTO t VALUES ('FORMAT Native')"])

    assert statement.insert_format is None
    assert statement.sql == "INSERT INTO t VALUES ('FORMAT Native')"


def test_a_body_cut_inside_a_compressed_frame_is_an_error_not_fewer_rows() -> None:
    frames = lz4.frame.compress(b"1\n" * 1000) + lz4.frame.compress(b"2\n" * 1000)

    assert b"".join(decompress_frames([frames], "lz4")) == b"1\n" * 1000 + b"2\n" * 1000
    with pytest.raises(ClickHouseError, match="inside a frame"):
        b"".join(decompress_frames([frames[:-5]], "lz4"))
