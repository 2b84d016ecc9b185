"""Riding out a store's outage inside a sink: retry the same write with backoff.

A sink whose store is briefly unreachable (restarted, failing over, a network blip) blocks and
retries the same batch instead of failing the flow: bytewax then stops pulling input (Kafka
keeps it), nothing is acknowledged that was not written, and the writes are idempotent, so a
retry of a write that did land changes nothing. Past `max_wait_s` of one outage the error
propagates: the flow stops and resumes from its last snapshot when restarted (at-least-once,
as after a crash). Only connection-type errors are retried; content errors are the row
isolation's business (`deadletter.isolate`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")

MAX_WAIT_S = 300.0  # one outage: longer, and the flow stops (its supervisor restarts it)


def with_retries(
    write: Callable[[], T],
    is_transient: Callable[[BaseException], bool],
    *,
    store: str,
    recover: Callable[[], None] = lambda: None,
    max_wait_s: float = MAX_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`write()`, retried after transient errors with exponential backoff (0.2 s doubling to
    5 s) for up to `max_wait_s`; `recover()` runs before each retry (e.g. reconnect)."""
    started, delay, attempt = clock(), 0.2, 0
    while True:
        try:
            return write()
        except Exception as exc:
            if not is_transient(exc) or clock() - started >= max_wait_s:
                raise
            attempt += 1
            log.warning("sink_store_unavailable", store=store, attempt=attempt,
                        error=str(exc)[:300], retry_in_s=delay)  # fmt: skip
            sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                recover()
            except Exception as again:  # still down: the next attempt reports it
                log.warning("sink_store_recover_failed", store=store, error=str(again)[:300])
