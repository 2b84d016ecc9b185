"""What the Kafka consumers' fetch wait (`REFSTREAM_KAFKA_FETCH_WAIT_MS`) costs and gives, on a
private tansu broker (the local stack's).

    .venv/bin/python -m bench.kafka_fetch_wait [--waits 500 100 20] [--rate 100] [--idle-seconds 20]

For each wait: (1) **latency**, one consumer (librdkafka, `consume(1000, 0.001)` as bytewax's
`KafkaSource` polls) reading one partition while a producer writes `--rate` events/s, each
carrying its send time: p50/p99 of send → consumed; (2) **idle cost**, a bytewax flow reading the
dataflow's seven input topics of 4 partitions with nothing written (`dataflows.kafka_input`'s
settings at that wait): the CPU the flow and the broker use, in cores. Prints figures and the load
average; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.procstat import cpu_seconds
from deploy.stack import StatePaths, free_port, start_kafka, stop_pid

IDLE_TOPICS = tuple(f"idle{i}" for i in range(7))  # as many as the flow's input topics
IDLE_FLOW = "bench.kafka_fetch_wait:idle_flow()"


def idle_flow() -> object:
    """The idle reader: every `IDLE_TOPICS` partition through a KafkaSource, nothing written
    (`IDLE_BOOTSTRAP`, and the wait from the environment, as the flow reads it)."""
    import bytewax.operators as op
    from bytewax.connectors.kafka import operators as kop
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink

    from dataflows.kafka_input import kafka_input_config
    from schemas.settings import Settings

    flow = Dataflow("idle")
    kafka = kop.input(
        "in", flow, brokers=[os.environ["IDLE_BOOTSTRAP"]], topics=list(IDLE_TOPICS), tail=True,
        add_config=kafka_input_config(Settings()),
    )  # fmt: skip
    op.output("out", kafka.oks, TestingSink([]))
    return flow


def latency(bootstrap: str, topic: str, wait_ms: int, rate: float, count: int) -> list[float]:
    """Send → consumed, in ms, sorted, for `count` events at `rate` per second."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "fetch-wait", "fetch.wait.max.ms": wait_ms}
    )
    consumer.assign([TopicPartition(topic, 0, -1)])  # from the end
    seen: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            for message in consumer.consume(1000, 0.001):
                if message.error() is None and message.value():
                    seen.append(1000 * (time.time() - float(message.value() or b"0")))

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    time.sleep(2)  # the consumer is assigned and fetching
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    begin = time.monotonic()
    for n in range(count):
        if (pause := begin + n / rate - time.monotonic()) > 0:
            time.sleep(pause)
        producer.produce(topic, value=str(time.time()).encode())
        producer.poll(0)
    producer.flush(10)
    time.sleep(1 + wait_ms / 1000)
    stop.set()
    reader.join()
    consumer.close()
    return sorted(seen)


def idle_cores(
    bootstrap: str, broker_pid: int, wait_ms: int, seconds: float
) -> tuple[float, float]:
    """(the idle flow's cores, the broker's cores) over `seconds`, after a settling time."""
    env = {**os.environ, "IDLE_BOOTSTRAP": bootstrap, "REFSTREAM_KAFKA_FETCH_WAIT_MS": str(wait_ms)}
    flow = subprocess.Popen([sys.executable, "-m", "bytewax.run", IDLE_FLOW], env=env)
    try:
        time.sleep(8)  # start-up and partition assignment
        if flow.poll() is not None:
            raise SystemExit(f"the idle flow exited with {flow.returncode}")
        f0, b0 = cpu_seconds(flow.pid), cpu_seconds(broker_pid)
        time.sleep(seconds)
        f1, b1 = cpu_seconds(flow.pid), cpu_seconds(broker_pid)
    finally:
        flow.terminate()
        flow.wait(30)
    return (f1 - f0) / seconds, (b1 - b0) / seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--waits", type=int, nargs="+", default=[500, 100, 20])
    parser.add_argument("--rate", type=float, default=100.0, help="events/s")
    parser.add_argument("--events", type=int, default=500)
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    paths = StatePaths(Path(tempfile.mkdtemp(prefix="refstream-fetch-wait-")))
    port = free_port()
    broker = start_kafka("127.0.0.1", port, paths)
    bootstrap = f"127.0.0.1:{port}"
    load_start = os.getloadavg()
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        wanted = [NewTopic(t, 4, 1) for t in IDLE_TOPICS]
        wanted += [NewTopic(f"latency{w}", 1, 1) for w in args.waits]
        for future in admin.create_topics(wanted).values():
            future.result()
        print(f"tansu, one consumer of one partition at {args.rate:g} events/s ({args.events}"
              f" events); an idle flow over {len(IDLE_TOPICS)} topics x 4 partitions for"
              f" {args.idle_seconds:g} s")  # fmt: skip
        print(f"  {'fetch.wait.max.ms':>17}  {'p50 ms':>7}  {'p99 ms':>7}  {'idle flow':>10}"
              f"  {'idle broker':>11}  (cores)")  # fmt: skip
        for wait in args.waits:
            seen = latency(bootstrap, f"latency{wait}", wait, args.rate, args.events)
            if len(seen) < args.events:
                print(f"  note: {len(seen)} of {args.events} events consumed at {wait} ms")
            p50 = seen[len(seen) // 2] if seen else float("nan")
            p99 = seen[min(len(seen) - 1, int(0.99 * len(seen)))] if seen else float("nan")
            flow, broker_cores = idle_cores(bootstrap, broker, wait, args.idle_seconds)
            print(f"  {wait:>17}  {p50:7.0f}  {p99:7.0f}  {flow:10.3f}  {broker_cores:11.3f}")
    finally:
        stop_pid(broker)
    load = " ".join(f"{x:.2f}" for x in (*load_start, *os.getloadavg()))
    print(f"load average 1/5/15 min at start and end: {load}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
