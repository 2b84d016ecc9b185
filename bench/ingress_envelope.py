"""In process: what the webhook's envelope costs the ingress in each wire form.

`python -m bench.ingress_envelope` times `ingest.shopify.envelope_parts` (the hot path's key,
envelope and event id) on the two bodies `bench.ingress` sends (its templates, re-serialised by
orjson as it does), in wire form 1 (the body escaped into a JSON string) and form 2 (the body
embedded as JSON), and the body's SHA-256 alone (`payload_ref`, which both forms keep). Best
of 9 repeats, so a busy machine inflates the figures less than it does `bench.ingress`'s.
"""

from __future__ import annotations

import os
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from bench.ingress import FIXTURES, TEMPLATES
from ingest import shopify
from schemas.ids import body_sha256

RECEIVED = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)


def best_us(fn: Callable[[], object], number: int = 3000, repeat: int = 9) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def measure(name: str, topic: str) -> str:
    template = orjson.loads((FIXTURES / name).read_bytes())
    body = orjson.dumps({**template, "id": 820_000_000_001})
    headers = shopify.ShopifyHeaders.read(
        {"x-shopify-topic": topic, "x-shopify-shop-domain": "s.myshopify.com",
         "x-shopify-event-id": "ev-1", "x-shopify-webhook-id": "wh-1"}
    )  # fmt: skip
    facts, is_json = shopify.read(topic, body)
    assert is_json, name

    def parts(form2: bool) -> Callable[[], object]:
        return lambda: shopify.envelope_parts(
            body, headers, facts, "t_1", RECEIVED, body_is_json=form2
        )

    one, two = best_us(parts(False)), best_us(parts(True))
    sha = best_us(lambda: body_sha256(body))
    return (
        f"{name} ({len(body):,} B): envelope_parts form 1 {one:.1f} µs, form 2 {two:.1f} µs "
        f"({one - two:.1f} µs less); the body's SHA-256 alone {sha:.1f} µs"
    )


def main() -> None:
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, topic in TEMPLATES:
        print(measure(name, topic))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
