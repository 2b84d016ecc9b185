"""`bench.profiling`: py-spy's raw stacks charged to the flow's stages (what
`bench.dataflow --profile` prints), on stacks written the way py-spy writes them."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profiling import RUNTIME, stage_of, summarize

ROOT = (
    "_run_module_as_main (<frozen runpy>:198);_run_code (<frozen runpy>:88);<module> (run.py:355)"
)


def frames(*tail: str) -> list[str]:
    return [*ROOT.split(";"), *tail]


@pytest.mark.parametrize(
    ("stack", "stage"),
    [
        # the deepest project frame names the stage, libraries below it included
        (frames("_StatefulLogic.on_batch (operators/__init__.py:1036)",
                "AttributionLogic.on_item (dataflows/stages/tenant.py:283)",
                "accrue (dataflows/commission/logic.py:440)",
                "trusted (schemas/compact.py:120)"), "models (schemas/, incl. pickling)"),
        (frames("AttributionLogic.on_item (dataflows/stages/tenant.py:283)",
                "accrue (dataflows/commission/logic.py:440)"),
         "commission (accrue, refunds, holds)"),
        (frames("_Partition.write_batch (dataflows/sinks/clickhouse.py:200)",
                "Client.insert (clickhouse_connect/driver/client.py:700)"),
         "ClickHouse sink (rows → inserts)"),
        # an import anywhere in the stack is start-up work, whoever asked for it
        (frames("_Partition.write_batch (dataflows/sinks/clickhouse.py:200)",
                "_find_and_load (<frozen importlib._bootstrap>:1176)"),
         "imports (start-up, incl. lazy ones)"),
        # no project frame: the library nearest the leaf, or bytewax's core below its entry
        (frames("_KafkaSourcePartition.next_batch (connectors/kafka/__init__.py:278)",
                "__init__ (<string>:10)"), "Kafka source/sink (bytewax connector)"),
        (frames(), RUNTIME),
        ([], "native threads (no Python frame)"),
    ],
)  # fmt: skip
def test_a_sample_is_charged_to_its_stage(stack: list[str], stage: str) -> None:
    assert stage_of(stack) == stage


def test_summary_shares_add_up_and_come_largest_first(tmp_path: Path) -> None:
    raw = tmp_path / "flow.raw"
    raw.write_text(
        f"{ROOT};ClickShard.on_item (dataflows/stages/clicks.py:108) 3\n"
        f"{ROOT} 1\n"
        f"{ROOT};parse_value (dataflows/attribution/flow.py:134);"
        "decode_envelope (dataflows/attribution/wire.py:90) 4\n"
        "not a sample line\n"
    )
    shares = summarize(raw)
    assert [stage for stage, _ in shares] == [
        "parse (envelopes, bodies)", "click shards", RUNTIME
    ]  # fmt: skip
    assert [round(share, 3) for _, share in shares] == [0.5, 0.375, 0.125]
