"""PostgreSQL sink of collection membership changes from Shopify's webhooks (`dataflows.catalog`):
one transaction per batch, each change an upsert into `shop_collections`. The title follows the
newest change carrying one, the products the newest change carrying them (each by its source
time), and a delete is final for webhooks; so retried, duplicated or reordered deliveries
converge on the same row. A
shop removed meanwhile is skipped (its collections went with it)."""

from __future__ import annotations

from typing import Any

import psycopg
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from dataflows.catalog import CollectionChange
from dataflows.sinks.postgres import is_unavailable
from dataflows.sinks.retry import with_retries

CatalogBatch = tuple[str, list[CollectionChange]]  # (tenant, changes)

UPSERT = """
INSERT INTO shop_collections AS c (tenant_id, shop, collection_id, title, product_ids, deleted,
                                   source, changed_at, products_changed_at)
SELECT %(tenant)s, domain, %(collection)s, %(title)s, %(products)s, %(deleted)s, 'webhook',
       -- a change without a title dates no title: any titled change, however old, may set it
       CASE WHEN %(title)s::text IS NULL AND NOT %(deleted)s THEN 'epoch' ELSE %(changed_at)s END,
       CASE WHEN %(products)s::text[] IS NULL THEN NULL ELSE %(changed_at)s END
FROM shops WHERE domain = %(shop)s AND tenant_id = %(tenant)s
ON CONFLICT (shop, collection_id) DO UPDATE SET
    title = CASE WHEN EXCLUDED.title IS NOT NULL AND EXCLUDED.changed_at >= c.changed_at
                 THEN EXCLUDED.title ELSE c.title END,
    changed_at = CASE WHEN EXCLUDED.title IS NOT NULL OR EXCLUDED.deleted
                      THEN GREATEST(c.changed_at, EXCLUDED.changed_at) ELSE c.changed_at END,
    product_ids = CASE
        WHEN EXCLUDED.deleted THEN NULL
        WHEN EXCLUDED.product_ids IS NOT NULL
             AND EXCLUDED.changed_at >= COALESCE(c.products_changed_at, '-infinity')
        THEN EXCLUDED.product_ids
        ELSE c.product_ids END,
    products_changed_at = GREATEST(c.products_changed_at, EXCLUDED.products_changed_at),
    deleted = EXCLUDED.deleted,
    source = 'webhook',
    updated_at = now()
WHERE c.tenant_id = EXCLUDED.tenant_id AND NOT c.deleted
"""


def upsert_params(change: CollectionChange) -> dict[str, Any]:
    return {
        "tenant": change.tenant_id,
        "shop": change.shop,
        "collection": change.collection_id,
        "title": change.title,
        "products": list(change.product_ids) if change.product_ids is not None else None,
        "deleted": change.deleted,
        "changed_at": change.changed_at,
    }


def write_changes(conn: psycopg.Connection[Any], changes: list[CollectionChange]) -> None:
    with conn.transaction(), conn.cursor() as cursor:
        cursor.executemany(UPSERT, [upsert_params(c) for c in changes])


class _Partition(StatelessSinkPartition[CatalogBatch]):
    def __init__(self, postgres_url: str) -> None:
        self._url = postgres_url
        self._conn = with_retries(self._connect, is_unavailable, store="postgres")

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=5)

    def _reconnect(self) -> None:
        self._conn.close()
        self._conn = self._connect()

    def write_batch(self, items: list[CatalogBatch]) -> None:
        changes = [change for _, batch in items for change in batch]
        with_retries(lambda: write_changes(self._conn, changes), is_unavailable,
                     store="postgres", recover=self._reconnect)  # fmt: skip

    def close(self) -> None:
        self._conn.close()


class CatalogSink(DynamicSink[CatalogBatch]):
    """Writes keyed batches of collection changes to `shop_collections`; one connection per
    worker."""

    def __init__(self, postgres_url: str) -> None:
        self._url = postgres_url

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
        return _Partition(self._url)
