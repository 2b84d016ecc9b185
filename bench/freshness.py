"""Freshness of the live dashboard's data (issue #6): webhook accepted → visible.

Run against a running stack (`refstream up`; the usual `REFSTREAM_*` variables pick it)::

    .venv/bin/python -m bench.freshness [--orders 30] [--poll-ms 50]

Sets up a fresh company through the API (10 % program, three agents with links, a shop), opens
`GET /v1/live` as its owner, then sends orders one at a time through the ingress, each citing a
fresh referral click, exactly as shoppers and Shopify would. For each order it measures, from
the moment the ingress answered 200 (accepted = in Kafka):

- **SSE**: until the `conversion` event for that order arrives on the open stream;
- **analytics**: until `GET /v1/analytics/summary` (polled every `--poll-ms`) counts it;
- **sink → SSE**: from the sink's insert returning (`written_at` in the event) to its arrival,
  i.e. the fan-out's own share (Redis pub/sub + the API hub + HTTP).

The next order is sent once both saw the previous one, so the figures are per-event latency on
an otherwise idle pipeline. The dataflow's sink batching (`batch_timeout_seconds`, printed) is
adaptive by default (0: each scheduling pass's rows written at its end); with a timeout, much of
the accepted → visible time is that wait. Prints
p50/p90/p99 and max; asserts nothing (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import inspect
import queue
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from dataflows.attribution.flow import build
from schemas.settings import Settings
from tests.browser.traffic import (
    PASSWORD,
    api_url,
    click,
    ingest_url,
    order,
    set_up_company,
    wait_for_links,
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


Arrival = tuple[float, datetime, dict[str, Any]]  # monotonic time, wall time, conversion


def listen(url: str, token: str, events: queue.Queue[Arrival],
           ready: threading.Event, stop: threading.Event) -> None:  # fmt: skip
    """Reads the SSE stream; puts an `Arrival` for every conversion event."""
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as client,
        client.stream("GET", f"{url}/v1/live", headers=headers) as response,
    ):
        response.raise_for_status()
        event = ""
        for line in response.iter_lines():
            if stop.is_set():
                return
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "ready":
                    ready.set()
                elif event == "conversion":
                    events.put((time.monotonic(), datetime.now(UTC), orjson.loads(line[6:])))
            elif not line:
                event = ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=30)
    parser.add_argument("--poll-ms", type=int, default=50)
    parser.add_argument("--timeout", type=float, default=30, help="per order, seconds")
    args = parser.parse_args(argv)
    settings = Settings()
    api, ingress_base = api_url(settings), ingest_url(settings)
    try:
        httpx.get(f"{api}/healthz", timeout=2).raise_for_status()
        httpx.get(f"{ingress_base}/healthz", timeout=2).raise_for_status()
    except httpx.HTTPError as exc:
        print(f"the stack is not running ({exc}); start it with `refstream up`", file=sys.stderr)
        return 1

    shop = set_up_company(settings)
    with httpx.Client(base_url=api, timeout=10) as client:
        token = client.post("/v1/auth/login", json={
            "company": shop.slug, "email": shop.owner_email, "password": PASSWORD,
        }).json()["access_token"]  # fmt: skip
    events: queue.Queue[Arrival] = queue.Queue()
    ready, stop = threading.Event(), threading.Event()
    threading.Thread(target=listen, args=(api, token, events, ready, stop), daemon=True).start()
    if not ready.wait(10):
        print("no `ready` event from /v1/live", file=sys.stderr)
        return 1

    to_sse, to_analytics, fanout = [], [], []
    first_order = int(time.time() * 1000)
    poll = args.poll_ms / 1000
    with (
        httpx.Client(base_url=ingress_base, timeout=10) as ingress,
        httpx.Client(
            base_url=api, timeout=10, headers={"Authorization": f"Bearer {token}"}
        ) as reader,
    ):
        wait_for_links(ingress, shop)
        for n in range(args.orders):
            click_id = click(ingress, shop.links[n % len(shop.links)], f"bench visitor {n}")
            name = order(ingress, shop, first_order + n, click_id, "100.00")
            accepted = time.monotonic()
            deadline = accepted + args.timeout
            seen_analytics = seen_sse = None
            while (seen_analytics is None or seen_sse is None) and time.monotonic() < deadline:
                if seen_analytics is None:
                    summary = reader.get("/v1/analytics/summary").json()
                    if summary["conversions"] >= n + 1:
                        seen_analytics = time.monotonic()
                while seen_sse is None:
                    try:
                        arrived, wall, conversion = events.get_nowait()
                    except queue.Empty:
                        break
                    if conversion["order"] == name:
                        seen_sse = arrived
                        written = datetime.fromisoformat(conversion["written_at"])
                        fanout.append((wall - written).total_seconds())
                time.sleep(poll)
            if seen_sse is None or seen_analytics is None:
                seen = (("sse", seen_sse), ("analytics", seen_analytics))
                missing = [k for k, v in seen if v is None]
                print(f"order {name}: not seen within {args.timeout}s by {', '.join(missing)}")
                continue
            to_sse.append(seen_sse - accepted)
            to_analytics.append(seen_analytics - accepted)
    stop.set()

    batch_timeout = inspect.signature(build).parameters["batch_timeout_seconds"].default
    print(f"freshness over {len(to_sse)} orders (one at a time; analytics polled every "
          f"{args.poll_ms} ms; sink batch timeout {batch_timeout} s by default,"
          " 0 = adaptive)")  # fmt: skip
    print(f"{'path':<32}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, values in (("accepted → SSE event", to_sse),
                          ("accepted → /v1/analytics", to_analytics),
                          ("sink insert → SSE event", fanout)):  # fmt: skip
        if values:
            cells = [percentile(values, p) for p in (50, 90, 99)] + [max(values)]
            print(f"{label:<32}" + "".join(f"{v * 1000:>7.0f}ms" for v in cells))
    if to_sse:
        print(f"mean accepted → SSE {statistics.mean(to_sse) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
