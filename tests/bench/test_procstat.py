"""`bench.procstat`: CPU seconds from `/proc/<pid>/stat`, whatever the command name holds."""

from __future__ import annotations

import os

from bench.procstat import CLK_TCK, cpu_seconds, stat_cpu_seconds


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() -> None:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    stat = f"42 (a) b (c)) S 1 42 42 0 -1 4194560 10 0 0 0 {3 * CLK_TCK} {CLK_TCK} 0 0 20 0 1"
    assert stat_cpu_seconds(stat) == 4.0


def test_this_process_has_used_cpu_and_a_gone_one_none() -> None:
    assert cpu_seconds(os.getpid()) > 0
    assert cpu_seconds(2**22 + 1) == 0.0  # above Linux's pid_max
