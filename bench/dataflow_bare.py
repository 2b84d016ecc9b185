"""The baseline of `bench.dataflow`: a bare bytewax Kafka→Kafka map (identity on the bytes).

    python -m bytewax.run "bench.dataflow_bare:build('127.0.0.1:9092', ('in',), 'out')"

Bounded (`tail=False`): it stops at the end of the input topics, like the measured attribution
run, so both wall times include the same bytewax start-up and end-of-input handling.
"""

from __future__ import annotations

from collections.abc import Sequence

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow


def _same(
    message: KafkaSourceMessage[bytes | None, bytes | None],
) -> KafkaSinkMessage[bytes | None, bytes | None]:
    return KafkaSinkMessage(key=message.key, value=message.value)


def build(bootstrap: str, topics: Sequence[str], out_topic: str) -> Dataflow:
    brokers = bootstrap.split(",")
    flow = Dataflow("bare_map")
    kafka = kop.input(
        "kafka_in", flow, brokers=brokers, topics=list(topics), tail=False,
        add_config={"log_level": "0"},
    )  # fmt: skip
    kop.output("kafka_out", op.map("same", kafka.oks, _same), brokers=brokers, topic=out_topic)
    return flow
