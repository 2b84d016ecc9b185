"""The flow's process never imports pandas or numpy: clickhouse-connect would on its first insert
(to check whether the rows are a DataFrame), 0.5 s of CPU at every start for nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_a_row_insert_after_skip_dataframe_libraries_imports_neither() -> None:
    # A fresh interpreter: the test process itself may have imported them already.
    code = textwrap.dedent(
        """
        import sys
        from clickhouse_connect.driver.insert import InsertContext
        from dataflows.attribution.flow import skip_dataframe_libraries
        skip_dataframe_libraries()
        from clickhouse_connect.datatypes.registry import get_from_name
        context = InsertContext("t", ["a"], [get_from_name("String")])
        context.data = [("x",)]  # what an insert does with its rows first
        print("pandas" in sys.modules, "numpy" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.split() == ["False", "False"]


def test_without_it_the_insert_imports_pandas() -> None:
    """The check above can fail: the same insert without the call imports pandas (installed
    here for chDB)."""
    code = textwrap.dedent(
        """
        import sys
        from clickhouse_connect.driver.insert import InsertContext
        from clickhouse_connect.datatypes.registry import get_from_name
        context = InsertContext("t", ["a"], [get_from_name("String")])
        context.data = [("x",)]
        print("pandas" in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=60)  # fmt: skip
    assert done.stdout.split() == ["True"]
