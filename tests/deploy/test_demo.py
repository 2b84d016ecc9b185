"""The live trickle's choice of the next event (pure; the trickle itself runs in test_stack)."""

from __future__ import annotations

import random

from deploy.demo import _live_kind


def test_live_trickle_refunds_and_invoices_only_what_it_sent() -> None:
    rng = random.Random(1)
    first = {_live_kind(rng, has_orders=False, has_referred=False) for _ in range(500)}
    assert first == {"click", "order"}
    later = {_live_kind(rng, has_orders=True, has_referred=True) for _ in range(500)}
    assert later == {"click", "order", "refund", "invoice"}
