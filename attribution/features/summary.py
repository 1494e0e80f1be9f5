"""What building a features file reports, whichever path built it (in memory or out of core)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BuildSummary:
    rows: int
    bad_rows: int
    engine: str
    seconds: float
    output: str

    def __str__(self) -> str:
        rate = self.rows / self.seconds if self.seconds else float("nan")
        bad = f", {self.bad_rows} bad rows quarantined" if self.bad_rows else ""
        return f"{self.rows} rows of features ({self.engine}) -> {self.output} in {self.seconds:.1f}s ({rate:,.0f} rows/s){bad}"
