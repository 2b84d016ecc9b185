"""The redaction job: finds the archived `customers/redact` and `shop/redact` requests not yet
carried out, erases what they cover and records each in PostgreSQL (`redactions`).

Why a job over the archive (`refstream redact run`, every hour under `refstream up`) rather than
a consumer of the compliance topic: the dataflow already archives every envelope of
`refstream.gdpr` into `raw_events`, so the archive is a durable queue that needs no Kafka
position, survives the job being down for days (Shopify allows 30 days) and can be re-run
after a failure: every step is idempotent (masking a masked body changes nothing) and a request
is recorded only when all its steps are done.

In ClickHouse, `raw_events` is a ReplacingMergeTree keyed by (tenant, source, event id): each
affected event is written again with its body masked and a newer `archived_at`, then the older
versions are deleted (a synchronous mutation), so no query, with or without FINAL, sees the
personal data afterwards. In `clicks` the personal columns (IP hash, user agent, visitor id,
referrer) are set to NULL by a synchronous `ALTER TABLE … UPDATE`; amounts, ids and keys are
never touched, so revenue and commission totals stay as they were.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import clickhouse_connect
import orjson
import psycopg
import structlog
from clickhouse_connect.driver.client import Client

from api.redaction import plan
from api.redaction.plan import ArchivedEvent, RedactRequest
from schemas.settings import Settings

log = structlog.get_logger(__name__)

# Statements may list a whole shop's ids: allow them past the default 256 KiB.
_LARGE = {"max_query_size": 1 << 28}
_SYNC = {**_LARGE, "mutations_sync": 2}
_MS = "%Y-%m-%d %H:%M:%S.%f"
# Parameters are bound in the client (`%(name)s`): the statement, sent as the request body,
# may list thousands of ids (a shop's events), which as server-side parameters would go into
# the URL and exceed its limit.
_KINDS = sorted(plan.ORDER_KINDS | plan.CUSTOMER_KINDS | plan.COMPLIANCE_KINDS)

_RECORD = """
INSERT INTO redactions (tenant_id, request_event_id, kind, shop, customer_ref, requested_at,
                        done_at, raw_events, clicks, exceptions)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (tenant_id, request_event_id) DO NOTHING
"""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request erased: events rewritten in `raw_events`, rows masked in `clicks`,
    letters rewritten in the exceptions inbox."""

    request: RedactRequest
    raw_events: int
    clicks: int
    exceptions: int = 0


def _body(text: str, encoding: str) -> bytes:
    return base64.b64decode(text) if encoding == "base64" else text.encode()


def pending(client: Client, conn: psycopg.Connection[Any]) -> list[RedactRequest]:
    """The archived redaction requests that `redactions` does not record as done, oldest first.
    A request whose body is not the documented shape is logged and left out."""
    done = {
        (tenant, event)
        for tenant, event in conn.execute(
            "SELECT tenant_id, request_event_id FROM redactions"
        ).fetchall()
    }
    rows = client.query(
        "SELECT tenant_id, shop, kind, event_id, received_at, body, body_encoding "
        "FROM raw_events FINAL WHERE kind IN %(kinds)s ORDER BY received_at",
        parameters={"kinds": list(plan.REDACT_KINDS)},
        settings=_LARGE,
    ).result_rows
    requests = []
    for tenant, shop, kind, event_id, received, body, encoding in rows:
        if (tenant, event_id) in done:
            continue
        try:
            request = plan.request_from_body(
                tenant_id=tenant, shop=shop, kind=kind, event_id=event_id,
                requested_at=received.replace(tzinfo=UTC), body=_body(body, encoding),
            )  # fmt: skip
        except plan.RequestError as exc:
            log.warning("redaction_request_unreadable", event_id=event_id, reason=str(exc))
            continue
        requests.append(request)
    return requests


def _events(client: Client, where: str, parameters: dict[str, Any]) -> list[ArchivedEvent]:
    rows = client.query(
        "SELECT source, kind, event_id, body, body_encoding FROM raw_events FINAL "
        f"WHERE tenant_id = %(tenant)s AND ({where})",
        parameters=parameters,
        settings=_LARGE,
    ).result_rows
    return [ArchivedEvent(s, k, e, _body(b, enc)) for s, k, e, b, enc in rows]


def _click_ids(client: Client, tenant: str, orders: Sequence[str]) -> frozenset[str]:
    rows = client.query(
        "SELECT DISTINCT click_id FROM conversions FINAL WHERE tenant_id = %(tenant)s "
        "AND order_id IN %(orders)s AND click_id IS NOT NULL",
        parameters={"tenant": tenant, "orders": list(orders)},
        settings=_LARGE,
    ).result_rows
    return frozenset(row[0] for row in rows)


def covered(client: Client, request: RedactRequest) -> tuple[list[ArchivedEvent], frozenset[str]]:
    """The archived events the request covers and the click ids of its orders' conversions.

    The shop's events are narrowed in ClickHouse by the customer's id, email and orders read
    from the JSON bodies (a superset), then decided exactly by `plan.affected` on the parsed
    body (a body ClickHouse cannot read, base64, is always a candidate)."""
    base = {"tenant": request.tenant_id, "shop": request.shop}
    if request.kind == "shop/redact":
        rows = client.query(
            "SELECT DISTINCT click_id FROM conversions FINAL WHERE tenant_id = %(tenant)s "
            "AND shop = %(shop)s AND click_id IS NOT NULL",
            parameters=base,
        ).result_rows
        shop_clicks = frozenset(row[0] for row in rows)
        events = _events(
            client,
            "shop = %(shop)s OR (kind = 'click' AND event_id IN %(ids)s)",
            {**base, "ids": sorted(shop_clicks)},
        )
        return events, shop_clicks
    candidates = _events(
        client,
        "shop = %(shop)s AND kind IN %(kinds)s AND (body_encoding = 'base64' "
        "OR JSONExtractUInt(body, 'customer', 'id') = %(customer)s "
        "OR (kind = 'customers/create' AND JSONExtractUInt(body, 'id') = %(customer)s) "
        "OR lower(JSONExtractString(body, 'email')) = %(email)s "
        "OR lower(JSONExtractString(body, 'contact_email')) = %(email)s "
        "OR toString(JSONExtractUInt(body, 'id')) IN %(orders)s "
        "OR toString(JSONExtractUInt(body, 'order_edit', 'order_id')) IN %(orders)s)",
        {**base, "kinds": _KINDS, "customer": request.customer_id,
         "email": (request.email or "").strip().lower() or "\x00",
         "orders": sorted(request.orders)},
    )  # fmt: skip
    orders = sorted(plan.affected_orders(request, candidates))
    refunds = _events(
        client,
        "shop = %(shop)s AND kind IN %(kinds)s AND (body_encoding = 'base64' "
        "OR toString(JSONExtractUInt(body, 'order_id')) IN %(orders)s)",
        {**base, "kinds": sorted(plan.REFUND_KINDS), "orders": orders},
    )
    clicks = _click_ids(client, request.tenant_id, orders)
    click_events = _events(
        client,
        "kind = 'click' AND event_id IN %(ids)s",
        {**base, "ids": sorted(clicks)},
    )
    order_set = frozenset(orders)
    chosen = [
        e
        for e in [*candidates, *refunds, *click_events]
        if plan.affected(request, e, order_set, clicks)
    ]
    return chosen, clicks


def _rewrite(client: Client, request: RedactRequest, events: Sequence[ArchivedEvent]) -> int:
    """Write each event again with its body masked, then delete its older versions."""
    if not events:
        return 0
    keys = sorted({f"{e.source}\x00{e.event_id}" for e in events})
    masked = {f"{e.source}\x00{e.event_id}": plan.masked_body(e.body) for e in events}
    result = client.query(
        "SELECT * FROM raw_events FINAL WHERE tenant_id = %(tenant)s "
        "AND concat(source, '\\0', event_id) IN %(keys)s",
        parameters={"tenant": request.tenant_id, "keys": keys},
        query_formats={"FixedString": "string"},
        settings=_LARGE,
    )
    columns = list(result.column_names)
    now = datetime.now(UTC)
    cut = now.replace(microsecond=now.microsecond // 1000 * 1000)  # DateTime64(3)
    rows = []
    for row in result.result_rows:
        record = dict(zip(columns, row, strict=True))
        body = masked[f"{record['source']}\x00{record['event_id']}"]
        record.update(
            body=body.decode(), body_encoding="utf-8", archived_at=cut,
            body_sha256=hashlib.sha256(body).hexdigest(),
        )  # fmt: skip
        rows.append([record[c] for c in columns])
    client.insert("raw_events", rows, column_names=columns)
    client.command(
        "ALTER TABLE raw_events DELETE WHERE tenant_id = %(tenant)s "
        "AND concat(source, '\\0', event_id) IN %(keys)s "
        "AND archived_at < toDateTime64(%(cut)s, 3, 'UTC')",
        parameters={"tenant": request.tenant_id, "keys": keys, "cut": cut.strftime(_MS)},
        settings=_SYNC,
    )
    return len(rows)


def _mask_clicks(client: Client, request: RedactRequest, clicks: frozenset[str]) -> int:
    """NULL the personal columns of the covered clicks (all the shop's for `shop/redact`)."""
    where = "tenant_id = %(tenant)s AND (click_id IN %(ids)s"
    if request.kind == "shop/redact":
        where += " OR shop = %(shop)s"
    where += ")"
    parameters = {"tenant": request.tenant_id, "shop": request.shop, "ids": sorted(clicks)}
    count = client.query(
        f"SELECT count() FROM clicks WHERE {where} AND (ip_hash IS NOT NULL OR "
        "user_agent IS NOT NULL OR visitor_id IS NOT NULL OR referrer IS NOT NULL)",
        parameters=parameters,
        settings=_LARGE,
    ).result_rows[0][0]
    if count:
        client.command(
            "ALTER TABLE clicks UPDATE ip_hash = NULL, user_agent = NULL, visitor_id = NULL, "
            f"referrer = NULL WHERE {where}",
            parameters=parameters,
            settings=_SYNC,
        )
    return int(count)


def _mask_letters(
    conn: psycopg.Connection[Any],
    request: RedactRequest,
    orders: frozenset[str],
    clicks: frozenset[str],
) -> int:
    """Rewrite the exceptions-inbox letters that hold the request's personal data, inside the
    caller's transaction (declared a redaction: the inbox's trigger allows only that)."""
    where = "shop = %s" if request.kind == "shop/redact" else "(shop = %s OR shop IS NULL)"
    rows = conn.execute(
        f"SELECT id, event FROM exceptions WHERE tenant_id = %s AND {where} AND event IS NOT NULL",
        (request.tenant_id, request.shop),
    ).fetchall()
    changed = []
    for exception_id, event in rows:
        masked = plan.masked_letter(request, event, orders, clicks)
        if masked is not None and masked != event:
            changed.append((orjson.dumps(masked).decode(), exception_id))
    if changed:
        conn.execute("SET LOCAL refstream.redaction = 'on'")
        with conn.cursor() as cursor:
            cursor.executemany(
                "UPDATE exceptions SET event = %s::jsonb, raw = NULL WHERE id = %s", changed
            )
    return len(changed)


def execute(
    client: Client, conn: psycopg.Connection[Any], request: RedactRequest, key: bytes
) -> Outcome:
    """Carry out one request and record it (the record holds counts and a keyed hash of the
    customer, never the data). Safe to repeat: a crash before the record redoes it all."""
    events, clicks = covered(client, request)
    orders = frozenset(plan.affected_orders(request, events))
    rewritten = _rewrite(client, request, events)
    masked_clicks = _mask_clicks(client, request, clicks)
    ref = (
        plan.customer_ref(key, request.tenant_id, request.shop, request.customer_id)
        if request.customer_id is not None
        else None
    )
    conn.commit()  # end the reads' implicit transaction: the record commits on its own
    with conn.transaction():
        letters = _mask_letters(conn, request, orders, clicks)
        conn.execute(
            _RECORD,
            (request.tenant_id, request.event_id, request.kind, request.shop, ref,
             request.requested_at, datetime.now(UTC), rewritten, masked_clicks, letters),
        )  # fmt: skip
    log.info(
        "redaction_done", tenant_id=request.tenant_id, kind=request.kind,
        request_event_id=request.event_id, raw_events=rewritten, clicks=masked_clicks,
        exceptions=letters,
    )  # fmt: skip
    return Outcome(request, rewritten, masked_clicks, letters)


class RequestsFailed(RuntimeError):
    """Some requests could not be carried out (each is logged); the others were."""

    def __init__(self, outcomes: list[Outcome], failed: list[RedactRequest]) -> None:
        super().__init__(", ".join(f"{r.kind} {r.event_id} ({r.tenant_id})" for r in failed))
        self.outcomes = outcomes
        self.failed = failed


def run(client: Client, conn: psycopg.Connection[Any], key: bytes) -> list[Outcome]:
    """Carry out every pending request, oldest first. A request that fails does not hold up the
    others: it stays pending (tried again on the next run) and `RequestsFailed` names it once
    the rest are done."""
    outcomes, failed = [], []
    for request in pending(client, conn):
        try:
            outcomes.append(execute(client, conn, request, key))
        except Exception:  # any store error: the next run tries again
            log.exception(
                "redaction_failed", tenant_id=request.tenant_id, kind=request.kind,
                request_event_id=request.event_id,
            )  # fmt: skip
            conn.rollback()
            failed.append(request)
    if failed:
        raise RequestsFailed(outcomes, failed)
    return outcomes


def key_of(settings: Settings) -> bytes:
    """The HMAC key of customer references: `redaction_key`, else the JWT secret."""
    secret = settings.redaction_key or settings.jwt_secret
    return secret.get_secret_value().encode()


def run_once(settings: Settings) -> list[Outcome]:
    """One pass of the job against the configured ClickHouse and PostgreSQL."""
    target = settings.clickhouse
    client = clickhouse_connect.get_client(
        host=target.host, port=target.port, username=target.username,
        password=target.password, database=target.database, secure=target.secure,
        send_receive_timeout=3600,
    )  # fmt: skip
    try:
        with psycopg.connect(settings.postgres_url) as conn:
            return run(client, conn, key_of(settings))
    finally:
        client.close()
