"""Plain-text tables for the terminal output of every command."""

from __future__ import annotations

from typing import Sequence


def columns(header: Sequence[object], rows: Sequence[Sequence[object]]) -> list[str]:
    """Header and rows as lines of left-aligned columns, two spaces apart (the last column unpadded)."""
    table = [[str(cell) for cell in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    return ["  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]).rstrip() for row in table]
