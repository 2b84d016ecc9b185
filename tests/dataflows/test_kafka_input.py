"""The dataflow's Kafka consumers wait at the broker as `REFSTREAM_KAFKA_FETCH_WAIT_MS` says
(`dataflows.kafka_input.kafka_input_config`): tansu holds a fetch to its end, so this wait is
part of every event's latency on the local stack."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from bytewax.connectors.kafka import KafkaSource
from pydantic import ValidationError

from dataflows.attribution.flow import build
from dataflows.kafka_input import kafka_input_config
from schemas.settings import Settings
from tests.dataflows.conftest import Topics


def _sources(steps: list[Any]) -> Iterator[Any]:
    for step in steps:
        source = getattr(step, "source", None)
        if source is not None:
            yield source
        yield from _sources(step.substeps)


def test_the_flow_s_kafka_input_waits_as_the_setting_says(
    stack_settings: Settings, topics: Topics
) -> None:
    settings = stack_settings.model_copy(update={"kafka_fetch_wait_ms": 37})
    flow = build(
        settings, tail=False, input_topics=topics.inputs, deadletter_topic=topics.deadletter
    )
    kafka = [s for s in _sources(flow.substeps) if isinstance(s, KafkaSource)]
    assert len(kafka) == 1
    assert kafka[0]._add_config["fetch.wait.max.ms"] == "37"
    assert kafka[0]._add_config["log_level"] == "0"


def test_the_fetch_wait_is_read_from_the_environment_within_bounds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().kafka_fetch_wait_ms == 100  # librdkafka's own default is 500
    monkeypatch.setenv("REFSTREAM_KAFKA_FETCH_WAIT_MS", "20")
    assert kafka_input_config(Settings())["fetch.wait.max.ms"] == "20"
    for refused in ("0", "501", "soon"):
        monkeypatch.setenv("REFSTREAM_KAFKA_FETCH_WAIT_MS", refused)
        with pytest.raises(ValidationError):
            Settings()
