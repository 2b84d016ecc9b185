"""The baseline of `bench.dataflow`: a bare bytewax Kafka→Kafka map (identity on the bytes).

    python -m bytewax.run "bench.dataflow_bare:build('127.0.0.1:9092', ('in',), 'out')"

`keyed=True` sends every message through a keyed step first (64 keys by the value's hash, a
count per key as state), so with several processes about half the messages cross to another
process, as the attribution flow's events cross to their click shard or tenant: bytewax's own
cost of an exchange, without the flow's code. `read_only=True` reads every message and writes
none (a sink that drops them): what reading the input through bytewax costs, the part of the bare
map that every flow of this design pays (the attribution flow writes ClickHouse rows, not a Kafka
message per event).

Bounded (`tail=False`): it stops at the end of the input topics, like the measured attribution
run, so both wall times include the same bytewax start-up and end-of-input handling.
"""

from __future__ import annotations

from collections.abc import Sequence

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from typing_extensions import override

from dataflows.kafka_input import kafka_input_config
from schemas.settings import Settings


def _same(
    message: KafkaSourceMessage[bytes | None, bytes | None],
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    return KafkaSinkMessage(key=message.key, value=message.value)


KEYS = 64


class _Drop(StatelessSinkPartition[object]):
    @override
    def write_batch(self, items: list[object]) -> None:
        pass


class DropSink(DynamicSink[object]):
    """Takes every item and keeps none."""

    @override
    def build(self, step_id: str, worker_index: int, worker_count: int) -> _Drop:
        return _Drop()


def _key(message: KafkaSourceMessage[bytes | None, bytes | None]) -> str:
    return str(hash(message.value) % KEYS)


def _count(
    seen: int | None, message: KafkaSourceMessage[bytes | None, bytes | None]
) -> tuple[int, KafkaSourceMessage[bytes | None, bytes | None]]:
    return (seen or 0) + 1, message


def _unkey(
    keyed: tuple[str, KafkaSourceMessage[bytes | None, bytes | None]],
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    return _same(keyed[1])


def build(
    bootstrap: str,
    topics: Sequence[str],
    out_topic: str,
    keyed: bool = False,
    read_only: bool = False,
) -> Dataflow:
    brokers = bootstrap.split(",")
    flow = Dataflow("bare_map")
    kafka = kop.input(
        "kafka_in", flow, brokers=brokers, topics=list(topics), tail=False,
        add_config=kafka_input_config(Settings()),  # as the flow's
    )  # fmt: skip
    if keyed:
        counted = op.stateful_map("count", op.key_on("key", kafka.oks, _key), _count)
        out = op.map("unkey", counted, _unkey)
    else:
        out = op.map("same", kafka.oks, _same)
    if read_only:
        op.output("drop", out, DropSink())
    else:
        kop.output("kafka_out", out, brokers=brokers, topic=out_topic)
    return flow
