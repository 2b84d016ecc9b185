"""The API's ClickHouse connection (analytics reads), opened and closed by the app's lifespan.

clickhouse-connect's synchronous client is shared by every request (no session id, so queries run
concurrently) and called from worker threads, so a slow query never blocks the event loop. The
API starts even when ClickHouse is down: the client is (re)opened on first use, and until it can
be, analytics answers 503 `analytics-unavailable` while the rest of the API keeps working.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import clickhouse_connect
from anyio import to_thread
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError
from fastapi import Depends, Request

from api.errors import RefstreamError
from schemas.settings import Settings

# Every analytics query is bounded on the server too (seconds).
MAX_EXECUTION_SECONDS = 10


class AnalyticsUnavailable(RefstreamError):
    status_code = 503
    type = "analytics-unavailable"
    title = "Analytics store unavailable"


class ClickHouseReader:
    """Runs read queries with server-side parameters (`{name:Type}`) and returns result rows."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()

    def _connect(self) -> Client:
        target = self._settings.clickhouse
        return clickhouse_connect.get_client(
            host=target.host, port=target.port, username=target.username,
            password=target.password, database=target.database, secure=target.secure,
            autogenerate_session_id=False, connect_timeout=5, send_receive_timeout=30,
            settings={"max_execution_time": MAX_EXECUTION_SECONDS},
        )  # fmt: skip

    def client(self) -> Client:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            return self._client

    def open(self) -> bool:
        """Connect now; False (and retry on first use) if ClickHouse does not answer."""
        try:
            self.client()
        except Exception:  # any connection failure: the API still starts
            return False
        return True

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def rows(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """Blocking: the result rows of `sql`; `AnalyticsUnavailable` if ClickHouse cannot be
        reached (any other ClickHouse error is a bug and stays a 500)."""
        try:
            return self.client().query(sql, parameters=dict(parameters)).result_rows
        except (OperationalError, OSError) as exc:
            raise AnalyticsUnavailable("ClickHouse is unreachable.") from exc

    async def query(self, sql: str, parameters: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`rows` in a worker thread."""
        return await to_thread.run_sync(self.rows, sql, parameters)


def get_clickhouse(request: Request) -> ClickHouseReader:
    reader: ClickHouseReader = request.app.state.clickhouse
    return reader


ClickHouse = Annotated[ClickHouseReader, Depends(get_clickhouse)]
