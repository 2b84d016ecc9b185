"""`bench.dataflow --tenants N`: the input of one plan of the totals, split over N tenants."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import orjson
import pytest

from bench.dataflow import Plan, Tenants
from tests.dataflows.builders import new_tenant

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def _tenant_of(value: bytes) -> str:
    return str(orjson.loads(value)["tenant_id"])


def test_every_tenant_gets_its_share_of_each_stream_interleaved() -> None:
    tenants = [new_tenant() for _ in range(4)]
    split = Tenants.split(tenants, clicks=400, orders=40, refund_share=0.5, base=BASE)
    assert (split.clicks, split.orders) == (400, 40)
    assert split.tenant_ids == tuple(t.tenant_id for t in tenants)

    clicks = [split.click_bytes(i)[1] for i in range(split.clicks)]
    assert len(set(clicks)) == 400  # no click twice
    owners = [_tenant_of(v) for v in clicks]
    assert Counter(owners) == {t.tenant_id: 100 for t in tenants}
    assert owners[:4] == [t.tenant_id for t in tenants]  # round robin, not tenant after tenant

    messages = list(split.order_messages())
    per_plan = [list(p.order_messages()) for p in split.plans]
    # (each message's event id is fresh: compare topics and keys, tenant:order id)
    assert sorted(m[:2] for m in messages) == sorted(m[:2] for plan in per_plan for m in plan)
    assert len(messages) == split.orders + split.refunds
    assert [_tenant_of(v) for _, _, v in messages[:4]] == [t.tenant_id for t in tenants]


def test_the_expected_ledger_is_the_sum_of_the_tenants() -> None:
    tenants = [new_tenant() for _ in range(3)]
    split = Tenants.split(tenants, clicks=300, orders=30, refund_share=0.2, base=BASE)
    rows, totals = split.expected_ledger()
    singles = [Plan(t, 100, 10, 0.2, BASE).expected_ledger() for t in tenants]
    assert rows == sum(n for n, _ in singles)
    assert totals == {a: v for _, per_agent in singles for a, v in per_agent.items()}
    assert len({a.split("_")[-1] for a in totals}) == 3  # each tenant's own agents


def test_totals_must_split_evenly() -> None:
    with pytest.raises(SystemExit, match="multiples of --tenants"):
        Tenants.split([new_tenant() for _ in range(3)], 100, 30, 0.1, BASE)
