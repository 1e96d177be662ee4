"""Medians, p95s and the one table the benchmark prints."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

COLUMNS = ("measure", "n", "median", "p95", "unit", "vs reference")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def p95(values: Sequence[float]) -> float:
    """The 95th percentile, interpolated between the nearest samples."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=20, method="inclusive")[18]


@dataclass(frozen=True, slots=True)
class Row:
    measure: str
    n: int
    median: float | None
    p95: float | None
    unit: str
    reference: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.measure,
            str(self.n),
            _figure(self.median),
            _figure(self.p95),
            self.unit,
            self.reference or "-",
        )


def sample_row(measure: str, values: Sequence[float], unit: str, reference: str = "") -> Row:
    """A row of a sample's median and p95; an empty sample (a step that was skipped) shows n 0."""
    if not values:
        return Row(measure, 0, None, None, unit, reference)
    return Row(measure, len(values), median(values), p95(values), unit, reference)


def overhead(values: Sequence[float], floor: Sequence[float], unit: str = "ms") -> str:
    """Median of the paired differences to the floor (same round, so the same machine load)."""
    pairs = [v - f for v, f in zip(values, floor, strict=False)]
    if not pairs:
        return ""
    return f"{median(pairs):+.1f} {unit} over the floor (p95 {p95(pairs):+.1f})"


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def render(rows: Sequence[Row]) -> str:
    """A Markdown table, so that it can go into the README exactly as printed."""
    cells = [COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    aligned = [
        "| "
        + " | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        + " |"
        for line in cells
    ]
    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([aligned[0], rule, *aligned[1:]])
