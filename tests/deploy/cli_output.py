"""Reading what `refstream` prints: rows of its rich tables, and the demo's logins."""

from __future__ import annotations

from dataclasses import dataclass


def table_rows(output: str) -> list[list[str]]:
    """The cells of every rich table row in `output`."""
    rows = []
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells:
            rows.append(cells)
    return rows


def table_row(output: str, first_cell: str) -> list[str]:
    """The cells of the rich table row whose first cell is `first_cell`."""
    for cells in table_rows(output):
        if cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in:\n{output}")


@dataclass(frozen=True)
class PrintedLogin:
    company: str
    email: str
    password: str


def printed_login(output: str, role: str) -> PrintedLogin:
    """The login `refstream demo` printed for `role` (owner, manager)."""
    for cells in table_rows(output):
        if len(cells) == 4 and cells[3].startswith(f"{role} ("):
            return PrintedLogin(*cells[:3])
    raise AssertionError(f"no {role} login in:\n{output}")
