"""Every table humanclap prints or writes, from two formatters.

* :func:`text_table`: fixed-width plain text for terminals (``evaluate``'s summary, the
  ``reproduce`` table, the demo's table). Each column says its width, alignment and the
  text that separates it from the column before, so a printed layout can be kept byte
  for byte (the demo's table is a stability promise, checked in tests/test_tables.py).
* :func:`markdown_table`: GitHub Markdown for report.md.

Cells are strings: callers format their numbers (:func:`fmt` for metrics), the table only
lays them out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "–"  # a value that is undefined or unknown (an en dash, never "nan" or "None")


@dataclass(frozen=True)
class Column:
    """One column of a :func:`text_table`."""

    header: str
    width: int | None = None  # None: the widest of the header and the column's cells
    align: str = ">"  # ">" right (numbers), "<" left (names)
    sep: str = "  "  # printed before the column (not before the first one)


def fmt(x: Any, digits: int = 3) -> str:
    """A metric value with ``digits`` decimals; :data:`MISSING` for None, NaN or inf."""
    return MISSING if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def text_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    *,
    title: Sequence[str] = (),
    rule: str = "",
    footer: Sequence[str] = (),
) -> str:
    """Lay out ``rows`` (lists of cell strings) under the ``columns``' headers.

    ``title`` lines come first, then the header, then (when ``rule`` is a character) a
    line of it as long as the header, the rows, and the ``footer`` lines. A row with
    fewer cells than columns ends with free text: its last cell is written as it is,
    unpadded, after that column's separator (e.g. why a model was not run).
    """
    widths = []
    for k, col in enumerate(columns):
        if col.width is not None:
            widths.append(col.width)
        else:  # free-text cells (the last of a short row) do not widen a column
            cells = [r[k] for r in rows if k < len(r) - (len(r) < len(columns))]
            widths.append(max([len(col.header), *map(len, cells)]))

    def line(cells: Sequence[str]) -> str:
        out = []
        for k, cell in enumerate(cells):
            col = columns[k]
            free = len(cells) < len(columns) and k == len(cells) - 1
            out.append(("" if k == 0 else col.sep) + (cell if free else f"{cell:{col.align}{widths[k]}}"))
        return "".join(out)

    head = line([c.header for c in columns])
    lines = [*title, head]
    if rule:
        lines.append(rule * len(head))
    lines += [line(r) for r in rows]
    lines += footer
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """The lines of a Markdown table; ``|`` inside a cell is escaped (labels may hold one)."""

    def esc(s: Any) -> str:
        return str(s).replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return lines
