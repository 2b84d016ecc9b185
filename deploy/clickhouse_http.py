"""A ClickHouse HTTP-interface server over chDB, for tests and the local stack.

Why this exists: the only modern ClickHouse engine installable on the project's machines is chDB
(ClickHouse embedded in a Python extension), and chDB lets exactly one process open a data
directory. The dataflow (writer) and the API (reader) are separate processes and, as in
production, must talk to ClickHouse only through ``clickhouse-connect``. So this module is the one
process that owns the chDB directory and answers the part of ClickHouse's HTTP protocol that
``clickhouse-connect`` uses. Production runs a real ClickHouse server instead: project code never
imports this module; tests and the local stack run it as a process (``start_subprocess``).

What is served (behaviour checked against clickhouse-connect 1.12 and chdb 4.4):

* ``GET /ping`` and ``GET /`` answer ``Ok.``.
* A query comes from the ``query`` URL parameter, the request body, or both (the body is appended
  after a newline, as ClickHouse does), or from the ``query`` field of a multipart form. Bodies may
  be chunked and compressed (``Content-Encoding`` lz4, zstd, gzip, deflate; every frame is
  decoded). ``param_<name>`` values bind ``{name:Type}`` placeholders natively; ``database``,
  ``default_format``, ``query_id`` and ``session_id`` (with ``session_timeout`` and
  ``session_check``) behave as in ClickHouse; every other parameter is a setting for that query.
* ``INSERT ... FORMAT <fmt>`` streams the data into chDB's insert API, so inserts of any size work.
* Errors are HTTP 400/404/500/501 with ``X-ClickHouse-Exception-Code`` and the ClickHouse message
  (never 429/503/504, which clickhouse-connect would retry).

Known differences from a real server: responses are never compressed, a result is buffered before
it is sent, GET does not imply ``readonly``, external tables in multipart forms and the
``decompress`` (native compression) parameter are rejected, and there is no authentication.

Run it with ``python -m deploy.clickhouse_http --data-dir DIR [--host H] [--port P]`` (port 0
picks a free one); it prints ``READY <port>`` on stdout once it accepts requests, exits 0 on
SIGTERM/SIGINT after closing chDB, and exits 1 with a message on stderr if the directory is in use
or the port is taken. In Python: ``serve(data_dir, host, port)`` (blocking) or ``ClickHouseFront``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import lz4.frame
import zstandard

__all__ = [
    "ClickHouseError",
    "ClickHouseFront",
    "main",
    "serve",
    "start_subprocess",
    "stop_subprocess",
]

logger = logging.getLogger(__name__)

DISPLAY_NAME = "refstream-chdb"

# ClickHouse error codes this module raises itself (numbers as in ClickHouse's ErrorCodes.cpp).
UNEXPECTED_END_OF_FILE = 3
CANNOT_PARSE_INPUT_ASSERTION_FAILED = 27
NOT_IMPLEMENTED = 48
UNKNOWN_FORMAT = 73
UNKNOWN_COMPRESSION_METHOD = 89
UNKNOWN_SETTING = 115
CANNOT_DECOMPRESS = 271
SESSION_NOT_FOUND = 372
SESSION_IS_LOCKED = 373
STD_EXCEPTION = 1001

# What ClickHouse's HTTPHandler answers for these codes; everything else is 500.
_BAD_REQUEST_CODES = frozenset(
    {6, 25, 26, 27, 37, 38, 41, 53, 62, 72, 117, 123, 167, 168, 223, 321, 376, 441, 457, 467, 675}
)
_NOT_FOUND_CODES = frozenset({46, 47, 50, 56, 60, 63, 73, 78, 81, 115, 152, 336, 372, 511})
_STATUS_BY_CODE: dict[int, int] = {
    **dict.fromkeys(_BAD_REQUEST_CODES, 400),
    **dict.fromkeys(_NOT_FOUND_CODES, 404),
    229: 413,  # QUERY_IS_TOO_LARGE
    NOT_IMPLEMENTED: 501,
}

# URL parameters that steer the HTTP interface and are not query settings.
_TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "user",
        "password",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "stacktrace",
    }
)
# Settings that only shape ClickHouse's HTTP transport; this server has nothing to apply them to.
_HTTP_ONLY_SETTINGS = frozenset(
    {
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "enable_http_compression",
        "http_zlib_compression_level",
        "http_native_compression_disable_checksumming_on_decompress",
        "cancel_http_readonly_queries_on_client_close",
        "http_response_buffer_size",
        "http_wait_end_of_query",
        "add_http_cors_header",
    }
)
# chdb's Python wrapper turns these "formats" into Python objects instead of bytes.
_PYTHON_ONLY_FORMATS = frozenset({"dataframe", "arrowtable", "datastore"})

_DEFAULT_FORMAT = "TabSeparated"
_DEFAULT_SESSION_TIMEOUT_S = 60.0
_MAX_SESSION_TIMEOUT_S = 3600.0
_SESSION_LOCK_WAIT_S = 0.1  # covers the gap between a response and its session's release
_SESSION_SWEEP_INTERVAL_S = 5.0
_POOL_SIZE = 16
_READ_SIZE = 1 << 20
_INSERT_APPEND_SIZE = 1 << 20
_STATEMENT_PEEK_LIMIT = 1 << 20
_DRAIN_TIMEOUT_S = 10.0
_SOCKET_TIMEOUT_S = 600.0  # ends idle keep-alive connections and stuck clients

_HEADER_BREAKS = re.compile(r"[\r\n]")
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_LEADING_NOISE = re.compile(rb"(?:\s+|--[^\n]*(?:\n|\Z)|#![^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)
_KEYWORD = re.compile(rb"[A-Za-z]+")
# After INSERT, the first keyword outside quotes decides: FORMAT means data follows; else plain SQL.
_INSERT_TOKEN = re.compile(
    rb"`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\b(FORMAT|VALUES|SELECT|WITH)\b",
    re.I | re.S,
)
_FORMAT_NAME = re.compile(rb"[ \t\r\n]+([A-Za-z_][A-Za-z0-9_]*)")
_OUTPUT_FORMAT = re.compile(
    r"\bFORMAT\s+([A-Za-z_][A-Za-z0-9_]*)\s*(?:SETTINGS\b.*)?;?\s*\Z", re.I | re.S
)
_ERROR_TEXT = re.compile(r"Code: (\d+)\. (?:DB::Exception: )?(.*)", re.S)
_RESULT_KEYWORDS = frozenset(
    {b"SELECT", b"WITH", b"SHOW", b"DESCRIBE", b"DESC", b"EXISTS", b"EXPLAIN", b"CHECK"}
)
# Statements after which a session-less handle no longer matches a fresh one.
_STATEFUL_KEYWORDS = frozenset({b"SET", b"USE"})
_CREATE_TEMPORARY = re.compile(rb"CREATE\s+(?:OR\s+REPLACE\s+)?TEMPORARY\b", re.I)


class ClickHouseError(Exception):
    """A ClickHouse exception: sent to the client with its code, as a real server would."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @classmethod
    def from_engine(cls, exc: BaseException) -> ClickHouseError:
        """Recover ClickHouse's code and text from a chDB exception (chDB wraps some of them)."""
        text = str(exc)
        match = _ERROR_TEXT.search(text)
        if match is None:
            return cls(STD_EXCEPTION, f"{type(exc).__name__}: {text} (STD_EXCEPTION)")
        return cls(int(match.group(1)), match.group(2).strip())

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def body(self) -> bytes:
        return f"Code: {self.code}. DB::Exception: {self.message}\n".encode()


# --- request bodies -------------------------------------------------------------------------------


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    def decompress(self, data: bytes, /) -> bytes: ...


def _zstd_decompressor() -> _Decompressor:
    return zstandard.ZstdDecompressor().decompressobj()


_DECOMPRESSORS: dict[str, Callable[[], _Decompressor]] = {
    "lz4": lz4.frame.LZ4FrameDecompressor,
    "zstd": _zstd_decompressor,
    "gzip": lambda: zlib.decompressobj(wbits=31),
    "x-gzip": lambda: zlib.decompressobj(wbits=31),
    "deflate": zlib.decompressobj,
}


def decompress_frames(chunks: Iterable[bytes], encoding: str) -> Iterator[bytes]:
    """Decode a stream of concatenated compressed frames of one encoding.

    clickhouse-connect compresses every insert block as its own frame; a one-shot decompress would
    return only the first frame without any error, silently losing rows, hence the frame loop.
    Raises ClickHouseError for an unknown encoding or a stream that ends inside a frame.
    """
    factory = _DECOMPRESSORS.get(encoding)
    if factory is None:
        raise ClickHouseError(
            UNKNOWN_COMPRESSION_METHOD,
            f"Unknown Content-Encoding '{encoding}' (UNKNOWN_COMPRESSION_METHOD)",
        )
    decoder = factory()
    inside_frame = False
    for chunk in chunks:
        data = chunk
        while data:
            try:
                out = decoder.decompress(data)
            except Exception as exc:
                raise ClickHouseError(
                    CANNOT_DECOMPRESS,
                    f"Cannot decompress {encoding} body: {exc} (CANNOT_DECOMPRESS)",
                ) from exc
            inside_frame = True
            if out:
                yield out
            if decoder.eof:
                data, decoder, inside_frame = decoder.unused_data, factory(), False
            else:
                data = b""
    if inside_frame:
        raise ClickHouseError(
            CANNOT_DECOMPRESS, f"{encoding} body ends inside a frame (CANNOT_DECOMPRESS)"
        )


class RequestBody:
    """The raw body of one HTTP request, read lazily (Content-Length or chunked)."""

    def __init__(self, rfile: io.BufferedIOBase, content_length: int | None, chunked: bool) -> None:
        self._rfile = rfile
        self._chunks = self._read_chunked() if chunked else self._read_sized(content_length or 0)
        self.complete = False

    def __iter__(self) -> Iterator[bytes]:
        return self._chunks

    def drain(self) -> None:
        """Consume what the handler did not read, so the connection can serve the next request.

        Raises ConnectionError if the body cannot be read to its end (the connection is unusable).
        """
        for _ in self._chunks:
            pass
        if not self.complete:
            raise ConnectionError("request body was not read to its end")

    def _read_sized(self, length: int) -> Iterator[bytes]:
        remaining = length
        while remaining:
            data = self._rfile.read(min(remaining, _READ_SIZE))
            if not data:
                raise ConnectionError("client closed the connection inside the request body")
            remaining -= len(data)
            yield data
        self.complete = True

    def _read_chunked(self) -> Iterator[bytes]:
        while True:
            line = self._rfile.readline(65537)
            if not line:
                raise ConnectionError("client closed the connection inside a chunked body")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ConnectionError(f"malformed chunk size line {line[:40]!r}") from None
            if size == 0:
                break
            remaining = size
            while remaining:
                data = self._rfile.read(min(remaining, _READ_SIZE))
                if not data:
                    raise ConnectionError("client closed the connection inside a chunk")
                remaining -= len(data)
                yield data
            self._rfile.readline()
        while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
            pass  # trailer fields carry nothing this server uses
        self.complete = True


def parse_multipart(body: bytes, content_type: str) -> dict[str, str]:
    """Fields of a multipart/form-data body; a file part (an external table) is rejected."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise ClickHouseError(
            CANNOT_PARSE_INPUT_ASSERTION_FAILED, "multipart body without boundary"
        )
    delimiter = b"--" + match.group(1).encode()
    fields: dict[str, str] = {}
    for part in body.split(delimiter)[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.decode("utf-8", "replace").split("\r\n")
                if line.lower().startswith("content-disposition:")
            ),
            "",
        )
        name = re.search(r'\bname="([^"]*)"', disposition)
        if name is None:
            continue
        if re.search(r'\bfilename="', disposition):
            raise ClickHouseError(
                NOT_IMPLEMENTED,
                "External tables are not supported by this server (NOT_IMPLEMENTED)",
            )
        fields[name.group(1)] = value.removesuffix(b"\r\n").decode("utf-8", "replace")
    return fields


# --- statements -----------------------------------------------------------------------------------


@dataclass
class Statement:
    """One query as ClickHouse would split it: SQL text, and for INSERT ... FORMAT the data."""

    sql: str
    keyword: bytes
    insert_format: str | None = None
    data_head: bytes = b""
    data_rest: Iterator[bytes] = field(default_factory=lambda: iter(()))

    @property
    def produces_result(self) -> bool:
        return self.keyword in _RESULT_KEYWORDS or self.sql.lstrip().startswith("(")

    @property
    def leaves_state(self) -> bool:
        """True if it changes the handle it ran on (so a shared handle must not be reused)."""
        return self.keyword in _STATEFUL_KEYWORDS or bool(
            _CREATE_TEMPORARY.match(self.sql.lstrip().encode())
        )


def read_statement(query_param: str, body: Iterable[bytes]) -> Statement:
    """Split ``query_param + "\\n" + body`` into SQL and, for INSERT ... FORMAT, streamed data.

    Only the head of the body is read here; insert data stays in ``data_rest`` so it never has to
    fit in memory (or in SQL text, which chDB rejects past ~256 KiB).
    """
    head = bytearray(query_param.encode() + b"\n" if query_param else b"")
    chunks = iter(body)
    eof = False

    def read_more() -> None:
        nonlocal eof
        chunk = next(chunks, None)
        if chunk is None:
            eof = True
        else:
            head.extend(chunk)

    while True:
        noise = _LEADING_NOISE.match(head)
        offset = noise.end() if noise else 0
        word = _KEYWORD.match(head, offset)
        if eof or len(head) > _STATEMENT_PEEK_LIMIT or (word and word.end() < len(head)):
            break
        read_more()
    keyword = word.group(0).upper() if word else b""

    if keyword == b"INSERT":
        while True:
            split = _split_insert(head, offset, eof)
            if split is None:
                break
            if isinstance(split, _NeedMore):
                read_more()
                continue
            sql_end, fmt, data_start = split
            return Statement(
                sql=head[:sql_end].decode("utf-8", "replace").strip(),
                keyword=keyword,
                insert_format=fmt,
                data_head=bytes(head[data_start:]),
                data_rest=chunks,
            )

    for chunk in chunks:
        head.extend(chunk)
    return Statement(sql=head.decode("utf-8", "replace"), keyword=keyword)


class _NeedMore:
    """Marks a statement head too short to decide how to split it."""


_NEED_MORE = _NeedMore()


def _split_insert(
    head: bytearray, offset: int, eof: bool
) -> tuple[int, str, int] | _NeedMore | None:
    """Where an INSERT's FORMAT clause starts, its format, and where its data starts.

    None if the INSERT has no FORMAT clause (plain SQL), _NEED_MORE if ``head`` is too short to say.
    """
    clause = next((m for m in _INSERT_TOKEN.finditer(head, offset) if m.group(1)), None)
    if clause is None:
        return None if eof or len(head) > _STATEMENT_PEEK_LIMIT else _NEED_MORE
    if clause.group(1).upper() != b"FORMAT":
        return None
    name = _FORMAT_NAME.match(head, clause.end())
    if name is None:
        return None if eof or head[clause.end() :].strip() else _NEED_MORE
    data_start = name.end()
    while data_start < len(head) and head[data_start] in b" \t":
        data_start += 1
    if data_start == len(head) and not eof:
        return _NEED_MORE  # the name may go on, or the newline that ends the SQL may follow
    if head.startswith(b"\r\n", data_start):
        data_start += 2
    elif head.startswith(b"\n", data_start):
        data_start += 1
    return clause.start(), name.group(1).decode(), data_start


def _output_format(sql: str, default: str) -> str:
    match = _OUTPUT_FORMAT.search(sql)
    return match.group(1) if match else default


def _content_type(fmt: str) -> str:
    name = fmt.lower()
    if name.startswith("json"):
        return "application/json; charset=UTF-8"
    if name.startswith(("tabseparated", "tsv")):
        return "text/tab-separated-values; charset=UTF-8"
    if name.startswith("csv"):
        return "text/csv; charset=UTF-8; header=absent"
    if name in {"pretty", "vertical", "markdown", "values", "xml"} or name.startswith("pretty"):
        return "text/plain; charset=UTF-8"
    return "application/octet-stream"


def _quote_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _quote_identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


# --- chDB handles, sessions and the engine --------------------------------------------------------


def _connect(data_dir: Path) -> Any:
    # Imported late on purpose: chDB fixes its time zone at import, and main() sets TZ first.
    import chdb

    return chdb.connect(str(data_dir))  # type: ignore[no-untyped-call]


@dataclass
class Result:
    """What a statement produced: body bytes, the summary, and the output format if it has one."""

    body: bytes
    summary: dict[str, str]
    output_format: str | None


class _Handle:
    """One chDB connection: its own SET/USE/temporary tables; runs one statement at a time."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        # URL settings currently SET on this handle; None marks a value a user SET may have changed
        self.applied: dict[str, str | None] = {}
        self.current_db = "default"
        self.home_db = "default"  # what USE chose; a request's `database` applies to it only
        self.reusable = True

    def run(
        self, sql: str, fmt: str = _DEFAULT_FORMAT, params: dict[str, str] | None = None
    ) -> Any:
        try:
            return self.conn.query(sql, fmt, params=params or {})
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc

    def prepare(self, settings: dict[str, str], database: str | None) -> None:
        """Make this handle's settings equal the request's and select the request's database."""
        assignments = [f"{key} = DEFAULT" for key in self.applied if key not in settings]
        assignments += [
            f"{key} = {_quote_string(value)}"
            for key, value in settings.items()
            if self.applied.get(key) != value
        ]
        if assignments:
            try:
                self.run("SET " + ", ".join(assignments))
            except ClickHouseError:
                self.applied = dict.fromkeys(self.applied)
                self.reusable = False
                raise
            self.applied = dict(settings)
            if "readonly" in settings:
                self.reusable = False  # a readonly handle cannot SET its way back to default
        target = database or self.home_db
        if target != self.current_db:
            self.run(f"USE {_quote_identifier(target)}")
            self.current_db = target

    def execute(self, statement: Statement, params: dict[str, str], default_format: str) -> Result:
        started = time.perf_counter_ns()
        body = b""
        fmt: str | None = None
        if statement.insert_format is not None:
            summary = self._insert(statement)
        else:
            if default_format.lower() in _PYTHON_ONLY_FORMATS:
                message = f"Unknown format {default_format} (UNKNOWN_FORMAT)"
                raise ClickHouseError(UNKNOWN_FORMAT, message)
            result = self.run(statement.sql, default_format, params)
            body = result.bytes()
            summary = {
                "read_rows": str(result.storage_rows_read()),
                "read_bytes": str(result.storage_bytes_read()),
                "written_rows": str(result.rows_written()),
                "written_bytes": str(result.bytes_written()),
                "total_rows_to_read": str(result.storage_rows_read()),
                "result_rows": str(result.rows_read()),
                "result_bytes": str(len(body)),
            }
            if statement.produces_result or body:
                fmt = _output_format(statement.sql, default_format)
        summary["elapsed_ns"] = str(time.perf_counter_ns() - started)
        if statement.keyword == b"SET":
            self.applied = dict.fromkeys(self.applied)
        if statement.keyword == b"USE":
            self.current_db = self.home_db = (
                self.run("SELECT currentDatabase()").bytes().decode()[:-1]
            )
        if statement.leaves_state:
            self.reusable = False
        return Result(body=body, summary=summary, output_format=fmt)

    def _insert(self, statement: Statement) -> dict[str, str]:
        try:
            inserter = self.conn.send_insert(statement.sql, statement.insert_format)
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc
        try:
            pending = bytearray(statement.data_head)
            for chunk in statement.data_rest:
                pending.extend(chunk)
                if len(pending) >= _INSERT_APPEND_SIZE:
                    inserter.append(bytes(pending))
                    pending.clear()
            if pending:
                inserter.append(bytes(pending))
            written = inserter.finish()
        except Exception as exc:
            self._cancel(inserter)
            if isinstance(exc, (ClickHouseError, OSError)):
                raise  # a bad body or a lost client, not an engine error
            raise ClickHouseError.from_engine(exc) from exc
        return {
            "read_rows": "0",
            "read_bytes": "0",
            "written_rows": str(written.rows_written),
            "written_bytes": str(written.bytes_written),
            "total_rows_to_read": "0",
            "result_rows": str(written.rows_written),
            "result_bytes": str(written.bytes_written),
        }

    def _cancel(self, inserter: Any) -> None:
        try:
            inserter.cancel()
        except Exception:
            self.reusable = False
            logger.warning("cancelling a failed insert failed", exc_info=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class _Session:
    handle: _Handle
    timeout_s: float
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    expired: bool = False


@dataclass
class Request:
    """The parts of an HTTP request the engine needs."""

    params: dict[str, str]
    body: Iterable[bytes]
    content_type: str = ""
    content_encoding: str = ""


class Engine:
    """Owns the chDB directory: a handle per session_id and a pool of clean handles for the rest."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        try:
            # Kept open for the process lifetime: chDB stops its engine when the last handle closes.
            self._root = _connect(data_dir)
        except Exception as exc:
            raise RuntimeError(
                f"cannot open chDB data directory {data_dir}: {exc}. chDB allows one process per "
                "directory; is another server (or a chdb process) already using it?"
            ) from exc
        self.timezone = self._root.query("SELECT timezone()", "TabSeparated").bytes().decode()[:-1]
        self._lock = threading.Lock()
        self._idle: list[_Handle] = []
        self._sessions: dict[str, _Session] = {}
        self._last_sweep = time.monotonic()
        self._in_flight = 0
        self._drained = threading.Condition(self._lock)
        self._closed = False

    def execute(self, request: Request) -> Result:
        """Run one HTTP request's statement. Raises ClickHouseError for anything a client sees."""
        with self._tracked():
            params = dict(request.params)
            body: Iterable[bytes] = request.body
            if request.content_encoding and request.content_encoding != "identity":
                body = decompress_frames(body, request.content_encoding)
            if request.content_type.startswith("multipart/form-data"):
                params.update(parse_multipart(b"".join(body), request.content_type))
                body = ()
            if params.get("decompress") in {"1", "true"}:
                raise ClickHouseError(
                    NOT_IMPLEMENTED,
                    "decompress=1 (native compression) is not supported (NOT_IMPLEMENTED)",
                )
            binds = {key[6:]: value for key, value in params.items() if key.startswith("param_")}
            settings = {
                key: value
                for key, value in params.items()
                if not key.startswith("param_")
                and key not in _TRANSPORT_PARAMS
                and key not in _HTTP_ONLY_SETTINGS
            }
            for key in settings:
                if not _SETTING_NAME.match(key):
                    raise ClickHouseError(
                        UNKNOWN_SETTING, f"Unknown setting '{key}' (UNKNOWN_SETTING)"
                    )
            statement = read_statement(params.get("query", ""), body)
            if not statement.sql.strip() and statement.insert_format is None:
                raise ClickHouseError(
                    UNEXPECTED_END_OF_FILE, "Empty query (UNEXPECTED_END_OF_FILE)"
                )
            default_format = params.get("default_format") or _DEFAULT_FORMAT
            with self._checkout(params, settings) as handle:
                handle.prepare(settings, params.get("database") or None)
                return handle.execute(statement, binds, default_format)

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        with self._lock:
            if self._closed:
                raise ClickHouseError(STD_EXCEPTION, "Server is shutting down (STD_EXCEPTION)")
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1
                self._drained.notify_all()

    @contextlib.contextmanager
    def _checkout(self, params: dict[str, str], settings: dict[str, str]) -> Iterator[_Handle]:
        session_id = params.get("session_id")
        if not session_id:
            handle = self._take_idle(settings)
            try:
                yield handle
            finally:
                self._give_back(handle)
            return
        while True:
            session = self._session(session_id, params)
            if not session.lock.acquire(timeout=_SESSION_LOCK_WAIT_S):
                raise ClickHouseError(
                    SESSION_IS_LOCKED,
                    f"Session {session_id} is locked by a concurrent client. (SESSION_IS_LOCKED)",
                )
            if not session.expired:
                break
            session.lock.release()  # swept while this request waited: start a new session
        try:
            yield session.handle
        finally:
            session.last_used = time.monotonic()
            session.lock.release()

    def _open(self) -> _Handle:
        try:
            return _Handle(_connect(self.data_dir))
        except Exception as exc:
            raise ClickHouseError.from_engine(exc) from exc

    def _take_idle(self, settings: dict[str, str]) -> _Handle:
        with self._lock:
            # Clients repeat the same settings on every request: a handle that has them needs no SET
            for index in range(len(self._idle) - 1, -1, -1):
                if self._idle[index].applied == settings:
                    return self._idle.pop(index)
            if self._idle:
                return self._idle.pop()
        return self._open()

    def _give_back(self, handle: _Handle) -> None:
        with self._lock:
            if handle.reusable and not self._closed and len(self._idle) < _POOL_SIZE:
                self._idle.append(handle)
                return
        handle.close()

    def _session(self, session_id: str, params: dict[str, str]) -> _Session:
        try:
            timeout_s = float(params.get("session_timeout") or _DEFAULT_SESSION_TIMEOUT_S)
        except ValueError:
            timeout_s = _DEFAULT_SESSION_TIMEOUT_S
        timeout_s = min(max(timeout_s, 0.0), _MAX_SESSION_TIMEOUT_S)
        self._sweep_sessions()
        with self._lock:
            session = self._sessions.get(session_id)
            if session is not None:
                session.timeout_s = timeout_s
                session.last_used = time.monotonic()
                return session
            if params.get("session_check") in {"1", "true"}:
                raise ClickHouseError(
                    SESSION_NOT_FOUND, f"Session {session_id} not found (SESSION_NOT_FOUND)"
                )
        session = _Session(self._open(), timeout_s)
        with self._lock:
            existing = self._sessions.setdefault(session_id, session)
        if existing is not session:
            session.handle.close()
        return existing

    def _sweep_sessions(self) -> None:
        now = time.monotonic()
        expired: list[_Session] = []
        with self._lock:
            if now - self._last_sweep < _SESSION_SWEEP_INTERVAL_S:
                return
            self._last_sweep = now
            for session_id, session in list(self._sessions.items()):
                if session.last_used + session.timeout_s < now and session.lock.acquire(
                    blocking=False
                ):
                    del self._sessions[session_id]
                    expired.append(session)
        for session in expired:
            session.expired = True
            session.handle.close()
            session.lock.release()

    def close(self, timeout_s: float = _DRAIN_TIMEOUT_S) -> None:
        """Refuse new requests, wait for running ones (bounded), then close every chDB handle."""
        with self._lock:
            self._closed = True
            deadline = time.monotonic() + timeout_s
            while self._in_flight and time.monotonic() < deadline:
                self._drained.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._in_flight:
                logger.warning("closing chDB with %d requests still running", self._in_flight)
            handles = self._idle + [session.handle for session in self._sessions.values()]
            self._idle, self._sessions = [], {}
        for handle in handles:
            handle.close()
        with contextlib.suppress(Exception):
            self._root.close()


# --- HTTP -----------------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], engine: Engine) -> None:
        self.engine = engine
        super().__init__(address, _RequestHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, address = super().get_request()
        # Without it every response waits for the client's delayed ACK (>= 40 ms per request).
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-chDB-front"
    timeout = _SOCKET_TIMEOUT_S
    server: _HTTPServer

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        try:
            body = self._body()
        except ValueError:
            self.close_connection = True  # the body's end is unknown, so the next request's too
            self._send(400, {"Content-Type": "text/plain; charset=UTF-8"}, b"Bad Content-Length\n")
            return
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if url.path in {"/ping", "/replicas_status"} or (
            url.path == "/" and self.command == "GET" and "query" not in params
        ):
            self._drain(body)
            self._send(200, {"Content-Type": "text/html; charset=UTF-8"}, b"Ok.\n")
            return
        query_id = params.get("query_id") or str(uuid.uuid4())
        engine = self.server.engine
        headers = {
            "X-ClickHouse-Server-Display-Name": DISPLAY_NAME,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Timezone": engine.timezone,
        }
        if url.path != "/":
            self._drain(body)
            error = ClickHouseError(
                NOT_IMPLEMENTED, f"There is no handle {url.path} (NOT_IMPLEMENTED)"
            )
            self._send_error(404, error, headers)
            return
        request = Request(
            params=params,
            body=body,
            content_type=self.headers.get("Content-Type", ""),
            content_encoding=self.headers.get("Content-Encoding", "").strip().lower(),
        )
        try:
            result = engine.execute(request)
        except ClickHouseError as exc:
            logger.debug("query %s failed: %s", query_id, exc.message)
            self._drain(body)
            self._send_error(exc.http_status, exc, headers)
            return
        except ConnectionError:
            self.close_connection = True
            return
        except Exception as exc:
            logger.exception("query %s failed inside the server", query_id)
            self._drain(body)
            self._send_error(500, ClickHouseError.from_engine(exc), headers)
            return
        self._drain(body)
        headers["X-ClickHouse-Summary"] = json.dumps(result.summary, separators=(",", ":"))
        if result.output_format is not None:
            headers["X-ClickHouse-Format"] = result.output_format
            headers["Content-Type"] = _content_type(result.output_format)
        else:
            headers["Content-Type"] = "text/plain; charset=UTF-8"
        self._send(200, headers, result.body)

    def _body(self) -> RequestBody:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length = self.headers.get("Content-Length")
        return RequestBody(self.rfile, int(length) if length and not chunked else None, chunked)

    def _drain(self, body: RequestBody) -> None:
        try:
            body.drain()
        except Exception:
            self.close_connection = True

    def _send_error(self, status: int, error: ClickHouseError, headers: dict[str, str]) -> None:
        headers["X-ClickHouse-Exception-Code"] = str(error.code)
        headers["Content-Type"] = "text/plain; charset=UTF-8"
        self._send(status, headers, error.body())

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        # Values echo request parameters (query_id): no line breaks may reach the header block
        lines += [f"{name}: {_HEADER_BREAKS.sub(' ', value)}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close" if self.close_connection else "Connection: Keep-Alive")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        # One write: headers and body in separate segments cost a delayed-ACK round trip.
        self.wfile.write(head + body)


class ClickHouseFront:
    """The server as an object: bind in __init__, serve_forever() blocks, shutdown() stops it.

    Raises RuntimeError from __init__ if the chDB directory is in use by another process.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8123) -> None:
        self.engine = Engine(Path(data_dir))
        try:
            self._http = _HTTPServer((host, port), self.engine)
        except OSError as exc:
            self.engine.close()
            raise RuntimeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
        except BaseException:
            self.engine.close()
            raise
        self.host = host
        self.port: int = self._http.server_address[1]

    def serve_forever(self) -> None:
        self._http.serve_forever(poll_interval=0.2)

    def shutdown(self) -> None:
        """Stop serving; safe from any thread except the one running serve_forever()."""
        self._http.shutdown()

    def close(self) -> None:
        self._http.server_close()
        self.engine.close()

    def __enter__(self) -> ClickHouseFront:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def serve(
    data_dir: Path,
    host: str,
    port: int,
    *,
    on_ready: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Serve ClickHouse's HTTP interface over the chDB directory ``data_dir`` until stopped.

    Blocks. Stops when ``stop`` is set, or on SIGTERM/SIGINT when called from the main thread; then
    closes every chDB handle. ``on_ready(port)`` is called once requests are accepted (``port`` is
    the bound one, useful with port 0). Raises RuntimeError if the directory is in use.
    """
    with ClickHouseFront(data_dir, host, port) as front:

        def request_stop(*_: object) -> None:
            # shutdown() waits for serve_forever(), which runs in this thread: call it elsewhere
            threading.Thread(target=front.shutdown, daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, request_stop)
            signal.signal(signal.SIGINT, request_stop)
        if stop is not None:

            def stop_when_set() -> None:
                stop.wait()
                front.shutdown()

            threading.Thread(target=stop_when_set, daemon=True).start()
        if on_ready is not None:
            on_ready(front.port)
        front.serve_forever()


_PROJECT_ROOT = Path(__file__).resolve().parents[1]
_READY_LINE = re.compile(rb"^READY (\d+)$", re.M)


def start_subprocess(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout_s: float = 60.0,
    stderr_path: Path | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Run this server as a child process (``python -m deploy.clickhouse_http``) until READY.

    Returns the process and the port it serves on. Raises RuntimeError carrying the child's stderr
    if it exits or is not ready within ``timeout_s`` (the child is killed then). Stop it with
    stop_subprocess(); its stdout goes to an anonymous temporary file so it can never block.
    """
    command = [sys.executable, "-m", "deploy.clickhouse_http", "--data-dir", str(data_dir)]
    command += ["--host", host, "--port", str(port)]
    with contextlib.ExitStack() as files:
        stdout = files.enter_context(tempfile.TemporaryFile())
        if stderr_path is None:
            stderr = files.enter_context(tempfile.TemporaryFile())
        else:
            stderr = files.enter_context(stderr_path.open("w+b"))
        process = subprocess.Popen(command, cwd=_PROJECT_ROOT, stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + timeout_s
        while True:
            ready = _READY_LINE.search(os.pread(stdout.fileno(), 4096, 0))
            if ready:
                return process, int(ready.group(1))
            exited = process.poll() is not None
            if exited or time.monotonic() > deadline:
                if not exited:
                    stop_subprocess(process, timeout_s=5.0)
                log = os.pread(stderr.fileno(), 1 << 16, 0).decode(errors="replace").strip()
                state = f"exited with {process.returncode}" if exited else "was not ready"
                raise RuntimeError(
                    f"ClickHouse front on {data_dir} {state} after {timeout_s:.0f} s: {log}"
                )
            time.sleep(0.02)


def stop_subprocess(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM the server process, SIGKILL it after ``timeout_s``; returns its exit status.

    Waits for the exit, so the chDB directory is free for another process when this returns.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.clickhouse_http",
        description="ClickHouse HTTP interface over a chDB directory (dev/test only).",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="chDB data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8123, help="0 picks a free port")
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr)
    # chDB takes the process time zone; UTC makes it match the production server's setting.
    os.environ["TZ"] = "UTC"
    time.tzset()

    def announce(port: int) -> None:
        sys.stdout.write(f"READY {port}\n")
        sys.stdout.flush()

    try:
        serve(args.data_dir, args.host, args.port, on_ready=announce)
    except (RuntimeError, OSError) as exc:
        sys.stderr.write(f"clickhouse_http: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
