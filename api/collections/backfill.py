"""The backfill file of `refstream shop collections import FILE.json`, as the bulk body of
`PUT /v1/shops/{domain}/collections`. Two shapes are accepted:

- the API's own body: `{"collections": [{"id": "841564295", "title": "IPods",
  "product_ids": ["632910392"]}]}`;
- Shopify's Admin API `GET /collects.json` response (custom collections: product/collection
  pairs): `{"collects": [{"collection_id": 841564295, "product_id": 632910392}, …]}`, grouped
  here by collection. Each listed collection's membership is replaced; others are untouched.
"""

from __future__ import annotations

from typing import Any

import httpx

from api.collections.schemas import CollectionImport


class BackfillError(ValueError):
    """The file is neither shape; the message says what is wrong."""


def import_body(document: Any) -> CollectionImport:
    """The bulk body for `document` (parsed JSON); `BackfillError` for anything else."""
    if not isinstance(document, dict) or not ({"collections", "collects"} & set(document)):
        raise BackfillError('expected an object with "collections" or "collects"')
    if "collects" in document:
        grouped: dict[str, list[str]] = {}
        for collect in document["collects"]:
            if not isinstance(collect, dict) or not {"collection_id", "product_id"} <= set(collect):
                raise BackfillError(f"a collect needs collection_id and product_id: {collect!r}")
            products = grouped.setdefault(str(collect["collection_id"]), [])
            products.append(str(collect["product_id"]))
        document = {
            "collections": [{"id": c, "product_ids": p} for c, p in sorted(grouped.items())]
        }
    try:
        return CollectionImport.model_validate(document)
    except ValueError as exc:
        raise BackfillError(str(exc)) from exc


async def send(client: httpx.AsyncClient, shop: str, body: CollectionImport) -> httpx.Response:
    """`PUT /v1/shops/{shop}/collections` with `body` (the client carries the credentials)."""
    return await client.put(
        f"/v1/shops/{shop}/collections", json=body.model_dump(mode="json", exclude_none=True)
    )
