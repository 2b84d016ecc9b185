"""Scale-out: the dataflow as two bytewax processes (`-i 0/1 -a …`, one worker each) over
2-partition topics. Clicks, orders' lookups, the shards' answers and the outputs cross between
the processes (pickled); the ledger and ClickHouse totals must be exactly what the input implies,
as with one process. Found missing by a benchmark once: a model pickled compactly by one process
could not be loaded by the other, which had never pickled that model itself."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from schemas.settings import Settings
from tests.dataflows.conftest import Tenant, Topics, produce
from tests.dataflows.test_recovery import assert_scenario_totals, scenario


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_two_processes_give_the_one_process_totals(
    stack_settings: Settings, tenant: Tenant, topics: Topics
) -> None:
    t = tenant
    produce(stack_settings, scenario(t, topics))
    factory = (
        f"dataflows.attribution.flow:build(tail=False, input_topics={topics.inputs!r}, "
        f"deadletter_topic={topics.deadletter!r})"
    )
    env = {
        **os.environ,
        "REFSTREAM_KAFKA_BOOTSTRAP": stack_settings.kafka_bootstrap,
        "REFSTREAM_POSTGRES_URL": stack_settings.postgres_url,
        "REFSTREAM_CLICKHOUSE_URL": stack_settings.clickhouse_url,
    }
    addresses = f"127.0.0.1:{free_port()};127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "-i", str(i), "-a", addresses, factory],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr.decode()[-3000:]

    assert_scenario_totals(stack_settings, t)
