"""Collection membership applied to an order: which collections each line's product belongs to.

Shopify order lines name products, not collections; commission rules may name collections
(`CommissionRuleSet.collection_rates`). The membership (product id → collection ids, per shop)
is configuration, kept in PostgreSQL from Shopify's collection webhooks and the backfill API,
and read through `TenantConfig.product_collections`.

The rule: membership *at decision time*. A line's collections are those its product belongs to
when the dataflow decides the order (its first event). An edit keeps the decided collections of
the lines it already had (same line id and product) and gives a new line the membership of the
edit's time. A later change of membership is never retroactive: entries already written stay,
and a re-delivered or unchanged order is not repriced; a replay applies the membership of the
day it runs.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from schemas.conversion import Conversion, ConversionLine


def with_collections(
    conversion: Conversion,
    membership: Mapping[str, tuple[str, ...]],
    *,
    decided: Conversion | None = None,
) -> Conversion:
    """`conversion` with each line's `collection_ids` set: from `decided` (the order as it was
    decided) for a line with the same id and product there, else from `membership` (product id
    → collection ids); a line without a product, or in no known collection, keeps what it
    carries. Returns `conversion` itself when nothing changes."""
    before = {line.line_id: line for line in decided.lines} if decided is not None else {}
    lines = tuple(_line(line, membership, before.get(line.line_id)) for line in conversion.lines)
    if all(new is old for new, old in zip(lines, conversion.lines, strict=True)):
        return conversion
    return msgspec.structs.replace(conversion, lines=lines)


def _line(
    line: ConversionLine,
    membership: Mapping[str, tuple[str, ...]],
    decided: ConversionLine | None,
) -> ConversionLine:
    if decided is not None and decided.product_id == line.product_id:
        known = decided.collection_ids
    elif line.product_id is not None:
        known = membership.get(line.product_id, ())
    else:
        known = ()
    if not known or known == line.collection_ids:
        return line
    return msgspec.structs.replace(line, collection_ids=known)
