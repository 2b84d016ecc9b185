"""CPU time of running processes and threads, read from Linux's `/proc` (the benches measure
servers they did not start with `wait4`: the ClickHouse front, the ingress's workers)."""

from __future__ import annotations

import os
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_cpu_seconds(stat: str) -> float:
    """User + system CPU seconds in the text of a `/proc/<pid>[/task/<tid>]/stat` file."""
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """A process's CPU seconds so far (all its threads); 0.0 once it is gone."""
    try:
        return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text())
    except OSError:
        return 0.0
